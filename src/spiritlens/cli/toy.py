"""``spiritlens make-toy DIR``: train the toy SpiritLM (a small Llama that knows Known facts) into DIR.

DIR becomes a ``$SPIRITLM_CHECKPOINTS_DIR`` tree (``spiritlm_model/spirit-lm-base-7b``,
``speech_tokenizer/``) with ``toy_manifest.json`` and the measured accuracy in
``spiritlm_model/spirit-lm-base-7b/toy_report.json``, and the text-only toy backbone it was
continued from in ``backbone/llama-2-7b-hf`` (Llama-2-7b-hf's layout, its own ``toy_report.json``). A DIR already holding the same toy is
reused; see ``spiritlens.synthetic.toy.build`` for what it is trained on.

``--expressive`` also trains the toy SpiritLM Expressive beside it (``spiritlm_model/spirit-lm-expressive-7b``,
the tiny pitch quantizer and style encoder in ``speech_tokenizer/``; ``toy_expressive_manifest.json``),
continued from the same backbone on the same facts with HuBERT, pitch and style tokens; ``--prosody``
chooses its training design (``spiritlens.synthetic.toy.expressive``).
"""

from __future__ import annotations

import argparse

from spiritlens.synthetic.toy.config import PROSODY_DESIGNS


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
    parser.add_argument("--expressive", action="store_true",
                        help="also train the toy SpiritLM Expressive (pitch and style tokens) beside it")
    parser.add_argument("--prosody", choices=PROSODY_DESIGNS, default=None,
                        help="with --expressive: decorrelated (default: each spoken prompt also trained with another "
                             "prompt's pitch and style, so prosody carries no fact) or free (its own streams only)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import replace

    from spiritlens.synthetic.toy.config import ExpressiveToyConfig, ToyConfig
    from spiritlens.synthetic.toy.build import make_toy
    from spiritlens.synthetic.toy.cache import read_expressive_manifest, read_manifest

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.prosody is not None and not args.expressive:
        raise ValueError("--prosody needs --expressive")
    config = replace(ToyConfig.small() if args.small else ToyConfig(), seed=args.seed)
    expressive = ExpressiveToyConfig(prosody=args.prosody or PROSODY_DESIGNS[0]) if args.expressive else False
    root = make_toy(args.out, config, known=args.known, progress=not args.quiet, force=args.force,
                    expressive=expressive)
    manifest = read_manifest(root)
    accuracy = ", ".join(f"{m} {a:.0%}" for m, a in manifest["accuracy"].items())
    print(f"toy SpiritLM in {root}: {len(manifest['inputs']['facts'])} Known facts, exact greedy answers {accuracy}"
          + ("" if manifest["meets_targets"] else " (BELOW the targets)"))
    backbone = manifest["backbone"]
    print(f"toy backbone in {root / manifest['backbone_dir']}: exact greedy answers from text "
          f"{backbone['accuracy']['t2t']:.0%}" + ("" if backbone["meets_targets"] else " (BELOW the target)"))
    if args.expressive:
        manifest = read_expressive_manifest(root)
        accuracy = ", ".join(f"{m} {a:.0%}" for m, a in manifest["accuracy"].items())
        probes = manifest["prosody"]["probes"]
        follows = "; ".join(f"{name.replace('_', ' ')}: {p['words']}/{p['total']} answers follow the words, "
                            f"{p['prosody']} the prosody" for name, p in probes.items())
        print(f"toy SpiritLM Expressive in {root / manifest['model_dir']} (prosody {manifest['prosody']['design']}): "
              f"exact greedy answers {accuracy}" + ("" if manifest["meets_targets"] else " (BELOW the targets)")
              + f"; {follows}")
    return 0
