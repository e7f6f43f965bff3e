"""Average indirect effects (AIE) over prompts, by token category, as in ROME's rollup.

One *result* is the JSON dict the tracing engine writes per prompt and kind (the README's "JSON outputs"):
``scores`` is ``[R, L]`` raw probabilities p(answer), one row per ROW (a token position, or for
speech a group of positions listed in ``rows``) and one column per layer. The subject is
``subject_rows = [b, e)`` in row space (half-open; for text rows it equals ``subject_range``).

Categories (the paper's six, after ROME), on rows:

=================  ==============  ========================
category           rows            per prompt
=================  ==============  ========================
first_subject      b               1
middle_subject     b+1 .. e-2      e-b-2 (may be 0), pooled
last_subject       e-1             1
first_subsequent   e               1
further            e+1 .. R-2      R-e-2 (may be 0), pooled
last               R-1             1
=================  ==============  ========================

Rows before ``b`` (BOS, the modality marker, leading words) and the rows in ``ignored_rows``
(e.g. speech tokens in silence) belong to no category. A 1-token subject puts the same row in
first_subject and last_subject; ``e = R-1`` puts the same row in first_subsequent and last;
``e = R`` (the subject ends the prompt) is an error, where ROME raised IndexError.

Groups (:func:`aggregate_by_modality`): results are aggregated per prompt modality ("text" = T→T,
"speech" = S→T), except the text-only backbone's (``model_role: "backbone"``, the paper's Figure 2 baseline
row), which form the group ``"backbone"`` and are never pooled with SpiritLM's.

For one kind, over the kept prompts P (``correct_prediction`` not False; null or absent counts as
kept, as ROME's notebook does), two averages:

- ROME's rollup (``aie``, ``aie.json``'s ``aie`` and the CSV tables): ``mean_c[l]`` is the mean of
  row ``l`` over the multiset of all category-c rows of all of P, so middle and further are
  *token-weighted* (a prompt with 4 middle rows counts 4 times); ``AIE_c = mean_c - mean(low_score)``;
  ``ATE = mean(high) - mean(low)``. A category only some prompts have inherits the difference
  between their corrupted scores and everyone's (``row_ie`` removes that, still token-weighted).
- The per-prompt AIE (``effect``, drawn by every figure and stated by every summary), with its 95%
  CI (``ci``): each prompt's effect in category c at layer l is the mean over its category-c rows
  of ``IE = scores[r, l] - low_score`` against **its own** corrupted score, an IE within the
  prompt's numerical floor counting as 0; ``effect_c`` is the mean of these per-prompt effects over
  the ``prompt_counts[c]`` prompts that have category-c rows, and ``ci`` the half-width of
  :mod:`spiritlens.aggregates.ci` (``t_{0.975,n-1} * s / sqrt(n)`` over those per-prompt effects).
  For the one-row categories of prompts that all have them it equals ROME's AIE.

The numerical floor: scores are float32 softmax probabilities, so a restored cell and the
corrupted run that compute the same thing by different paths differ by rounding (up to about 60
float32 ulps of p measured on the tiny model, noise 1e-9). An IE with ``|IE| <=``
``FLOOR_ULPS * eps(float32) * p_max`` (:func:`numerical_floor`: 1024 ulps of the prompt's largest
probability, 1.2e-4 * p_max) is no effect; a kind whose every IE is within it has ``no_effect`` and
its summaries say "no effect" instead of naming a peak. An empty category has NaN means and a row
count of 0 (``null`` in JSON).

**Per stream** (SpiritLM Expressive, a result traced with ``row_mode="streams"``,
:mod:`spiritlens.traces.streams`): the subject's rows are split into its HuBERT, pitch and style
positions, and the three subject categories split with them (:data:`STREAM_CATEGORIES`, labels
"First subject token / HuBERT", ..., "Last subject token / style"): a subject row of stream s from the
subject's text token j (``row_subject_token``; the subject has n text tokens with speech) is in
``first_subject/s`` when j = 0, ``last_subject/s`` when j = n - 1 (both for a one-token subject) and
``middle_subject/s`` otherwise; silence rows inside the subject are in none. ``first_subsequent``,
``further`` and ``last`` are the rows after the subject, unsplit, as above. :func:`aggregate_streams`
averages such results with the same per-prompt AIE and CI; :func:`aggregate` refuses them (their first
subject row is one stream of a token, not the token), and :func:`load_results` leaves them out unless
asked for them.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spiritlens._io import loads_json
from spiritlens.aggregates.ci import mean_ci
from spiritlens.terms import KINDS, MODALITIES, MODALITY_LABELS  # noqa: F401 (re-exported)
from spiritlens.traces.methods import estimate_note
from spiritlens.traces.result import result_problem
from spiritlens.traces.streams import STREAM_LABELS, STREAM_ROW_MODE, STREAMS

CATEGORIES: tuple[str, ...] = (
    "first_subject",
    "middle_subject",
    "last_subject",
    "first_subsequent",
    "further",
    "last",
)
CATEGORY_LABELS: dict[str, str] = {
    "first_subject": "First subject token",
    "middle_subject": "Middle subject tokens",
    "last_subject": "Last subject token",
    "first_subsequent": "First subsequent token",
    "further": "Further tokens",
    "last": "Last token",
}
SUBJECT_CATEGORIES: tuple[str, ...] = CATEGORIES[:3]
# Expressive, row_mode "streams": the subject categories per stream (module docstring), then the three after it.
STREAM_CATEGORIES: tuple[str, ...] = tuple(f"{c}/{s}" for s in STREAMS for c in SUBJECT_CATEGORIES) + CATEGORIES[3:]
CATEGORY_LABELS.update({f"{c}/{s}": f"{CATEGORY_LABELS[c]} / {STREAM_LABELS[s]}"
                        for s in STREAMS for c in SUBJECT_CATEGORIES})
FLOOR_ULPS = 1024  # float32 ulps of the prompt's largest probability under which an IE is rounding (module doc)
# A JSON dict with these keys is a trace result; any other JSON (aie.json, manifests, ROME's
# ``{"correct_prediction": false}`` stubs) is skipped by ``load_results``.
RESULT_KEYS: tuple[str, ...] = ("scores", "kind", "low_score", "high_score")
# The group of the text-only backbone's results (``model_role: "backbone"``, written by ``spiritlens experiment``
# with a backbone): Figure 2's first row. Groups are drawn and listed in GROUPS order.
BACKBONE = "backbone"
GROUPS: tuple[str, ...] = (BACKBONE, *MODALITIES)


def describe(result: Mapping) -> str:
    """Short name of a result for error messages: its ``name`` and/or ``prompt``."""
    name, prompt = result.get("name"), result.get("prompt")
    if name and prompt:
        return f"{name} (prompt {prompt!r})"
    if name or prompt:
        return repr(name or prompt)
    return "<unnamed result>"


@dataclass(frozen=True)
class ParsedResult:
    """A checked result: ``scores`` [R, L] float64, subject rows [b, e), the rest normalised."""

    scores: np.ndarray
    b: int
    e: int
    ignored: frozenset[int]
    kind: str
    modality: str
    low: float
    high: float
    kept: bool


def parse_result(result: Mapping, *, allow_untraced: bool = False) -> ParsedResult:
    """Check one result's structure; raise ValueError naming the prompt on the first problem.

    ``allow_untraced``: NaN scores are accepted in a result that lists its traced ``cells``
    (``trace(..., cells=...)``: every other cell NaN by design), as figures draw them; aggregates do not."""
    who = f"result {describe(result)}"
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise ValueError(f"{who}: missing field(s) {', '.join(missing)}")
    kind = result["kind"]
    if kind not in KINDS:
        raise ValueError(f"{who}: kind {kind!r} is not one of {', '.join(KINDS)}")
    modality = result.get("modality") or "text"
    if modality not in MODALITIES:
        raise ValueError(f"{who}: modality {modality!r} is not one of {', '.join(MODALITIES)}")
    try:
        scores = np.asarray(result["scores"], dtype=np.float64)
        low, high = float(result["low_score"]), float(result["high_score"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{who}: scores/low_score/high_score are not numbers ({error})") from None
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"{who}: scores must be a non-empty [rows, layers] table, got shape {scores.shape}")
    finite = np.isfinite(scores) | (np.isnan(scores) if allow_untraced and result.get("cells") is not None else False)
    if not (finite.all() and math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{who}: scores, low_score or high_score contain NaN or infinity")
    n_rows, n_layers = scores.shape
    if result.get("n_layers") is not None and result["n_layers"] != n_layers:
        raise ValueError(f"{who}: n_layers is {result['n_layers']} but scores have {n_layers} columns")
    if result.get("rows") is not None and len(result["rows"]) != n_rows:
        raise ValueError(f"{who}: {len(result['rows'])} rows listed but scores have {n_rows} rows")
    span = result.get("subject_rows", result.get("subject_range"))
    if (
        not isinstance(span, (list, tuple))
        or len(span) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)
    ):
        raise ValueError(f"{who}: subject_rows (or subject_range) must be two ints [b, e), got {span!r}")
    b, e = span
    if not 0 <= b < e <= n_rows:
        raise ValueError(f"{who}: subject rows [{b}, {e}) do not fit in {n_rows} rows (need 0 <= b < e <= rows)")
    if e == n_rows:
        raise ValueError(
            f"{who}: the subject ends the prompt (subject rows [{b}, {e}) of {n_rows}), "
            "so there is no first subsequent or last token"
        )
    ignored = result.get("ignored_rows") or []
    if not all(isinstance(r, int) and not isinstance(r, bool) and 0 <= r < n_rows for r in ignored):
        raise ValueError(f"{who}: ignored_rows must be row indices in [0, {n_rows}), got {ignored!r}")
    correct = result.get("correct_prediction")
    return ParsedResult(
        scores=scores,
        b=b,
        e=e,
        ignored=frozenset(ignored),
        kind=kind,
        modality=modality,
        low=low,
        high=high,
        kept=correct is None or bool(correct),
    )


def check_result(result: Mapping) -> None:
    """Raise ValueError naming the prompt if ``result`` is not a usable trace result."""
    parse_result(result)


def numerical_floor(parsed: ParsedResult) -> float:
    """The |IE| at or below which a cell of this result is no effect: ``FLOOR_ULPS * eps(float32) * p_max``,
    ``p_max`` the largest of its high score, low score and scores (module doc)."""
    finite = parsed.scores[np.isfinite(parsed.scores)]
    p_max = max(abs(parsed.high), abs(parsed.low), float(np.abs(finite).max()) if finite.size else 0.0)
    return FLOOR_ULPS * float(np.finfo(np.float32).eps) * p_max


def row_effects(parsed: ParsedResult, rows) -> np.ndarray:
    """``scores[rows] - low_score`` ([len(rows), L]) with every IE within :func:`numerical_floor` set to 0."""
    effects = parsed.scores[list(rows)] - parsed.low
    effects[np.abs(effects) <= numerical_floor(parsed)] = 0.0
    return effects


def category_effects(parsed: ParsedResult) -> dict[str, np.ndarray]:
    """Each category's :func:`row_effects` (``[|rows|, L]``) for the categories this prompt has rows in,
    in ``CATEGORIES`` order."""
    rows = _category_rows(parsed.scores.shape[0], parsed.b, parsed.e, parsed.ignored)
    return {name: row_effects(parsed, r) for name, r in rows.items() if r}


def prompt_effect_matrix(result: Mapping | ParsedResult) -> np.ndarray:
    """One prompt's effect per category and layer, ``[6, L]`` (rows in ``CATEGORIES`` order): the mean over
    its category rows of the IE against its own ``low_score`` (rounding-level IE counted as 0), NaN for a
    category without rows. The per-prompt AIE (``KindAggregate.effect``) is the mean of these over prompts."""
    parsed = result if isinstance(result, ParsedResult) else parse_result(result)
    matrix = np.full((len(CATEGORIES), parsed.scores.shape[1]), np.nan)
    for name, effects in category_effects(parsed).items():
        matrix[CATEGORIES.index(name)] = effects.mean(axis=0)
    return matrix


def _category_rows(n_rows: int, b: int, e: int, ignored: frozenset[int]) -> dict[str, list[int]]:
    """Row indices per category for R = ``n_rows`` rows and subject rows [b, e), with e < R."""
    spans = {
        "first_subject": [b],
        "middle_subject": range(b + 1, e - 1),
        "last_subject": [e - 1],
        "first_subsequent": [e],
        "further": range(e + 1, n_rows - 1),
        "last": [n_rows - 1],
    }
    return {name: [r for r in rows if r not in ignored] for name, rows in spans.items()}


def is_stream_result(result: Mapping) -> bool:
    """Whether ``result`` was traced with its subject rows split by stream (``row_mode="streams"``)."""
    return result.get("row_mode") == STREAM_ROW_MODE


def _stream_category_rows(result: Mapping, parsed: ParsedResult) -> dict[str, list[int]]:
    """Row indices per :data:`STREAM_CATEGORIES` category of a ``"streams"`` result (module docstring)."""
    who = f"result {describe(result)}"
    n_rows, b, e = parsed.scores.shape[0], parsed.b, parsed.e
    streams, tokens = result.get("row_streams"), result.get("row_subject_token")
    if not isinstance(streams, list) or not isinstance(tokens, list) or not len(streams) == len(tokens) == n_rows:
        raise ValueError(f"{who}: row_mode 'streams' needs row_streams and row_subject_token, one per row "
                         f"({n_rows} rows)")
    subject = [r for r in range(b, e) if r not in parsed.ignored]
    for r in range(n_rows):
        inside = r in subject
        if inside and (streams[r] not in STREAMS or isinstance(tokens[r], bool) or not isinstance(tokens[r], int)
                       or tokens[r] < 0):
            raise ValueError(f"{who}: subject row {r} needs a stream among {', '.join(STREAMS)} and a subject token "
                             f"index >= 0, got {streams[r]!r} and {tokens[r]!r}")
        if not inside and (streams[r] is not None or tokens[r] is not None):
            raise ValueError(f"{who}: row {r} is outside the subject but has stream {streams[r]!r}, subject token "
                             f"{tokens[r]!r}")
    n = 1 + max(tokens[r] for r in subject)
    categories: dict[str, list[int]] = {name: [] for name in STREAM_CATEGORIES}
    for r in subject:
        j = tokens[r]
        names = ["first_subject"] * (j == 0) + ["last_subject"] * (j == n - 1) + ["middle_subject"] * (0 < j < n - 1)
        for name in names:
            categories[f"{name}/{streams[r]}"].append(r)
    after = _category_rows(n_rows, b, e, parsed.ignored)
    categories.update({name: after[name] for name in CATEGORIES[3:]})
    return categories


def categorize(result: Mapping) -> dict[str, list[int]]:
    """Row indices of ``result["scores"]`` per category, keys in ``CATEGORIES`` order.

    Rows in ``ignored_rows`` are left out of every category (they are "in no category"); in
    practice they sit among the middle or further rows. A ``"streams"`` result (:func:`is_stream_result`)
    gets the :data:`STREAM_CATEGORIES` instead (module docstring). Raises ValueError naming the prompt
    if the subject ends the prompt or the result is malformed.
    """
    parsed = parse_result(result)
    if is_stream_result(result):
        return _stream_category_rows(result, parsed)
    return _category_rows(parsed.scores.shape[0], parsed.b, parsed.e, parsed.ignored)


@dataclass(frozen=True)
class KindAggregate:
    """Aggregate of one kind over prompts.

    ``mean``, ``aie`` and ``ci`` map each category to a float64 array of shape [L]
    (NaN where the category has no rows). ``count`` is the number of kept prompts and
    ``excluded`` the number left out because ``correct_prediction`` is False.
    ``modality`` is "text", "speech" or "mixed".

    ``effect``: per category, the per-prompt AIE (module doc), [L]; ``ci`` its 95% half-width (NaN
    with fewer than two prompts in the category, 0 where every prompt's effect is equal);
    ``prompt_counts``: the prompts with rows in each category; ``no_effect``: every IE of every
    kept prompt's category rows is within its numerical floor (then ``effect`` is exactly 0).

    ``row_ie``: per category, the mean over the same pooled rows of each row's IE against **its own
    prompt's** ``low_score``. ROME's ``aie`` subtracts the mean ``low_score`` over *all* prompts, so a
    category that only some prompts have (middle subject tokens, further tokens) inherits the
    difference between their corrupted scores and everyone's: with equal low scores the two agree;
    otherwise ``aie`` can show an effect at layers where no row has one (``row_ie`` is 0 there).
    """

    kind: str
    modality: str
    n_layers: int
    count: int
    excluded: int
    low_score_mean: float
    high_score_mean: float
    mean: dict[str, np.ndarray] = field(repr=False)
    ci: dict[str, np.ndarray] = field(repr=False)
    row_counts: dict[str, int]
    row_ie: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    effect: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    prompt_counts: dict[str, int] = field(default_factory=dict)
    no_effect: bool = False
    methods: tuple[str, ...] = ("exact",)  # how the results' scores were computed (spiritlens.traces.methods)
    categories: tuple[str, ...] = CATEGORIES  # STREAM_CATEGORIES for results split by stream

    @property
    def ate(self) -> float:
        """Average total effect, mean(high_score) - mean(low_score)."""
        return self.high_score_mean - self.low_score_mean

    @property
    def aie(self) -> dict[str, np.ndarray]:
        """AIE per category, [L] each: ``mean_c - low_score_mean`` (unclipped)."""
        return {name: values - self.low_score_mean for name, values in self.mean.items()}

    def aie_matrix(self) -> np.ndarray:
        """AIE as a [C, L] array, rows in ``categories`` order (C = 6, or 12 per stream)."""
        aie = self.aie
        return np.stack([aie[name] for name in self.categories])

    def effect_matrix(self, categories: Sequence[str] | None = None) -> np.ndarray:
        """The per-prompt AIE (``effect``) as a [C, L] array, rows in ``categories`` order (default: all of
        this aggregate's, ``CATEGORIES`` for plain results)."""
        return np.stack([self.effect[name] for name in (categories or self.categories)])

    def peak(self, categories: Sequence[str] | None = None) -> tuple[str, int, float] | None:
        """(category, layer, per-prompt AIE) of the largest ``effect`` (among ``categories``, default all);
        None if every such category is empty or the kind has no effect (``no_effect``)."""
        categories = tuple(categories or self.categories)
        matrix = self.effect_matrix(categories)
        if self.no_effect or np.isnan(matrix).all():
            return None
        row, layer = np.unravel_index(np.nanargmax(matrix), matrix.shape)
        return categories[row], int(layer), float(matrix[row, layer])

    def describe_peak(self) -> str:
        """One phrase for summaries: ``"no rows"``, ``"no effect (every |IE| within the numerical floor)"``,
        or ``"peak AIE 0.24 ± 0.05 at last, layer 3"`` (the per-prompt AIE and its 95% CI)."""
        if self.no_effect:
            return f"no effect (every |IE| within the numerical floor, {FLOOR_ULPS} float32 ulps of p)"
        peak = self.peak()
        if peak is None:
            return "no rows"
        category, layer, value = peak
        ci = self.ci[category][layer]
        estimate = estimate_note(self.methods)
        what = f"peak AIE ({estimate})" if estimate else "peak AIE"
        return f"{what} {value:.4g}{f' ± {ci:.2g}' if np.isfinite(ci) else ''} at {category}, layer {layer}"


def _mean_or_nan(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def aggregate(results: Iterable[Mapping], kind: str) -> KindAggregate:
    """Aggregate the results of one ``kind`` (other kinds are ignored) into a ``KindAggregate``.

    Raises ValueError if no result has that kind, if any of them is malformed (naming it), if
    they disagree on the number of layers, or for a result whose rows are split by stream
    (:func:`aggregate_streams` averages those).
    """
    results = [result for result in results if result.get("kind") == kind]
    split = [result for result in results if is_stream_result(result)]
    if split:
        raise ValueError(f"result {describe(split[0])}: its subject rows are split by stream (row_mode 'streams'); "
                         "average such results with aggregate_streams, apart from the six plain categories")
    return _aggregate(results, kind, CATEGORIES)


def aggregate_streams(results: Iterable[Mapping], kind: str) -> KindAggregate:
    """Aggregate the ``row_mode="streams"`` results of one ``kind`` over :data:`STREAM_CATEGORIES` (module
    docstring): the same per-prompt AIE, CI, ROME's pooled AIE and numerical floor as :func:`aggregate`.
    Raises ValueError as :func:`aggregate`, or for a result whose rows are not split by stream."""
    results = [result for result in results if result.get("kind") == kind]
    plain = [result for result in results if not is_stream_result(result)]
    if plain:
        raise ValueError(f"result {describe(plain[0])}: its rows are not split by stream (row_mode 'streams')")
    return _aggregate(results, kind, STREAM_CATEGORIES)


def _aggregate(results: list[Mapping], kind: str, categories: tuple[str, ...]) -> KindAggregate:
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    chosen = [(result, parse_result(result)) for result in results]
    if not chosen:
        raise ValueError(f"no results of kind {kind!r} to aggregate")
    first_result, first = chosen[0]
    n_layers = first.scores.shape[1]
    for result, parsed in chosen:
        if parsed.scores.shape[1] != n_layers:
            raise ValueError(
                f"kind {kind!r} mixes layer counts: {describe(first_result)} has {n_layers} layers, "
                f"{describe(result)} has {parsed.scores.shape[1]}"
            )
    methods = {}
    for result, _ in chosen:
        methods.setdefault(str(result.get("method", "exact")), result)
    if len(methods) > 1:
        (a, first_of), (b, second_of) = list(methods.items())[:2]
        raise ValueError(f"kind {kind!r} mixes methods: {describe(first_of)} is {a}, {describe(second_of)} is {b}; "
                         "aggregate exact traces and attribution estimates apart")
    modalities = {parsed.modality for _, parsed in chosen}
    kept = [(result, parsed) for result, parsed in chosen if parsed.kept]
    pooled: dict[str, list[np.ndarray]] = {name: [] for name in categories}
    lows: dict[str, list[float]] = {name: [] for name in categories}  # each pooled row's own low_score
    per_prompt: dict[str, list[np.ndarray]] = {name: [] for name in categories}  # one [L] effect per prompt
    no_effect = True
    split = categories == STREAM_CATEGORIES
    for result, parsed in kept:
        rows_of = _stream_category_rows(result, parsed) if split else _category_rows(
            parsed.scores.shape[0], parsed.b, parsed.e, parsed.ignored)
        for name, rows in rows_of.items():
            pooled[name].extend(parsed.scores[r] for r in rows)
            lows[name].extend(parsed.low for _ in rows)
            if rows:
                effects = row_effects(parsed, rows)  # [|rows|, L], rounding-level IE set to 0
                no_effect = no_effect and not effects.any()
                per_prompt[name].append(effects.mean(axis=0))
    mean, ci, row_ie, effect = {}, {}, {}, {}
    for name, rows in pooled.items():
        if rows:
            stacked = np.stack(rows)  # [|R_c|, L]
            mean[name] = stacked.mean(axis=0)
            row_ie[name] = (stacked - np.asarray(lows[name])[:, None]).mean(axis=0)
            effect[name], ci[name], _ = mean_ci(np.stack(per_prompt[name]))
        else:
            mean[name], ci[name], row_ie[name], effect[name] = (np.full(n_layers, np.nan) for _ in range(4))
    return KindAggregate(
        kind=kind,
        modality=modalities.pop() if len(modalities) == 1 else "mixed",
        n_layers=n_layers,
        count=len(kept),
        excluded=len(chosen) - len(kept),
        low_score_mean=_mean_or_nan([p.low for _, p in kept]),
        high_score_mean=_mean_or_nan([p.high for _, p in kept]),
        mean=mean,
        ci=ci,
        row_counts={name: len(rows) for name, rows in pooled.items()},
        row_ie=row_ie,
        effect=effect,
        prompt_counts={name: len(values) for name, values in per_prompt.items()},
        no_effect=no_effect and bool(kept),
        methods=tuple(sorted({str(result.get("method", "exact")) for result, _ in chosen})),
        categories=categories,
    )


# Settings that must agree for prompts to be averaged as one experiment (a difference is reported).
POOLED_SETTINGS = ("sigma", "noise_rule", "samples", "replace", "answer_rule", "window", "corruption")


def pooling_notes(results: Iterable[Mapping]) -> list[str]:
    """What a reader of an average over ``results`` must know, one line each, per group and kind: the
    same input (token ids and subject) traced more than once (each counts as a prompt), settings of
    :data:`POOLED_SETTINGS` that differ between results, explicit targets (``target``: not the model's
    own answer), and speech alignments flagged as low-confidence. Empty when none applies."""
    notes: list[str] = []
    by_group: dict[tuple[str, str], list[Mapping]] = {}
    for result in results:
        by_group.setdefault((result_group(result), str(result.get("kind"))), []).append(result)
    for (group, kind), members in by_group.items():
        where = f"{group} {kind}"
        seen: dict[str, Mapping] = {}
        for result in (r for r in members if r.get("correct_prediction") is not False):  # the averaged ones
            key = repr((result.get("input_ids"), result.get("subject_range"), result.get("row_mode")))
            if key in seen:
                notes.append(f"{where}: {describe(result)} traces the same input as {describe(seen[key])}; "
                             "both count as prompts")
            else:
                seen[key] = result
        for setting in POOLED_SETTINGS:
            values = {repr(result.get(setting)) for result in members}
            if len(values) > 1:
                notes.append(f"{where}: results differ in {setting} ({', '.join(sorted(values)[:4])}); "
                             "averaged together")
        targets = [r for r in members if r.get("target")]
        if targets:
            notes.append(f"{where}: {len(targets)} result(s) score an explicit --target, not the model's own "
                         f"answer (e.g. {describe(targets[0])}, target {targets[0].get('target')!r})")
        flagged = [r for r in members if r.get("alignment_low_confidence")]
        if flagged:
            notes.append(f"{where}: {len(flagged)} result(s) with a low-confidence speech alignment included "
                         f"(e.g. {describe(flagged[0])})")
    return notes


def aggregate_all(results: Iterable[Mapping]) -> dict[str, KindAggregate]:
    """One ``KindAggregate`` per kind present in ``results`` (all modalities pooled), in ``KINDS`` order.

    Every result is checked first, so one with an unknown kind is an error, not silently dropped.
    """
    results = list(results)
    for result in results:
        check_result(result)
    present = {result.get("kind") for result in results}
    return {kind: aggregate(results, kind) for kind in KINDS if kind in present}


def result_group(result: Mapping) -> str:
    """The group a result is aggregated in: :data:`BACKBONE` for the text-only backbone's results
    (``model_role: "backbone"``), else its prompt modality ("text" = T→T, "speech" = S→T)."""
    if result.get("model_role") == BACKBONE:
        return BACKBONE
    return result.get("modality") or "text"


def split_backbone(results: Iterable[Mapping]) -> tuple[list[Mapping], list[Mapping]]:
    """``(the backbone's results, the others)``: the two models are never pooled."""
    backbone, others = [], []
    for result in results:
        (backbone if result_group(result) == BACKBONE else others).append(result)
    return backbone, others


def group_labels(groups: Iterable[str]) -> dict[str, str]:
    """Figure and report labels of aggregate groups: "T→T", "S→T"; with a backbone group present,
    "backbone T→T", "SpiritLM T→T", "SpiritLM S→T" (Figure 2's three rows)."""
    groups = list(groups)
    if BACKBONE not in groups:
        return {g: MODALITY_LABELS.get(g, g) for g in groups}
    return {g: "backbone T→T" if g == BACKBONE else f"SpiritLM {MODALITY_LABELS.get(g, g)}" for g in groups}


def aggregate_by_modality(results: Iterable[Mapping]) -> dict[str, dict[str, KindAggregate]]:
    """``{group: {kind: KindAggregate}}`` for the groups present, in :data:`GROUPS` order: the backbone's
    T→T results (:func:`result_group`: ``model_role: "backbone"``) as ``"backbone"``, then each modality
    of the other results ("text" = T→T, "speech" = S→T). ValueError for an unknown modality, or a backbone
    result that is not text."""
    results = list(results)
    groups: dict[str, list[Mapping]] = {}
    for result in results:
        group = result_group(result)
        if group == BACKBONE and (result.get("modality") or "text") != "text":
            raise ValueError(f"result {describe(result)}: a backbone result must be text, got modality "
                             f"{result.get('modality')!r} (the backbone is a text-only model)")
        groups.setdefault(group, []).append(result)
    unknown = sorted(set(groups) - set(GROUPS), key=str)
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r} (expected one of {', '.join(MODALITIES)})")
    return {group: aggregate_all(groups[group]) for group in GROUPS if group in groups}


def _json_floats(values: np.ndarray | float) -> list[float | None] | float | None:
    """NaN -> None, recursively over a 1-D array or a scalar."""
    if np.ndim(values) == 0:
        value = float(values)
        return None if math.isnan(value) else value
    return [_json_floats(v) for v in values]


def _kind_entry(agg: KindAggregate) -> dict:
    aie = agg.aie
    return {
        "count": agg.count,
        "low_score_mean": _json_floats(agg.low_score_mean),
        "high_score_mean": _json_floats(agg.high_score_mean),
        "aie": {name: _json_floats(aie[name]) for name in agg.categories},
        "ate": _json_floats(agg.ate),
        "row_counts": dict(agg.row_counts),
        "effect": {name: _json_floats(agg.effect[name]) for name in agg.categories if name in agg.effect},
        "ci95": {name: _json_floats(agg.ci[name]) for name in agg.categories},
        "prompt_counts": dict(agg.prompt_counts),
        "no_effect": agg.no_effect,
        "row_ie": {name: _json_floats(agg.row_ie[name]) for name in agg.categories if name in agg.row_ie},
        "excluded": agg.excluded,
        "n_layers": agg.n_layers,
        "modality": agg.modality,
        "methods": list(agg.methods),
    }


def to_aie_json(
    aggregates: Mapping[str, KindAggregate],
    by_modality: Mapping[str, Mapping[str, KindAggregate]] | None = None,
) -> dict:
    """The ``aie.json`` document (README, "JSON outputs"): ``{kind: {count, low_score_mean, high_score_mean, aie}}``.

    ``aie`` maps each category to one unclipped float per layer, ``null`` where the category has
    no rows. Extra fields per kind: ``ate``, ``row_counts``, ``effect`` (the per-prompt AIE the figures
    draw), ``ci95`` (its 95% half-widths, :mod:`spiritlens.aggregates.ci`), ``prompt_counts`` (prompts per
    category), ``no_effect`` (every IE within the numerical floor), ``row_ie``
    (each row's IE against its own prompt's low score, :class:`KindAggregate`), ``excluded``,
    ``n_layers``, ``modality``; and, when ``by_modality`` holds more than one group,
    ``by_modality: {group: <the same fields for that group alone>}`` (groups: "text", "speech", and
    "backbone" for the text-only backbone's T→T results, :func:`aggregate_by_modality`).
    """
    document = {}
    for kind, agg in aggregates.items():
        entry = _kind_entry(agg)
        if by_modality is not None and len(by_modality) > 1:
            entry["by_modality"] = {
                modality: _kind_entry(kinds[kind]) for modality, kinds in by_modality.items() if kind in kinds
            }
        document[kind] = entry
    return document


def _result_files(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    files: list[Path] = []
    for item in source:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.json") if p.is_file() and not p.name.startswith(".")))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"results path {str(path)!r} does not exist")
    return files


def load_results(
    source: str | os.PathLike | Iterable[str | os.PathLike],
    problems: list[str] | None = None,
    *,
    streams: bool = False,
) -> list[dict]:
    """Read the trace results under a folder (recursively, ``*.json``) or from a list of files.

    JSON that is not a trace result (no ``scores``/``kind``: ``aie.json``, manifests, ROME's
    ``{"correct_prediction": false}`` stubs) is skipped silently. A file that cannot be read, is not
    valid JSON, is a malformed result (see ``check_result``, including a subject that ends the
    prompt) or a result that is not as it was written (no ``checksum``, content that no longer matches
    it, or a ``.npz`` that differs from the JSON: :func:`spiritlens.traces.result.result_problem`) is
    not used: one line ``"<path>: <what is wrong>"`` is appended to ``problems``, or
    given as a warning when ``problems`` is None. A result without ``name`` gets the file's stem.
    Results whose rows are split by stream (:func:`is_stream_result`) are averaged apart
    (:func:`aggregate_streams`): without ``streams`` they are not used, with a line saying so; with
    ``streams`` only they are used and plain results are left out the same way.
    Raises FileNotFoundError for a source path that does not exist.
    """
    results = []
    for path in _result_files(source):
        try:
            document = loads_json(path.read_text(encoding="utf-8"), "the file")  # nesting bounded before parsing
        except (OSError, UnicodeDecodeError, ValueError) as error:
            message = f"{path}: cannot read JSON ({error})"
        else:
            if not isinstance(document, dict) or "scores" not in document or "kind" not in document:
                continue
            try:
                problem = result_problem(path, document)  # as TraceResult.save wrote it, or not used
                if problem:
                    raise ValueError(problem)
                document.setdefault("name", path.stem)
                check_result(document)
                if is_stream_result(document) != streams:
                    raise ValueError("its subject rows are split by stream (row_mode 'streams'): averaged apart "
                                     "from the six plain categories (aggregate_streams)" if not streams else
                                     "its rows are not split by stream (row_mode 'streams')")
            except ValueError as error:
                message = f"{path}: {error}"
            else:
                results.append(document)
                continue
        if problems is None:
            warnings.warn(message, stacklevel=2)
        else:
            problems.append(message)
    return results
