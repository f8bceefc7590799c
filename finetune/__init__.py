"""Fine-tuning stage: UPerFuse, MAESTRO and linear-probe heads on the pretrained encoder, and the
supervised Swin-UTAE baseline, for land cover (LC) and crop type (LPIS); CLI ``finetune``."""
