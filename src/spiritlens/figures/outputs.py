"""Aggregate outputs written together: ``aie.json``, one CSV per kind, the grid figures, and, when the
results hold the text-only backbone's traces, ``comparison.json`` (:mod:`spiritlens.aggregates.compare`)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from spiritlens._io import write_atomic
from spiritlens.aggregates.aie import (
    BACKBONE,
    CATEGORIES,
    KINDS,
    KindAggregate,
    aggregate_all,
    pooling_notes,
    aggregate_by_modality,
    split_backbone,
    to_aie_json,
)
from spiritlens.aggregates.compare import RESAMPLES, SEED, compare_to_backbone


@dataclass
class AggregateOutputs:
    """What :func:`write_aggregate_outputs` computed and wrote (file names relative to its folder)."""

    pooled: dict
    by_modality: dict
    written: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    comparison: dict | None = None  # comparison.json's document, with a backbone group


def _csv_table(kind: str, groups: Mapping[str, KindAggregate]) -> str:
    """CSV of one kind, [category x layer] per group (``groups`` maps a modality label to its aggregate):
    two rows per category, ``value`` ``effect`` (the per-prompt AIE the figures show) and ``aie`` (ROME's
    pooled AIE); ``rows`` and ``prompts`` count the category's rows and the prompts that have any."""
    n_layers = max(agg.n_layers for agg in groups.values())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["kind", "modality", "category", "value", "rows", "prompts",
                     *(f"layer_{l}" for l in range(n_layers))])
    for modality, agg in groups.items():
        for value, table in (("effect", agg.effect), ("aie", agg.aie)):
            for category in CATEGORIES:
                cells = ["" if v != v else f"{v:.6g}" for v in table[category]]  # NaN -> empty cell
                writer.writerow([kind, modality, category, value, agg.row_counts[category],
                                 agg.prompt_counts.get(category, 0), *cells])
    return buffer.getvalue()


def write_aggregate_outputs(results: list[dict], out: str | Path, *, epsilon: float | None = None,
                            resamples: int = RESAMPLES, seed: int = SEED) -> AggregateOutputs:
    """Aggregate ``results`` (dicts of trace JSON) and write ``aie.json``, ``aie_<kind>.csv``,
    ``aie_grid_log.png``, ``aie_grid_linear.png`` and ``aie_lines.png`` into ``out``, atomically.

    The text-only backbone's results (``model_role: "backbone"``) are a group of their own (the grids'
    first row, ``by_modality["backbone"]`` in ``aie.json``), never pooled with the others: the top-level
    (pooled) entries of ``aie.json`` and the CSVs' ``all`` rows are SpiritLM's results only. With a backbone
    group and another, ``comparison.json`` holds :func:`~spiritlens.aggregates.compare.compare_to_backbone`
    (``resamples`` bootstrap draws with ``seed``).

    Raises ValueError when there is nothing to average (no results, or only wrong predictions).
    """
    from spiritlens.figures.grid import DEFAULT_EPSILON

    out = Path(out)
    if not results:
        raise ValueError("no usable trace results")
    backbone, others = split_backbone(results)
    pooled = aggregate_all(others or backbone)
    by_modality = aggregate_by_modality(results)
    if sum(agg.count for agg in pooled.values()) == 0:
        raise ValueError(f"all {len(results)} results are wrong predictions (correct_prediction false); "
                         "nothing to average")
    outputs = AggregateOutputs(pooled, by_modality)
    outputs.notes += pooling_notes(results)
    write_atomic(out / "aie.json", json.dumps(to_aie_json(pooled, by_modality), indent=2, allow_nan=False) + "\n")
    outputs.written.append("aie.json")
    outputs.comparison = compare_to_backbone(results, resamples=resamples, seed=seed)
    if outputs.comparison is not None:
        write_atomic(out / "comparison.json", json.dumps(outputs.comparison, indent=2, allow_nan=False) + "\n")
        outputs.written.append("comparison.json")
    else:  # a comparison of an earlier run with a backbone no longer describes these results
        (out / "comparison.json").unlink(missing_ok=True)
    for kind in KINDS:
        groups = {modality: kinds[kind] for modality, kinds in by_modality.items() if kind in kinds}
        if not groups:
            continue
        if len([g for g in groups if g != BACKBONE]) > 1:
            groups["all"] = pooled[kind]  # SpiritLM's T→T and S→T pooled (never the backbone)
        write_atomic(out / f"aie_{kind}.csv", _csv_table(kind, groups))
        outputs.written.append(f"aie_{kind}.csv")
    try:
        from spiritlens.figures.grid import plot_aie_grid, plot_aie_lines  # matplotlib is the plots extra
    except ImportError as error:
        outputs.notes.append(f"figures skipped: {error}")
        return outputs
    plot_aie_grid(by_modality, out / "aie_grid_log.png", scale="log", epsilon=epsilon or DEFAULT_EPSILON)
    plot_aie_grid(by_modality, out / "aie_grid_linear.png", scale="linear")
    plot_aie_lines(by_modality, out / "aie_lines.png")
    outputs.written += ["aie_grid_log.png", "aie_grid_linear.png", "aie_lines.png"]
    return outputs
