"""The model stage: HookedSpiritLM and the hook names it serves."""

from spiritlens.model import hook_names

from spiritlens.model.hooked import HookedSpiritLM

__all__ = ["HookedSpiritLM", "hook_names"]
