"""Causal tracing (ROME semantics): noise, restoration, results."""

from spiritlens.traces.answer import (
    ANSWER_RULES,
    TARGET_RULES,
    AnswerRule,
    resolve_answer,
    sequence_probability,
)
from spiritlens.traces.tracer import KINDS, Tracer, trace, trace_kinds
from spiritlens.tokens.trace_prompt import TracePrompt, prepare_prompt
from spiritlens.traces.window import default_window, layer_window
from spiritlens.traces.noise import NoiseSpec, embedding_std, parse_noise, subject_sigma
from spiritlens.tokens.trace_prompt import Row
from spiritlens.traces.result import TraceResult
from spiritlens.traces.methods import METHODS, TRACE_METHODS, TraceMethod

__all__ = [
    "ANSWER_RULES", "AnswerRule", "TARGET_RULES", "resolve_answer", "sequence_probability",
    "KINDS", "METHODS", "TRACE_METHODS", "TraceMethod", "NoiseSpec", "Row", "TracePrompt", "TraceResult", "Tracer", "default_window", "embedding_std",
    "layer_window",
    "parse_noise", "prepare_prompt", "subject_sigma", "trace", "trace_kinds",
]
