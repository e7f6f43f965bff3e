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

import io
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from spiritlens._io import (  # noqa: F401 - content_checksum, checksum_problem: re-exported
    CHECKSUM_FIELD,
    checksum_problem,
    content_checksum,
    loads_json,
    sha256_file,
    write_atomic,
    write_json_atomic,
)
from spiritlens.runkey import RUN_KEY_FIELD, UntrustedFile, stamp
from spiritlens.runkey import verify as check_key
from spiritlens.tokens.trace_prompt import Row

RESULT_VERSION = 1
ANSWER_FIELDS = ("answer_rule", "target", "target_ids", "target_tokens")


@dataclass
class TraceResult:
    """Per-prompt trace: ROME's fields (``scores`` [rows, layers] of p(answer), ``low_score``, ``high_score``,
    ``answer``, ``kind``, ``window``) plus rows for position groups; the JSON is listed in the README's
    "JSON outputs"."""

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
        """A JSON-serialisable dict with the contract fields (README, "JSON outputs")."""
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

    def validate(self) -> None:
        """ValueError (one line) unless ``high_score`` and ``low_score`` are finite probabilities in
        [0, 1] and so is every score of an exact result (a NaN sigma or NaN weights give NaN scores),
        except the cells a ``cells=`` trace left untraced (NaN by design, the traced ones listed in
        ``extra["cells"]``). Attribution estimates are first-order and may leave [0, 1]; they must be
        finite. The shapes must agree: ``scores`` ``[len(rows), n_layers]``, one token per input id, the
        subject range and every row's positions inside the prompt, the subject rows inside the rows.
        Checked before saving and after loading."""
        self._validate_shapes()
        for name, value in (("high_score", self.high_score), ("low_score", self.low_score)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"trace result{' ' + self.name if self.name else ''}: {name} {value!r} is not a "
                                 "probability in [0, 1]")
        from spiritlens.traces.methods import method as trace_method

        estimate = trace_method(self.method).estimate
        scores = np.asarray(self.scores, dtype=np.float64)
        traced = np.ones(scores.shape, dtype=bool)
        if not estimate and self.extra.get("cells") is not None:
            traced[:] = False
            for row, layer in self.extra["cells"]:
                if 0 <= row < scores.shape[0] and 0 <= layer < scores.shape[1]:
                    traced[row, layer] = True
        if not estimate:
            bad = traced & (~np.isfinite(scores) | (scores < 0) | (scores > 1))
            what = "are not probabilities in [0, 1]"
        else:
            bad = ~np.isfinite(scores)
            what = f"are not finite {self.method} estimates"
        if bad.any():
            r, l = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"trace result{' ' + self.name if self.name else ''}: {int(bad.sum())} score(s) {what} "
                             f"(first: row {r}, layer {l}: {float(scores[r, l])!r})")

    def _validate_shapes(self) -> None:
        where = f"trace result{' ' + self.name if self.name else ''}"
        scores, n = np.asarray(self.scores), len(self.input_ids)
        problem = None
        if scores.ndim != 2 or scores.shape[0] != len(self.rows):
            problem = f"scores of shape {list(scores.shape)} for {len(self.rows)} rows"
        elif len(self.tokens) != n:
            problem = f"{len(self.tokens)} tokens for {n} input ids"
        elif not 0 <= self.subject_range[0] <= self.subject_range[1] <= n:
            problem = f"subject_range {list(self.subject_range)} outside the prompt's {n} positions"
        elif not 0 <= self.subject_rows[0] <= self.subject_rows[1] <= len(self.rows):
            problem = f"subject_rows {list(self.subject_rows)} outside its {len(self.rows)} rows"
        else:
            outside = [p for row in self.rows for p in row.positions if not 0 <= p < n]
            if outside:
                problem = f"row position {outside[0]} outside the prompt's {n} positions"
        if problem:
            raise ValueError(f"{where}: {problem}")

    def save(self, path: str | os.PathLike, *, run_key: dict | None = None) -> Path:
        """Write ``path`` (JSON) and a sibling ``.npz`` with the arrays, each atomically
        (:func:`spiritlens._io.write_atomic`), after :meth:`validate` (nothing is written for an invalid
        result). The JSON records the ``.npz``'s SHA-256 (``npz_sha256``), the ``run_key`` it was
        computed under (:mod:`spiritlens.runkey`; when given) and a ``checksum`` over all of it, so
        the checksum covers the arrays too; :meth:`load` checks them."""
        self.validate()
        path = Path(path)
        npz = path.with_suffix(".npz")
        arrays = io.BytesIO()
        np.savez(arrays, scores=self.scores, input_ids=np.asarray(self.input_ids, dtype=np.int64))
        write_atomic(npz, arrays.getvalue())
        data = self.to_json()
        data["npz_sha256"] = sha256_file(npz)
        write_json_atomic(path, stamp(data, run_key if run_key is not None else data.get(RUN_KEY_FIELD)))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, verify: bool = True, run_key: dict | None = None) -> "TraceResult":
        """Read a result written by :meth:`save`.

        With ``verify`` (default) the file must be as it was written (:func:`result_problem`): its
        ``checksum`` holds, its ``.npz`` matches ``npz_sha256`` and holds the JSON's scores and ids.
        With ``run_key``, the recorded run key must equal it. Any of these failing is a
        :class:`~spiritlens.runkey.UntrustedFile` (a ValueError) naming the file and why; a result of
        invalid probabilities or inconsistent shapes (:meth:`validate`) is a ValueError too."""
        path = Path(path)
        try:
            data = loads_json(path.read_text(encoding="utf-8"), "the file")  # nesting bounded before parsing
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise UntrustedFile("trace result", path, f"unreadable ({error})") from None
        if not isinstance(data, dict):
            raise UntrustedFile("trace result", path, "not a JSON object")
        if verify:
            problem = result_problem(path, data)
            if problem:
                raise UntrustedFile("trace result", path, problem)
            if run_key is not None:
                check_key(data, run_key, what="trace result", path=path)
        try:
            result = cls.from_json({k: v for k, v in data.items() if k not in (CHECKSUM_FIELD, "npz_sha256")})
            result.validate()
        except (ValueError, TypeError) as error:
            raise UntrustedFile("trace result", path, f"invalid ({error})") from None
        return result

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



def result_problem(path: str | os.PathLike, document: dict) -> str | None:
    """Why a trace result file is not as :meth:`TraceResult.save` wrote it, or None: no checksum or a
    mismatch (:func:`spiritlens._io.checksum_problem`), or, when it records ``npz_sha256``, a missing or
    different ``.npz``, or one whose scores or ids differ from the JSON's (a number edited and the
    checksum recomputed). The one check behind :meth:`TraceResult.load` and ``spiritlens aggregate``."""
    problem = checksum_problem(document)
    if problem or "npz_sha256" not in document:
        return problem
    npz = Path(path).with_suffix(".npz")
    if not npz.is_file() or sha256_file(npz) != document["npz_sha256"]:
        return f"its arrays file {npz.name} is missing or does not match npz_sha256"
    try:
        with np.load(npz, allow_pickle=False) as arrays:
            scores, ids = arrays["scores"], arrays["input_ids"]
        same = (np.array_equal(np.asarray(document.get("scores"), dtype=np.float64), scores, equal_nan=True)
                and np.array_equal(np.asarray(document.get("input_ids"), dtype=np.int64), ids))
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its arrays file {npz.name} is unreadable ({error})"
    if not same:
        return f"its scores or input_ids differ from its arrays file {npz.name} (edited after it was written)"
    return None
