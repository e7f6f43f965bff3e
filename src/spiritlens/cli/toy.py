"""``spiritlens make-toy DIR``: train the toy SpiritLM (a small Llama that knows Known facts) into DIR.

DIR becomes a ``$SPIRITLM_CHECKPOINTS_DIR`` tree (``spiritlm_model/spirit-lm-base-7b``,
``speech_tokenizer/``) with ``toy_manifest.json`` and the measured accuracy in
``spiritlm_model/spirit-lm-base-7b/toy_report.json``, and the text-only toy backbone it was
continued from in ``backbone/llama-2-7b-hf`` (Llama-2-7b-hf's layout, its own ``toy_report.json``). A DIR already holding the same toy is
reused; see ``spiritlens.synthetic.toy.build`` for what it is trained on.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-toy", help="train the toy SpiritLM on Known facts (SpiritLM's checkpoint layout)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", metavar="DIR", help="folder to write (a new or empty folder, or a previous toy)")
    parser.add_argument("--known", help="known_1000.json (default: $SPIRITLENS_KNOWN_PATH, the cache, or download)")
    parser.add_argument("--small", action="store_true", help="a few facts and a narrower model, trained in seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="retrain even if DIR holds the same toy")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import replace

    from spiritlens.synthetic.toy.config import ToyConfig
    from spiritlens.synthetic.toy.build import make_toy
    from spiritlens.synthetic.toy.cache import read_manifest

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    config = replace(ToyConfig.small() if args.small else ToyConfig(), seed=args.seed)
    root = make_toy(args.out, config, known=args.known, progress=not args.quiet, force=args.force)
    manifest = read_manifest(root)
    accuracy = ", ".join(f"{m} {a:.0%}" for m, a in manifest["accuracy"].items())
    print(f"toy SpiritLM in {root}: {len(manifest['inputs']['facts'])} Known facts, exact greedy answers {accuracy}"
          + ("" if manifest["meets_targets"] else " (BELOW the targets)"))
    backbone = manifest["backbone"]
    print(f"toy backbone in {root / manifest['backbone_dir']}: exact greedy answers from text "
          f"{backbone['accuracy']['t2t']:.0%}" + ("" if backbone["meets_targets"] else " (BELOW the target)"))
    return 0
