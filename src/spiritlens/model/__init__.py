"""The model stage: HookedSpiritLM and the hook names it serves."""

from . import hook_names
from .hooked import HookedSpiritLM

__all__ = ["HookedSpiritLM", "hook_names"]
