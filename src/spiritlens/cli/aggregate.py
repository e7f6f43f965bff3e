"""``spiritlens aggregate RESULTS_DIR --out DIR``: AIE per token category and layer, over prompts.

Writes, atomically, into DIR:

- ``aie.json``: the DESIGN.md contract (see ``spiritlens.aggregates.to_aie_json``);
- ``aie_<kind>.csv``: AIE per (modality, category) x layer, with row counts;
- ``aie_grid_log.png`` (log colour scale, AIE clipped at ``--epsilon``), ``aie_grid_linear.png``
  (ROME's clip at 0, hidden-kind maximum) and ``aie_lines.png`` (ROME's line plots with 95% bands).

Result files that cannot be used are listed on stderr and skipped; no usable result is an error.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from spiritlens.aggregates import (
    CATEGORIES,
    KINDS,
    MODALITY_LABELS,
    KindAggregate,
    aggregate_all,
    aggregate_by_modality,
    load_results,
    to_aie_json,
)
from spiritlens._io import write_atomic
from spiritlens.figures.grid import DEFAULT_EPSILON


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "aggregate",
        help="average indirect effects per token category and layer over trace results",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="folder of trace result *.json files (searched recursively)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for aie.json, CSV tables and figures")
    parser.add_argument(
        "--epsilon",
        type=_positive_float,
        default=DEFAULT_EPSILON,
        metavar="E",
        help=f"floor for the log-scale grid: AIE below E is drawn as E (default {DEFAULT_EPSILON:g})",
    )
    parser.set_defaults(func=run)


def _csv_table(kind: str, groups: Mapping[str, KindAggregate]) -> str:
    """CSV of AIE [category x layer] for one kind; ``groups`` maps a modality label to its aggregate."""
    n_layers = max(agg.n_layers for agg in groups.values())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["kind", "modality", "category", "rows", "prompts", *(f"layer_{l}" for l in range(n_layers))])
    for modality, agg in groups.items():
        aie = agg.aie
        for category in CATEGORIES:
            values = ["" if v != v else f"{v:.6g}" for v in aie[category]]  # NaN -> empty cell
            writer.writerow([kind, modality, category, agg.row_counts[category], agg.count, *values])
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    problems: list[str] = []
    results = load_results(args.results_dir, problems)
    for problem in problems:
        print(f"spiritlens aggregate: skipped {problem}", file=sys.stderr)
    if not results:
        raise ValueError(f"no usable trace results in {args.results_dir!r} ({len(problems)} file(s) skipped)")
    pooled = aggregate_all(results)
    by_modality = aggregate_by_modality(results)
    if sum(agg.count for agg in pooled.values()) == 0:
        raise ValueError(
            f"all {len(results)} results in {args.results_dir!r} are wrong predictions "
            "(correct_prediction false); nothing to average"
        )

    write_atomic(out / "aie.json", json.dumps(to_aie_json(pooled, by_modality), indent=2, allow_nan=False) + "\n")
    written = ["aie.json"]
    for kind in KINDS:
        groups = {modality: kinds[kind] for modality, kinds in by_modality.items() if kind in kinds}
        if not groups:
            continue
        if len(groups) > 1:
            groups["all"] = pooled[kind]
        write_atomic(out / f"aie_{kind}.csv", _csv_table(kind, groups))
        written.append(f"aie_{kind}.csv")
    try:
        from spiritlens.figures.grid import plot_aie_grid, plot_aie_lines  # matplotlib is the plots extra

        plot_aie_grid(by_modality, out / "aie_grid_log.png", scale="log", epsilon=args.epsilon)
        plot_aie_grid(by_modality, out / "aie_grid_linear.png", scale="linear")
        plot_aie_lines(by_modality, out / "aie_lines.png")
        written += ["aie_grid_log.png", "aie_grid_linear.png", "aie_lines.png"]
    except ImportError as error:
        print(f"spiritlens aggregate: figures skipped: {error}", file=sys.stderr)

    excluded = sum(agg.excluded for agg in pooled.values())
    print(
        f"aggregated {len(results)} results ({excluded} wrong predictions excluded, "
        f"{len(problems)} files skipped) into {out}: {', '.join(written)}"
    )
    for modality, kinds in by_modality.items():
        for kind, agg in kinds.items():
            peak = agg.peak()
            where = "no rows" if peak is None else f"peak AIE {peak[2]:.4g} at {peak[0]}, layer {peak[1]}"
            ate = "n/a" if agg.count == 0 else f"{agg.ate:.4g}"
            print(f"  {MODALITY_LABELS.get(modality, modality)} {kind:<6} n={agg.count:<5} ATE {ate:<8} {where}")
    return 0
