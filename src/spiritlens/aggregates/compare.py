"""How much of the backbone's causal-tracing pattern a model built from it keeps (Figure 2's comparison).

The paper compares SpiritLM's traces with those of Llama-2-7B, the text-only backbone it was trained from,
on the same prompts. The number here: for one kind, the **Pearson correlation of the per-prompt AIE grids**
(categories × layers, :func:`spiritlens.aggregates.aie.prompt_effect_matrix` averaged over prompts, the
grids every figure draws) of the backbone's T→T traces and of SpiritLM's T→T (or S→T) traces, over the
facts both kept (paired by ``known_id``), with a **bootstrap 95% interval over prompts**:

- the grids: for each model, the mean over the shared prompts of each prompt's effect per category and
  layer (a category only some prompts have is the mean over those); r over the cells defined in both
  grids (a category no shared prompt has is left out);
- the interval: ``resamples`` times (default :data:`RESAMPLES`), draw n prompts with replacement from the
  n shared ones (``numpy.random.default_rng(seed)``, one ``integers(0, n, size=n)`` call per resample, the
  same draw for both models: a paired bootstrap), recompute both grids and their r; the interval is the
  2.5th and 97.5th percentiles of those r (numpy's linear interpolation; Efron & Tibshirani 1993, §13.3).
  A resample whose r is undefined (a constant grid) is left out and counted out of ``valid_resamples``.

Two variants per kind, from the same resamples: ``grid``, every category; and ``without_last``, the five
categories before the last token. The last-token row is large in every causal trace whatever the model
computes (restoring the last position's hidden state at a late layer restores the output), so it dominates
r over the whole grid, even between unrelated models (measured: README, "The baseline row").

r is undefined (None, with the reason) when a grid is constant (e.g. no effect anywhere) or fewer than
three cells are defined in both. The grids must have the same number of layers: two models of different
depth are **refused** (ValueError naming both depths), not interpolated, because a layer of one model has
no counterpart in the other (SpiritLM and Llama-2-7B both have 32).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from spiritlens.aggregates.aie import BACKBONE, CATEGORIES, KINDS, parse_result, prompt_effect_matrix, result_group

RESAMPLES = 1000
SEED = 0
PERCENTILES = (2.5, 97.5)
# The grid's categories in each variant (module doc): every one, and every one before the last token.
VARIANTS: dict[str, tuple[str, ...]] = {"grid": CATEGORIES, "without_last": CATEGORIES[:-1]}
STATISTIC = ("Pearson r between the backbone's per-prompt AIE grid (categories x layers, mean over the facts both "
             "models kept) and the other model's, per kind")
INTERVAL = ("paired bootstrap over prompts: 2.5th-97.5th percentile of r over the resamples (numpy default_rng(seed), "
            "one integers(0, n, size=n) draw per resample)")


@dataclass(frozen=True)
class GridCorrelation:
    """One kind's comparison: ``r`` (None when undefined, with ``reason``), its bootstrap 95% interval
    ``ci95`` (None with one prompt or no valid resample), ``prompts`` (n), ``cells`` (cells defined in both
    grids), ``resamples``, ``valid_resamples`` and ``seed``."""

    r: float | None
    ci95: tuple[float, float] | None
    prompts: int
    cells: int
    resamples: int
    valid_resamples: int
    seed: int
    reason: str | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["ci95"] = None if self.ci95 is None else list(self.ci95)
        return data

    def describe(self, escape: Callable[[object], str] = str) -> str:
        """``"r = 0.97 (95% CI 0.93 to 0.99, 12 prompts)"``, or why r is undefined (the reason passed
        through ``escape``)."""
        if self.r is None:
            return f"r undefined ({escape(self.reason)})"
        ci = "" if self.ci95 is None else f"95% CI {self.ci95[0]:.2f} to {self.ci95[1]:.2f}, "
        return f"r = {self.r:.2f} ({ci}{self.prompts} prompt{'s' if self.prompts != 1 else ''})"


def mean_grid(effects: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The grid ``[6, L]`` of per-prompt effects ``[n, 6, L]`` (NaN where a prompt lacks a category): each
    cell's mean over the prompts that have it (``weights``: how often each prompt counts), NaN where none does."""
    present = np.isfinite(effects)
    counts = np.ones(len(effects)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = np.tensordot(counts, np.where(present, effects, 0.0), axes=1)
    number = np.tensordot(counts, present.astype(np.float64), axes=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(number > 0, total / np.where(number > 0, number, 1.0), np.nan)


def pearson(a: np.ndarray, b: np.ndarray) -> tuple[float | None, int, str | None]:
    """``(r, cells, reason)``: Pearson's r over the cells finite in both arrays; r None (with the reason)
    when fewer than three cells are, or either side is constant there."""
    both = np.isfinite(a) & np.isfinite(b)
    x, y = a[both], b[both]
    cells = int(both.sum())
    if cells < 3:
        return None, cells, f"{cells} cell(s) defined in both grids, need 3"
    dx, dy = x - x.mean(), y - y.mean()
    sx, sy = float(np.sqrt((dx * dx).sum())), float(np.sqrt((dy * dy).sum()))
    if sx == 0 or sy == 0:
        return None, cells, f"the {'first' if sx == 0 else 'second'} grid is constant (no variation to correlate)"
    return float(np.clip((dx * dy).sum() / (sx * sy), -1.0, 1.0)), cells, None


def grid_correlation(reference: np.ndarray, other: np.ndarray, *, resamples: int = RESAMPLES,
                     seed: int = SEED, names: tuple[str, str] = ("backbone", "other"),
                     categories: Sequence[str] = CATEGORIES) -> GridCorrelation:
    """r between the mean grids of two models' per-prompt effects, with its bootstrap interval (module doc).

    ``reference``, ``other``: ``[n, 6, L]`` per-prompt effect matrices of the same n prompts in the same
    order (:func:`~spiritlens.aggregates.aie.prompt_effect_matrix`). ``categories``: the grid rows compared
    (default: all six; :data:`VARIANTS`). ``names`` name the two in errors. Raises ValueError for no prompt,
    a different prompt count, or a different layer count (refused: module doc).
    """
    reference, other = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be an integer >= 1, got {resamples!r}")
    if reference.ndim != 3 or other.ndim != 3 or reference.shape[1] != other.shape[1]:
        raise ValueError(f"per-prompt effects must be [prompts, categories, layers] arrays, got {reference.shape} "
                         f"and {other.shape}")
    if len(reference) != len(other):
        raise ValueError(f"{names[0]} has {len(reference)} prompts, {names[1]} {len(other)}: pair them first")
    if len(reference) == 0:
        raise ValueError("no prompt traced by both models")
    if reference.shape[2] != other.shape[2]:
        raise ValueError(f"{names[0]} has {reference.shape[2]} layers, {names[1]} {other.shape[2]}: their layer grids "
                         "are not compared (a layer of one has no counterpart in the other; not interpolated)")
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown or not categories:
        raise ValueError(f"categories must be some of {', '.join(CATEGORIES)}, got {list(categories)}")
    rows = [CATEGORIES.index(c) for c in categories]
    reference, other = reference[:, rows], other[:, rows]
    n = len(reference)
    r, cells, reason = pearson(mean_grid(reference), mean_grid(other))
    rng = np.random.default_rng(seed)
    values = []
    if r is not None and n > 1:
        for _ in range(resamples):
            counts = np.bincount(rng.integers(0, n, size=n), minlength=n)
            value, _, _ = pearson(mean_grid(reference, counts), mean_grid(other, counts))
            if value is not None:
                values.append(value)
    ci = None
    if values:
        low, high = np.percentile(values, PERCENTILES)
        ci = (float(low), float(high))
    return GridCorrelation(r=r, ci95=ci, prompts=n, cells=cells, resamples=resamples if r is not None and n > 1 else 0,
                           valid_resamples=len(values), seed=seed, reason=reason)


def _by_known_id(results: Iterable[Mapping], group: str) -> dict[str, dict[int, Mapping]]:
    """``{kind: {known_id: result}}`` of the kept results of one group; ValueError for a result without a
    ``known_id`` or one listed twice."""
    table: dict[str, dict[int, Mapping]] = {}
    for result in results:
        if result_group(result) != group or not parse_result(result).kept:
            continue
        known_id = result.get("known_id")
        if isinstance(known_id, bool) or not isinstance(known_id, int):
            raise ValueError(f"a {group} result ({result.get('name', '?')}) has no integer known_id to pair it by")
        kinds = table.setdefault(result["kind"], {})
        if known_id in kinds:
            raise ValueError(f"two {group} {result['kind']} results of Known id {known_id}")
        kinds[known_id] = result
    return table


def compare_to_backbone(results: Sequence[Mapping], *, resamples: int = RESAMPLES, seed: int = SEED) -> dict | None:
    """The comparison document (``comparison.json``) of the backbone's results against each other group
    (``"text"``: SpiritLM T→T, ``"speech"``: S→T), per kind, on the facts both kept (module doc); None
    when ``results`` hold no backbone result or no other group.

    ``{"statistic", "interval", "resamples", "seed", "percentiles", "variants", "pairs": {group: {"known_ids":
    [...], "kinds": {kind: {variant: GridCorrelation.to_json()} | {"reason": why not computed}}}}}`` with the
    variants of :data:`VARIANTS`. A pair that cannot be compared (different depths, no shared fact, results
    without ``known_id``) records its reason instead of numbers; nothing is raised for it.
    """
    results = list(results)
    groups = [g for g in ("text", "speech") if any(result_group(r) == g for r in results)]
    if not any(result_group(r) == BACKBONE for r in results) or not groups:
        return None
    document: dict = {"statistic": STATISTIC, "interval": INTERVAL, "resamples": resamples, "seed": seed,
                      "percentiles": list(PERCENTILES), "variants": {k: list(v) for k, v in VARIANTS.items()},
                      "pairs": {}}
    try:
        backbone = _by_known_id(results, BACKBONE)
    except ValueError as error:
        document["pairs"] = {g: {"known_ids": [], "kinds": {}, "reason": str(error)} for g in groups}
        return document
    for group in groups:
        pair: dict = {"known_ids": [], "kinds": {}}
        document["pairs"][group] = pair
        try:
            other = _by_known_id(results, group)
        except ValueError as error:
            pair["reason"] = str(error)
            continue
        for kind in KINDS:
            if kind not in backbone or kind not in other:
                continue
            shared = sorted(set(backbone[kind]) & set(other[kind]))
            pair["known_ids"] = sorted(set(pair["known_ids"]) | set(shared))
            if not shared:
                pair["kinds"][kind] = {"reason": "no fact kept by both models"}
                continue
            first = [prompt_effect_matrix(backbone[kind][k]) for k in shared]
            second = [prompt_effect_matrix(other[kind][k]) for k in shared]
            try:
                pair["kinds"][kind] = {
                    variant: grid_correlation(first, second, resamples=resamples, seed=seed, categories=rows,
                                              names=("the backbone", group_name(group))).to_json()
                    for variant, rows in VARIANTS.items()}
            except ValueError as error:
                pair["kinds"][kind] = {"reason": str(error)}
    return document


def group_name(group: str) -> str:
    """``"SpiritLM T→T"`` / ``"SpiritLM S→T"`` for the groups compared with the backbone."""
    return {"text": "SpiritLM T→T", "speech": "SpiritLM S→T"}.get(group, group)


def describe_variant(entry: Mapping, escape: Callable[[object], str] = str) -> str:
    """One variant's numbers (a ``GridCorrelation.to_json()``) in words (:meth:`GridCorrelation.describe`)."""
    ci = entry.get("ci95")
    return GridCorrelation(r=entry.get("r"), ci95=None if ci is None else tuple(ci), prompts=entry["prompts"],
                           cells=entry["cells"], resamples=entry["resamples"], valid_resamples=entry["valid_resamples"],
                           seed=entry["seed"], reason=entry.get("reason")).describe(escape)


def describe_entry(entry: Mapping, escape: Callable[[object], str] = str) -> str:
    """One kind's comparison of :func:`compare_to_backbone` in words: ``"r = 0.98 (95% CI 0.93 to 0.99, 12
    prompts); without the last token r = 0.98 (...)"``, or why it was not compared; ``escape`` is applied
    to the reasons (they may name result files)."""
    if "grid" not in entry:
        return f"not compared ({escape(entry.get('reason'))})"
    return (f"{describe_variant(entry['grid'], escape)}; without the last token "
            f"{describe_variant(entry['without_last'], escape)}")


def comparison_lines(document: Mapping) -> list[str]:
    """One line per compared pair and kind of a :func:`compare_to_backbone` document, e.g.
    ``"backbone vs SpiritLM T→T, hidden: r = 0.97 (95% CI 0.93 to 0.99, 12 prompts)"``."""
    lines = []
    for group, pair in document.get("pairs", {}).items():
        if pair.get("reason"):
            lines.append(f"backbone vs {group_name(group)}: not compared ({pair['reason']})")
        for kind, entry in pair.get("kinds", {}).items():
            lines.append(f"backbone vs {group_name(group)}, {kind}: {describe_entry(entry)}")
    return lines


__all__ = ["GridCorrelation", "INTERVAL", "PERCENTILES", "RESAMPLES", "SEED", "STATISTIC", "VARIANTS",
           "compare_to_backbone", "comparison_lines", "describe_entry", "describe_variant", "grid_correlation",
           "group_name", "mean_grid", "pearson"]
