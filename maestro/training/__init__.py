"""Training utilities shared by the pretrain and finetune stages."""
