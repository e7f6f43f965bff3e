"""spiritlens: TransformerLens-style interpretability for SpiritLM, text and speech."""

__version__ = "0.1.0"
