"""``spiritlens crossmodal``: does the speech pathway use the text mechanism? Three analyses.

    spiritlens crossmodal fact --model DIR --prompt TEXT --subject TEXT --audio WAV --aligner DIR --out DIR
    spiritlens crossmodal experiment RUN_DIR

``fact`` runs cross-modal patching, representation geometry and the logit lens on one fact (a
text prompt and a recording of it) and writes ``patching.json``, ``geometry.json``,
``logit_lens.json``, ``summary.json`` and their figures into ``--out``. ``experiment`` runs them
on every fact kept in both Known-t2t and Known-s2t of a ``spiritlens experiment`` output folder,
into ``RUN_DIR/crossmodal/`` (resumable: finished per-fact results are kept).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spiritlens.checkpoints.tree import DTYPE_RULE

ANALYSIS_NAMES = {"patching": "patching", "geometry": "geometry", "logit-lens": "logit_lens",
                  "logit_lens": "logit_lens", "lens": "logit_lens"}
DIRECTION_NAMES = {"text-to-speech": "text_to_speech", "text_to_speech": "text_to_speech", "t2s": "text_to_speech",
                   "speech-to-text": "speech_to_text", "speech_to_text": "speech_to_text", "s2t": "speech_to_text"}
MODE_NAMES = {"last": "last", "groups": "groups"}


def _listed(text: str, names: dict[str, str], option: str) -> tuple[str, ...]:
    """A comma-separated option value mapped to canonical names; ValueError naming the option."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    unknown = [item for item in items if item not in names]
    if not items or unknown:
        shown = ", ".join(dict.fromkeys(k for k in names if "_" not in k))
        raise ValueError(f"{option} {text!r} is not a comma-separated list of {shown}")
    return tuple(dict.fromkeys(names[item] for item in items))


def _at_least_one(value: int, option: str) -> int:
    if value < 1:
        raise ValueError(f"{option} must be >= 1, got {value}")
    return value


def _choices(args) -> None:
    """Check and normalise the shared options in place (one-line errors, exit 2)."""
    args.analyses = _listed(args.analyses, ANALYSIS_NAMES, "--analyses")
    args.modes = _listed(args.modes, MODE_NAMES, "--modes")
    args.directions = _listed(args.directions, DIRECTION_NAMES, "--directions")
    _at_least_one(args.max_batch_rows, "--max-batch-rows")


def _common(parser) -> None:
    parser.add_argument("--analyses", default="patching,geometry,logit-lens",
                        help="comma-separated: patching, geometry, logit-lens (default: all three)")
    parser.add_argument("--modes", default="last,groups",
                        help="patching modes: last (last subject position), groups (every subject token and its "
                             "aligned speech group) (default: both)")
    parser.add_argument("--directions", default="text-to-speech,speech-to-text",
                        help="patching directions: text-to-speech, speech-to-text (default: both)")
    parser.add_argument("--max-batch-rows", type=int, default=64, help="rows per batched forward (default 64)")
    parser.add_argument("--device", default=None, help="torch device (default: cpu, or the experiment's)")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "crossmodal",
        help="does the speech pathway use the text mechanism? cross-modal patching, geometry, logit lens",
        description=__doc__.split("\n\n", 1)[1].replace("``", "") if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="crossmodal_command", required=True, metavar="{fact,experiment}")

    fact = sub.add_parser("fact", help="one fact: a text prompt and a recording of it",
                          description="The three cross-modal analyses of one fact; JSON and PNG files in --out.")
    fact.add_argument("--model", required=True, help="SpiritLM model directory or variant name")
    fact.add_argument("--prompt", required=True, help="the text prompt, e.g. 'The Space Needle is located in the city of'")
    fact.add_argument("--subject", required=True, help="the subject's text in the prompt")
    fact.add_argument("--audio", required=True, help="the spoken prompt (audio file)")
    fact.add_argument("--transcript", help="what the audio says (default: the prompt; must tokenise like it)")
    fact.add_argument("--aligner", required=True,
                      help="forced aligner: a character CTC model directory (the paper's path) or 'pocketsphinx'")
    fact.add_argument("--speech-tokenizer", help="speech-tokenizer folder (default: from $SPIRITLM_CHECKPOINTS_DIR)")
    fact.add_argument("--mapping", choices=["exact", "paper"], default="exact",
                      help="speech-token mapping: token frame spans (exact, default) or the paper's formula")
    fact.add_argument("--first-occurrence", action="store_true",
                      help="if the subject occurs more than once, use the first occurrence (ROME's rule)")
    fact.add_argument("--noise", default="3s", help="noise rule as in `spiritlens trace` (default 3s)")
    fact.add_argument("--sigma", type=float, help="sigma of the text run for a Ks noise rule")
    fact.add_argument("--speech-sigma", default="text",
                      help="sigma of the spoken run: a number, or 'text' to use the text sigma (default)")
    fact.add_argument("--known", help="known_1000.json: measure the text sigma over its subjects (ROME's rule); "
                      "default: the lookup rule of spiritlens trace ($SPIRITLENS_KNOWN_PATH, the cache, "
                      "../shared/data next to a source checkout, or a download)")
    fact.add_argument("--samples", type=int, default=10, help="noised samples per run (default 10)")
    fact.add_argument("--seed", type=int, default=1, help="numpy seed of the noise draw (default 1)")
    fact.add_argument("--target-id", type=int, help="answer token id (default: each run's top-1, the tracer's rule)")
    fact.add_argument("--dtype", default="auto", help=f"model dtype: {DTYPE_RULE}; or float32, bfloat16, float16 "
                                                        "(default: auto)")
    fact.add_argument("--out", required=True, help="output folder")
    _common(fact)
    fact.set_defaults(func=run_fact)

    experiment = sub.add_parser(
        "experiment", help="every fact kept in both Known-t2t and Known-s2t of a `spiritlens experiment` folder",
        description="The three cross-modal analyses over an experiment's facts, into RUN_DIR/crossmodal/ "
                    "(the experiment's model, aligner, noise, samples, seed and sigmas; resumable).")
    experiment.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of `spiritlens experiment`")
    experiment.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(experiment)
    experiment.set_defaults(func=run_experiment)


def _sigmas(model, args, needs_sigma: bool) -> tuple[dict, dict]:
    """(sigma per modality, where each came from) for the fact command."""
    from spiritlens.traces import subject_sigma
    from spiritlens.traces.noise import check_sigma

    if not needs_sigma:
        return {"text": None, "speech": None}, {}
    text, source = args.sigma, "--sigma"
    if text is None:  # Known by the one lookup rule, as spiritlens trace finds it
        from spiritlens.cli.trace import _known_for_sigma

        records = _known_for_sigma(args)
        text = subject_sigma(model, [r.subject for r in records], modality="text")
        source = f"subjects of {records.source}"
    if args.speech_sigma == "text":
        return {"text": text, "speech": text}, {"text": source, "speech": f"the text sigma ({source})"}
    try:
        speech = float(args.speech_sigma)
    except ValueError:
        raise ValueError(f"--speech-sigma {args.speech_sigma!r} must be a number or 'text'") from None
    check_sigma(speech, "--speech-sigma")
    return {"text": text, "speech": speech}, {"text": source, "speech": "--speech-sigma"}


def run_fact(args) -> int:
    import warnings

    from spiritlens import HookedSpiritLM
    from spiritlens.align import LowAlignmentConfidence
    from spiritlens.audio.waveform import load_audio
    from spiritlens.cli.paths import check_aligner, check_output_dir
    from spiritlens.crossmodal import CrossModalFact, CrossModalSummary, analyze_fact
    from spiritlens.figures.crossmodal import write_fact_outputs
    from spiritlens.traces import parse_noise
    from spiritlens.traces.noise import check_sigma
    from spiritlens.checkpoints.schema import check_samples

    _choices(args)
    check_samples(_at_least_one(args.samples, "--samples"), "--samples")
    spec = parse_noise(args.noise)
    check_sigma(args.sigma, "--sigma")
    # every path before the model loads, not after the analyses (spiritlens.cli.paths)
    check_output_dir(args.out, "--out")
    check_aligner(args.aligner)
    load_audio(args.audio)  # a missing, unreadable or empty audio file is refused here
    model = HookedSpiritLM.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                           speech_tokenizer=args.speech_tokenizer)
    sigma, sources = _sigmas(model, args, spec.needs_sigma and "patching" in args.analyses)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LowAlignmentConfidence)
        fact = CrossModalFact.from_audio(model, args.audio, prompt=args.prompt, subject=args.subject,
                                         aligner=args.aligner, transcript=args.transcript, mapping=args.mapping,
                                         occurrence="first" if args.first_occurrence else "unique")
    for warning in caught:
        print(f"spiritlens crossmodal: warning: {warning.message}", file=sys.stderr)
    results = analyze_fact(model, fact, analyses=args.analyses, noise=spec.text if spec.kind != "absolute"
                           else spec.factor, sigma=sigma, samples=args.samples, seed=args.seed, modes=args.modes,
                           directions=args.directions, target=args.target_id, max_batch_rows=args.max_batch_rows)
    if "patching" in results:
        results["patching"].settings["sigma_source"] = sources
    paths = write_fact_outputs(results, Path(args.out))
    summary = CrossModalSummary.load(Path(args.out) / "summary.json")
    for line in summary.findings():
        print(line)
    print(f"wrote {', '.join(p.name for p in paths)} to {args.out}")
    return 0


def run_experiment(args) -> int:
    from spiritlens.crossmodal import CrossModalSummary
    from spiritlens.experiment.crossmodal import run_experiment_dir

    _choices(args)
    status = run_experiment_dir(args.run_dir, analyses=args.analyses, modes=args.modes, directions=args.directions,
                                max_batch_rows=args.max_batch_rows, device=args.device, progress=not args.quiet,
                                log=lambda message: print(message, file=sys.stderr, flush=True))
    out = Path(args.run_dir) / "crossmodal"
    summary = CrossModalSummary.load(out / "summary.json")
    for line in summary.findings():
        print(line)
    print(f"{len(status['facts'])} facts: {len(status['computed'])} computed, {len(status['reused'])} reused, "
          f"{len(status['failed'])} failed; wrote {', '.join(status['written'])} to {out}")
    for failure in status["failed"]:
        print(f"  failed fact {failure['fact']}: {failure['reason']}")
    return 1 if status["failed"] else 0
