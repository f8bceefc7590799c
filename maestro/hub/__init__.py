"""Publishing and loading weights: model folders, the Hugging Face Hub, training checkpoints."""
