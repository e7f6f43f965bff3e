"""spiritlens: TransformerLens-style interpretability for SpiritLM, text and speech.

Public API: :class:`HookedSpiritLM` (SpiritLM) and :class:`HookedSpeechLM` (any supported family: SpiritLM,
its text-only Llama-2 backbone, ...; :mod:`spiritlens.models`), :func:`trace`, :func:`trace_kinds` and
:class:`TraceResult` (causal tracing), :class:`SpeechPrompt` (a spoken prompt, aligned, to trace).
Heavy imports happen on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["HookedSpeechLM", "HookedSpiritLM", "SpeechPrompt", "trace", "trace_kinds", "TraceResult", "__version__"]


def __getattr__(name: str):
    if name in ("HookedSpiritLM", "HookedSpeechLM"):
        from spiritlens import model

        return getattr(model, name)
    if name in ("trace", "trace_kinds", "TraceResult"):
        from spiritlens import traces

        return getattr(traces, name)
    if name == "SpeechPrompt":
        from spiritlens.align.speech_prompt import SpeechPrompt

        return SpeechPrompt
    raise AttributeError(f"module 'spiritlens' has no attribute {name!r}")
