"""Causal tracing (ROME semantics): noise, restoration, results."""

from .answer import ANSWER_RULES, TARGET_RULES, AnswerRule, resolve_answer, sequence_probability
from .engine import KINDS, TracePrompt, Tracer, default_window, layer_window, prepare_prompt, trace, trace_kinds
from .noise import NoiseSpec, embedding_std, parse_noise, subject_sigma
from .result import Row, TraceResult

__all__ = [
    "ANSWER_RULES", "AnswerRule", "TARGET_RULES", "resolve_answer", "sequence_probability",
    "KINDS", "NoiseSpec", "Row", "TracePrompt", "TraceResult", "Tracer", "default_window", "embedding_std",
    "layer_window",
    "parse_noise", "prepare_prompt", "subject_sigma", "trace", "trace_kinds",
]
