"""The text-only Llama-2 backbone SpiritLM was built from, as a model family (:mod:`.family`)."""
