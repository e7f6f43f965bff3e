"""Causal tracing (ROME semantics): noise, restoration, results."""

from .engine import KINDS, TracePrompt, Tracer, layer_window, prepare_prompt, trace, trace_kinds
from .noise import NoiseSpec, embedding_std, parse_noise, subject_sigma
from .result import Row, TraceResult

__all__ = [
    "KINDS", "NoiseSpec", "Row", "TracePrompt", "TraceResult", "Tracer", "embedding_std", "layer_window",
    "parse_noise", "prepare_prompt", "subject_sigma", "trace", "trace_kinds",
]
