"""The training base every stage (pretrain, finetune) builds on.

``config`` (data and trainer sections), ``optim`` (AdamW + OneCycle), ``data`` (shards -> batches),
``task`` (the LightningModule base: EMA, optimiser, exact resume), ``trainer`` (strategy, callbacks,
loggers, start-or-resume) and ``cli`` (common flags and exits). A stage adds its config, its task
subclass and a small CLI.
"""
