"""spiritlens aggregate RESULTS_DIR --out DIR: AIE per token category and layer, over prompts.

Writes, atomically, into DIR:

- aie.json: per kind the AIE, per-prompt effects, CIs and counts (README, "JSON outputs");
- aie_<kind>.csv: per group, category and layer the per-prompt AIE ("effect") and ROME's pooled AIE
  ("aie"), with the category's row and prompt counts;
- aie_grid_log.png (log colour scale, AIE clipped at --epsilon), aie_grid_linear.png (ROME's clip at 0,
  hidden-kind maximum) and aie_lines.png (ROME's line plots with 95% bands);
- comparison.json when the results hold a text-only backbone's (an experiment's results/ with its
  baseline row): Pearson r of the grids with a bootstrap CI, also printed.

The figures and the summary printed here show the per-prompt AIE (each prompt's rows against its own
corrupted score, then the mean over prompts) with its 95% t-interval over prompts; a kind whose every
indirect effect is within float32 rounding says "no effect" instead of a peak. Exact traces and
attribution estimates are never averaged together; the same input traced twice, differing noise
settings, explicit targets and low-confidence alignments are reported on stderr.

Result files that cannot be used are listed on stderr and skipped; no usable result is an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spiritlens.aggregates import load_results
from spiritlens.aggregates.aie import group_labels
from spiritlens.figures.outputs import write_aggregate_outputs
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


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {args.out!r} is an existing file; give a folder for aie.json and the figures")
    problems: list[str] = []
    results = load_results(args.results_dir, problems)
    for problem in problems:
        print(f"spiritlens aggregate: skipped {problem}", file=sys.stderr)
    if not results:
        raise ValueError(f"no usable trace results in {args.results_dir!r} ({len(problems)} file(s) skipped)")
    try:
        outputs = write_aggregate_outputs(results, out, epsilon=args.epsilon)
    except ValueError as error:
        raise ValueError(f"{error} (results in {args.results_dir!r})") from None
    pooled, by_modality, written = outputs.pooled, outputs.by_modality, outputs.written
    for note in outputs.notes:
        print(f"spiritlens aggregate: {note}", file=sys.stderr)

    excluded = sum(agg.excluded for agg in pooled.values())
    print(
        f"aggregated {len(results)} results ({excluded} wrong predictions excluded, "
        f"{len(problems)} files skipped) into {out}: {', '.join(written)}"
    )
    labels = group_labels(by_modality)
    for modality, kinds in by_modality.items():
        for kind, agg in kinds.items():
            ate = "n/a" if agg.count == 0 else f"{agg.ate:.4g}"
            print(f"  {labels[modality]} {kind:<6} n={agg.count:<5} ATE {ate:<8} {agg.describe_peak()}")
    if outputs.comparison is not None:
        from spiritlens.aggregates.compare import comparison_lines

        for line in comparison_lines(outputs.comparison):
            print(f"  {line}")
    return 0
