"""``spiritlens experiment``: the paper's pipeline on Known (T->T and S->T), resumable and shardable.

With no checkpoints (no --checkpoints and $SPIRITLM_CHECKPOINTS_DIR unset) it runs the embedded
default: the toy SpiritLM (trained by spiritlens on Known facts, built once and cached under
~/.cache/spiritlens/toy-<hash>, or --toy DIR from ``spiritlens make-toy``) on the facts it knows,
with real filtering and pocketsphinx's real US-English model as the aligner. --random-weights runs
tiny random-weight checkpoints instead (a plumbing check: every prompt kept).
Every argument is checked before any work: a bad one is one line on stderr and exit status 2.
Sharded: ``torchrun --nproc-per-node N -m spiritlens experiment ...`` (each rank a disjoint share).
"""

from __future__ import annotations

import argparse


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment", help="run the Known experiment end to end (data, speech, filtering, tracing, report)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (resumable: rerun to continue)")
    parser.add_argument("--checkpoints", help="SpiritLM checkpoints folder (default: $SPIRITLM_CHECKPOINTS_DIR)")
    parser.add_argument("--variant", default="spirit-lm-base-7b")
    parser.add_argument("--aligner", help="S->T forced aligner: a character CTC model directory (the paper's path, "
                                          "e.g. hubert-large-ls960-ft) or 'pocketsphinx' (the embedded default)")
    parser.add_argument("--known", help="known_1000.json (default: $SPIRITLENS_KNOWN_PATH, the cache "
                        "~/.cache/spiritlens, ../shared/data next to a source checkout, or a download)")
    parser.add_argument("--prompts", type=int, dest="n_prompts", metavar="N",
                        help="use N Known prompts (a deterministic subset; default: all, or 6 when embedded)")
    parser.add_argument("--subset-seed", type=int, default=0)
    parser.add_argument("--modalities", type=_csv, default=("t2t", "s2t"), help="t2t,s2t")
    parser.add_argument("--kinds", type=_csv, default=("hidden", "mlp", "attn"), help="hidden,mlp,attn")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--noise", default="3s", help="absolute scale, or Ks (K sigma, ROME's default 3s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window", type=int, help="layers restored together for mlp/attn (default: ROME's 10 "
                        "of 32 scaled to the model's depth, max(1, floor(10 * layers / 32 + 1/2)))")
    parser.add_argument("--speech-sigma", choices=["speech", "text"], default="speech",
                        help="S->T noise sigma: over the subjects' speech tokens, or the text sigma")
    parser.add_argument("--row-mode", choices=["auto", "positions", "groups", "mean"], default="auto",
                        help="S->T rows: auto (text-token groups, as spiritlens trace), positions, groups, mean")
    parser.add_argument("--mapping", choices=["exact", "paper"], default="exact")
    parser.add_argument("--tts", default="espeak", help="espeak (offline default), flite, melotts")
    parser.add_argument("--asr", default="pocketsphinx", help="pocketsphinx, whisper, or none")
    parser.add_argument("--keep-all", action="store_true", help="trace every prompt, not only correct ones")
    parser.add_argument("--accept", type=_csv, default=("exact",), help="judgements counted correct: exact,partial")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16", help="bfloat16 (real checkpoints), float32, float16")
    parser.add_argument("--device")
    parser.add_argument("--max-batch-cells", type=int)
    parser.add_argument("--sample-figures", type=int, default=3, help="prompts per modality with figures")
    parser.add_argument("--toy", help="a toy SpiritLM tree (spiritlens make-toy DIR) for the embedded default")
    parser.add_argument("--random-weights", action="store_true",
                        help="embedded run on tiny random-weight checkpoints (plumbing check; keeps every prompt)")
    parser.add_argument("--no-crossmodal", dest="crossmodal", action="store_false",
                        help="skip the cross-modal analyses (spiritlens crossmodal) of facts kept in both modalities")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    from spiritlens.experiment import ExperimentConfig, run_experiment
    from spiritlens.experiment.runner import print_summary

    config = ExperimentConfig(
        out=args.out, checkpoints=args.checkpoints, variant=args.variant, aligner=args.aligner, known=args.known,
        n_prompts=args.n_prompts, subset_seed=args.subset_seed, modalities=args.modalities, kinds=args.kinds,
        samples=args.samples, noise=args.noise, seed=args.seed, window=args.window, speech_sigma=args.speech_sigma,
        row_mode=args.row_mode, mapping=args.mapping, tts=args.tts, asr=args.asr, keep_all=args.keep_all,
        accept=args.accept, max_new_tokens=args.max_new_tokens, dtype=args.dtype, device=args.device,
        max_batch_cells=args.max_batch_cells, sample_figures=args.sample_figures, toy=args.toy,
        random_weights=args.random_weights, crossmodal=args.crossmodal,
    )
    summary = run_experiment(config, progress=not args.quiet)
    if summary is not None:
        print_summary(summary)
        return 1 if summary["failed"] else 0
    return 0
