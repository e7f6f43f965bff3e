"""``spiritlens make-tiny DIR``: write tiny random SpiritLM checkpoints in SpiritLM's layout."""

from __future__ import annotations

from spiritlens.models.spiritlm.tree import MODEL_FOLDER, SPEECH_TOKENIZER_FOLDER


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-tiny",
        help="write a tiny random-weight $SPIRITLM_CHECKPOINTS_DIR tree (for tests and demos)",
    )
    parser.add_argument("out", help=f"directory to write ({MODEL_FOLDER}/, {SPEECH_TOKENIZER_FOLDER}/ inside)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true",
                        help="overwrite the files of model folders that already exist (refused otherwise)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from spiritlens.synthetic.tiny import make_tiny_checkpoints

    root = make_tiny_checkpoints(args.out, seed=args.seed, force=args.force)
    print(f"tiny SpiritLM checkpoints (random weights) written to {root}")
    return 0
