"""The model stage: HookedSpeechLM (any supported family) and HookedSpiritLM, and the hook names they serve."""

from spiritlens.model import hook_names

from spiritlens.model.hooked import HookedSpeechLM, HookedSpiritLM

__all__ = ["HookedSpeechLM", "HookedSpiritLM", "hook_names"]
