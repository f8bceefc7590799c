"""MAESTRO suite: multimodal masked autoencoders for FLAIR-HUB Earth observation data."""

__version__ = "0.1.0"
