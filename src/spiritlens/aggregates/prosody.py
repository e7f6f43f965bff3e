"""Prosody controls over prompts: what each control does to p(answer), and each stream's total effect.

One *control record* per (prompt, control) (written by ``spiritlens experiment --expressive``,
``expressive/controls/<control>/<known_id>.json``): ``known_id``, ``control``, ``answer_id`` (the
answer traced: the original prompt's judged answer, the same under every control), ``p_answer`` (its
probability in the controlled prompt's clean run, softmax over the full vocabulary at the last position,
ROME's metric), ``top1_id`` (the controlled prompt's greedy first text token), and ``stream_low``
(``{stream: p(answer) with only the subject's positions of that stream noised, or None}``,
:func:`spiritlens.traces.streams.stream_low_scores`).

:func:`control_effects` averages them per control over prompts, each mean with the one 95% CI
(:mod:`spiritlens.aggregates.ci`, units = prompts):

- ``p_answer``: mean p(answer) under the control;
- ``delta``: the paired change ``p_control - p_original`` of the same prompt, over the prompts that have
  both (a control that does nothing has delta 0 with width 0);
- ``answer_changed``: how many prompts' greedy first token is no longer the answer;
- ``stream_te``: per stream, the total effect of noising the subject's positions of that stream alone,
  ``p_answer - stream_low[stream]``, over the prompts where the subject has such positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from spiritlens.aggregates.ci import mean_ci
from spiritlens.traces.streams import STREAMS
from spiritlens.units.controls import CONTROLS

RECORD_FIELDS = ("known_id", "control", "answer_id", "p_answer", "top1_id", "stream_low")


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` prompts and its 95% half-width (NaN for n < 2; mean NaN for n = 0)."""

    mean: float
    ci: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> "Estimate":
        values = [float(v) for v in values]
        mean, ci, n = mean_ci(np.asarray(values, dtype=np.float64).reshape(-1)) if values else (math.nan, math.nan, 0)
        return cls(float(mean), float(ci), int(n))

    def excludes_zero(self) -> bool:
        """Whether the 95% CI lies on one side of 0 (needs n >= 2 and a finite width)."""
        return self.n >= 2 and math.isfinite(self.ci) and abs(self.mean) > self.ci

    def text(self, digits: int = 3) -> str:
        """``"0.123 ± 0.045"``, ``"0.123 (n = 1)"`` or ``"–"``."""
        if self.n == 0 or not math.isfinite(self.mean):
            return "–"
        if not math.isfinite(self.ci):
            return f"{self.mean:.{digits}f} (n = {self.n})"
        return f"{self.mean:.{digits}f} ± {self.ci:.{digits}f}"

    def to_json(self) -> dict:
        return {"mean": None if math.isnan(self.mean) else self.mean,
                "ci95": None if math.isnan(self.ci) else self.ci, "n": self.n}


@dataclass(frozen=True)
class ControlEffect:
    """One control over prompts (module docstring)."""

    control: str
    prompts: int
    p_answer: Estimate
    delta: Estimate
    answer_changed: int
    stream_te: dict[str, Estimate] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"control": self.control, "prompts": self.prompts, "p_answer": self.p_answer.to_json(),
                "delta": self.delta.to_json(), "answer_changed": self.answer_changed,
                "stream_te": {s: e.to_json() for s, e in self.stream_te.items()}}


def check_record(record: Mapping, where: str = "control record") -> None:
    """ValueError naming ``where`` unless ``record`` has the fields, a known control, a probability in
    [0, 1] and, per stream, a probability or None."""
    missing = [k for k in RECORD_FIELDS if k not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    if record["control"] not in CONTROLS:
        raise ValueError(f"{where}: unknown control {record['control']!r}")
    values = [record["p_answer"]] + [record["stream_low"].get(s) for s in STREAMS
                                     if isinstance(record["stream_low"], Mapping)]
    if not isinstance(record["stream_low"], Mapping) or any(
            v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1)
            for v in values) or record["p_answer"] is None:
        raise ValueError(f"{where}: p_answer and stream_low must be probabilities in [0, 1]")


def control_effects(records: Iterable[Mapping]) -> dict[str, ControlEffect]:
    """Per control present (in :data:`~spiritlens.units.controls.CONTROLS` order), its
    :class:`ControlEffect` over the prompts of ``records`` (module docstring). Raises ValueError for a
    malformed record or two records of one (prompt, control)."""
    by: dict[str, dict] = {}
    for record in records:
        check_record(record, f"control record {record.get('control')}/{record.get('known_id')}")
        prompts = by.setdefault(record["control"], {})
        if record["known_id"] in prompts:
            raise ValueError(f"two control records of {record['control']}/{record['known_id']}")
        prompts[record["known_id"]] = record
    original = by.get("original", {})
    effects = {}
    for control in CONTROLS:
        prompts = by.get(control)
        if not prompts:
            continue
        items = list(prompts.values())
        paired = [r["p_answer"] - original[k]["p_answer"] for k, r in prompts.items() if k in original]
        effects[control] = ControlEffect(
            control=control, prompts=len(items),
            p_answer=Estimate.of(r["p_answer"] for r in items),
            delta=Estimate.of(paired),
            answer_changed=sum(int(r["top1_id"]) != int(r["answer_id"]) for r in items),
            stream_te={s: Estimate.of(r["p_answer"] - r["stream_low"][s] for r in items
                                      if r["stream_low"].get(s) is not None) for s in STREAMS})
    return effects


__all__ = ["ControlEffect", "Estimate", "RECORD_FIELDS", "check_record", "control_effects"]
