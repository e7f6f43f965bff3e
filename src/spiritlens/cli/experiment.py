"""``spiritlens experiment``: the paper's pipeline on Known (T->T and S->T), resumable and shardable.

With no checkpoints (no --checkpoints and $SPIRITLM_CHECKPOINTS_DIR unset) it runs the embedded
default: the toy SpiritLM (trained by spiritlens on Known facts, built once and cached under
~/.cache/spiritlens/toy-<hash>, or --toy DIR from ``spiritlens make-toy``) on the facts it knows,
with real filtering and pocketsphinx's real US-English model as the aligner. --random-weights runs
tiny random-weight checkpoints instead (a plumbing check: every prompt kept).
Every argument is checked before any work: a bad one is one line on stderr and exit status 2.
Sharded: ``torchrun --nproc-per-node N -m spiritlens experiment ...`` (each rank a disjoint share).
The options are the fields of ``spiritlens.experiment.ExperimentConfig``, generated from it.
"""

from __future__ import annotations

import argparse

from spiritlens.cli.config_args import add_config_arguments, config_from_args
from spiritlens.experiment.config import ExperimentConfig


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment", help="run the Known experiment end to end (data, speech, filtering, tracing, report)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, ExperimentConfig)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    from spiritlens.experiment import run_experiment
    from spiritlens.experiment.runner import print_summary

    config = config_from_args(ExperimentConfig, args)
    summary = run_experiment(config, progress=not args.quiet)
    if summary is not None:
        print_summary(summary)
        return 1 if summary["failed"] or (summary.get("expressive") or {}).get("failed") else 0
    return 0
