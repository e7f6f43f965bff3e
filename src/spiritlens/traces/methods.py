"""How a trace's cells are computed: the registry the CLI, the experiment's config, result validation,
figure titles and the report read.

- ``exact``: restored runs (ROME's causal tracing; :mod:`spiritlens.traces.tracer`), scores are
  probabilities;
- ``attribution``: attribution patching's first-order estimate of every cell from one backward pass
  (AtP; :mod:`spiritlens.traces.attribution`), not a probability: it may leave [0, 1];
- ``attribution_qk``: AtP with AtP*'s QK fix.

A new method is one module with a function ``(tracer, kind, rows, *, window, cells) -> [R, L]`` and one
:class:`TraceMethod` line in :data:`METHODS`. This module imports nothing heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class TraceMethod:
    """A tracing method: ``name`` (recorded in results as ``method``), ``label`` (figure titles and the
    report), ``value_label`` (colour bars and axes), ``estimate`` (True: first-order estimates, not
    probabilities; the experiment may use it as a screen), ``summary`` (help text) and ``compute``
    (``"module:function"``, imported on first use)."""

    name: str
    label: str
    value_label: str
    estimate: bool
    summary: str
    compute: str

    def function(self) -> Callable:
        module, name = self.compute.split(":")
        return getattr(importlib.import_module(module), name)


METHODS: dict[str, TraceMethod] = {m.name: m for m in (
    TraceMethod("exact", "causal trace (exact restoration)", "p(answer) with the state restored", False,
                "restored runs: every cell's probability, exactly (ROME)", "spiritlens.traces.tracer:exact_scores"),
    TraceMethod("attribution", "attribution estimate (AtP)", "estimated p(answer) (AtP, first order)", True,
                "attribution patching: every cell estimated to first order from one backward pass (AtP)",
                "spiritlens.traces.attribution:atp_scores"),
    TraceMethod("attribution_qk", "attribution estimate (AtP with AtP*'s QK fix)",
                "estimated p(answer) (AtP + QK fix)", True,
                "AtP with AtP*'s QK fix (attention patterns recomputed exactly one block after the restored state)",
                "spiritlens.traces.attribution:atp_qk_scores"),
)}
TRACE_METHODS: tuple[str, ...] = tuple(METHODS)
# The experiment's screen before exact verification: none, or an estimating method.
SCREENS: tuple[str, ...] = ("none",) + tuple(name for name, m in METHODS.items() if m.estimate)


def method(name: str) -> TraceMethod:
    """The registered method ``name``; ValueError listing the methods otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; use one of {', '.join(METHODS)}")
    return METHODS[name]


def method_label(name: str) -> str:
    """The figure/report label of a result's ``method`` (unknown names shown as they are)."""
    return METHODS[name].label if name in METHODS else str(name)


def value_label(name: str) -> str:
    """The colour-bar/axis label of a result's ``method`` scores."""
    return METHODS[name].value_label if name in METHODS else "score"


def estimate_note(names) -> str:
    """``""`` when every name is an exact method, else what figures and reports must say of the values:
    ``"attribution estimate (AtP), not exact restoration"`` (the estimating methods among ``names``)."""
    estimates = sorted({n for n in names if n in METHODS and METHODS[n].estimate} | {n for n in names if n not in METHODS})
    if not estimates:
        return ""
    return " and ".join(method_label(n) for n in estimates) + ", not exact restoration"


def methods_help() -> str:
    """One line per method, for ``--help``."""
    return "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values())
