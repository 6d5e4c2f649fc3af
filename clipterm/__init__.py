"""clipterm: watch a CLIP model paint its own picture of a prompt."""

__version__ = "0.1.0"
