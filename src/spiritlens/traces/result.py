"""TraceResult: one prompt's causal trace for one kind, with its baselines and settings.

``scores[r, l]`` is the probability of the answer (mean over the corrupted samples; with
``answer_rule="target_sequence"`` the whole target's teacher-forced probability, mean of the rows'
products) when row ``r`` (a prompt position, or a group of positions restored together) is
restored at layer ``l``.
Effects come later: total effect = high_score - low_score, indirect effect = scores - low_score.

How the answer was chosen is recorded with it (:mod:`spiritlens.traces.answer`): ``answer_rule``
(``"top1_text"``, ``"top1_speech"``, ``"top1_any"``, ``"id"``, ``"target_first_token"``,
``"target_sequence"``; ``""`` in results written before these fields existed), and for a target
string ``target`` (as tokenised after the prompt), ``target_ids`` and ``target_tokens``.

``method`` says how the scores were computed: ``"exact"`` restored runs (the default, and what results
written before the field existed hold), or attribution patching's first-order estimates
(``"attribution"``, ``"attribution_qk"``; :mod:`spiritlens.traces.attribution`). A result traced for
chosen cells only (``trace(..., cells=...)``) is exact there and NaN elsewhere, and lists them in
``cells``; a screen checked by exact restoration carries ``verification``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from spiritlens._io import write_json_atomic
from spiritlens.tokens.trace_prompt import Row

RESULT_VERSION = 1
ANSWER_FIELDS = ("answer_rule", "target", "target_ids", "target_tokens")


@dataclass
class TraceResult:
    """Per-prompt trace (CAUSAL_TRACING.md §4 fields, plus rows for position groups)."""

    input_ids: list[int]
    tokens: list[str]
    subject_range: tuple[int, int]
    answer_id: int
    answer: str
    high_score: float
    low_score: float
    scores: np.ndarray  # [R, L] float64 probabilities
    kind: str
    window: int
    noise: float
    noise_rule: str
    sigma: float | None
    samples: int
    seed: int
    replace: bool = False
    low_score_follows_replace: bool = False
    rows: list[Row] = field(default_factory=list)
    subject_rows: tuple[int, int] | None = None
    ignored_rows: list[int] = field(default_factory=list)
    correct_prediction: bool | None = None
    modality: str = "text"
    prompt: str = ""
    subject: str = ""
    name: str = ""
    extra: dict = field(default_factory=dict)
    answer_rule: str = ""
    target: str | None = None
    target_ids: list[int] = field(default_factory=list)
    target_tokens: list[str] = field(default_factory=list)
    method: str = "exact"  # "exact" restored runs, or a first-order estimate (spiritlens.traces.attribution)

    def __post_init__(self):
        for key in ANSWER_FIELDS:  # the engine records them with the prompt's extra fields
            if key in self.extra:
                setattr(self, key, self.extra.pop(key))
        self.target_ids = [int(i) for i in self.target_ids]
        self.target_tokens = list(self.target_tokens)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.subject_range = tuple(int(x) for x in self.subject_range)
        if not self.rows:
            self.rows = [Row(t, [i]) for i, t in enumerate(self.tokens)]
        self.rows = [r if isinstance(r, Row) else Row(**r) for r in self.rows]
        if self.subject_rows is None:
            self.subject_rows = self.subject_range
        self.subject_rows = tuple(int(x) for x in self.subject_rows)
        if self.scores.shape[0] != len(self.rows):
            raise ValueError(f"scores has {self.scores.shape[0]} rows but {len(self.rows)} row labels")

    @property
    def n_layers(self) -> int:
        return int(self.scores.shape[1])

    @property
    def total_effect(self) -> float:
        return self.high_score - self.low_score

    @property
    def indirect_effects(self) -> np.ndarray:
        """``[R, L]`` scores minus low_score."""
        return self.scores - self.low_score

    def to_json(self) -> dict:
        """A JSON-serialisable dict with the contract fields (DESIGN.md, trace JSON)."""
        data = asdict(self)
        data["scores"] = self.scores.tolist()
        data["subject_range"] = list(self.subject_range)
        data["subject_rows"] = list(self.subject_rows)
        data["n_layers"] = self.n_layers
        data["version"] = RESULT_VERSION
        extra = data.pop("extra")
        data.update(extra)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "TraceResult":
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["extra"] = {k: v for k, v in data.items()
                           if k not in known and k not in ("n_layers", "version")}
        return cls(**kwargs)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (JSON) and a sibling ``.npz`` with the arrays, each atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        npz = path.with_suffix(".npz")
        tmp_npz = npz.with_name(npz.name + ".tmp.npz")
        np.savez(tmp_npz, scores=self.scores, input_ids=np.asarray(self.input_ids, dtype=np.int64))
        os.replace(tmp_npz, npz)
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TraceResult":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"trace result {str(path)!r} is unreadable: {error}") from None
        return cls.from_json(data)

    def grouped(self, groups: list[Row], *, subject_rows: tuple[int, int],
                ignored_rows: list[int] | None = None) -> "TraceResult":
        """Per-position rows averaged by group (mean over each group's positions) -> a new result."""
        by_position = {row.positions[0]: i for i, row in enumerate(self.rows) if len(row.positions) == 1}
        missing = [p for g in groups for p in g.positions if p not in by_position]
        if missing:
            raise ValueError(f"positions {missing[:5]} are not single-position rows of this result")
        scores = np.stack([self.scores[[by_position[p] for p in g.positions]].mean(axis=0) for g in groups])
        data = self.to_json()
        data.update(scores=scores.tolist(), rows=[asdict(g) for g in groups], subject_rows=list(subject_rows),
                    ignored_rows=list(ignored_rows or []), row_mode="mean_of_positions")
        return TraceResult.from_json(data)

