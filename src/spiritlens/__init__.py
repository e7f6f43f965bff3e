"""spiritlens: TransformerLens-style interpretability for SpiritLM, text and speech.

Public API: :class:`HookedSpiritLM` (the model), :func:`trace` and :class:`TraceResult`
(causal tracing). Heavy imports happen on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["HookedSpiritLM", "trace", "TraceResult", "__version__"]


def __getattr__(name: str):
    if name == "HookedSpiritLM":
        from spiritlens.model import HookedSpiritLM

        return HookedSpiritLM
    if name in ("trace", "TraceResult"):
        from spiritlens import traces

        return getattr(traces, name)
    raise AttributeError(f"module 'spiritlens' has no attribute {name!r}")
