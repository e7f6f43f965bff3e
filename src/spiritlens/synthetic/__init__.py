"""Synthetic SpiritLMs: tiny random checkpoints in SpiritLM's exact formats, and the toy SpiritLM trained on Known facts."""
