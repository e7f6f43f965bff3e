"""``spiritlens trace``: causal trace of one prompt (text, or speech with its transcript)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from spiritlens.checkpoints.tree import DTYPE_RULE
from spiritlens.terms import KINDS, VERIFY_RANKS
from spiritlens.traces.methods import TRACE_METHODS, methods_help

METHOD_HELP = "how the cells are computed (default exact): " + methods_help()


KNOWN_HELP = ("known_1000.json, whose subjects give sigma for a Ks noise rule (ROME's rule) (default: "
              "$SPIRITLENS_KNOWN_PATH, the cache ~/.cache/spiritlens, ../shared/data next to a source checkout, "
              "or a download)")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="causal trace of one prompt: JSON result (contract fields) and a heatmap PNG",
        description="ROME-style causal tracing: noise the subject's embeddings, restore one state "
                    "per (token, layer), record the answer's probability. The answer is the clean "
                    "top-1 among the tokens the output modality allows (greedy generation's first "
                    "token) unless --target or --target-id is given.",
    )
    parser.add_argument("--model", required=True, help="SpiritLM model directory or variant name")
    parser.add_argument("--tokenization", choices=["spiritlm", "transformers"], default="spiritlm",
                        help="SpiritLM's own tokenisation (transformers 4.x slow LlamaTokenizer), or the "
                             "installed transformers' LlamaTokenizer")
    source = parser.add_argument_group("prompt")
    source.add_argument("--prompt", help="text prompt (T->T)")
    source.add_argument("--audio", help="spoken prompt audio file (S->T); needs --transcript")
    source.add_argument("--transcript", help="what the audio says (for the alignment)")
    source.add_argument("--aligner", help="forced aligner for speech: a CTC model directory (HubertForCTC/"
                                          "Wav2Vec2ForCTC, the paper's path) or the word 'pocketsphinx' (offline)")
    source.add_argument("--speech-tokenizer",
                        help="speech-tokenizer folder (default: $SPIRITLM_CHECKPOINTS_DIR/speech_tokenizer)")
    source.add_argument("--mapping", choices=["exact", "paper"], default="exact",
                        help="speech-token mapping: token frame spans (exact) or the paper's formula 2")
    source.add_argument("--row-mode", choices=["auto", "positions", "groups", "mean", "streams"], default="auto",
                        help="rows: auto (text-token groups restored together for a spoken prompt, one row "
                             "per position for text), positions, groups, per-position rows averaged by "
                             "group (mean), or for SpiritLM Expressive the subject's groups split into its HuBERT, "
                             "pitch and style tokens (streams)")
    source.add_argument("--noise-streams", metavar="STREAMS",
                        help="SpiritLM Expressive, spoken prompt: noise only the subject's tokens of these streams, "
                             "comma-separated: hubert,pitch,style (default: the subject's whole position range)")
    parser.add_argument("--subject", help="the subject's text in the prompt (or transcript); surrounding "
                                          "spaces are ignored")
    parser.add_argument("--subject-range", help="subject token positions B:E (half-open), instead of --subject")
    parser.add_argument("--first-occurrence", action="store_true",
                        help="if the subject occurs more than once, use the first occurrence (ROME's rule)")
    parser.add_argument("--kind", default="hidden", choices=KINDS,
                        help="restored state: hidden (residual), mlp or attn outputs (with --window)")
    parser.add_argument("--samples", type=int, default=10, help="corrupted runs averaged per cell")
    parser.add_argument("--noise", default="3s", help="ROME's noise rule: a number x (Gaussian x*z, e.g. 0.13); Ks (K x sigma of the "
                        "subjects' embeddings); Kv (K x the std of the modality's embedding rows); uK "
                        "(uniform K*u, u ~ U(-1, 1))")
    parser.add_argument("--sigma", type=float, help="sigma for a Ks noise rule (default: measured over the "
                                                    "subjects of --known)")
    parser.add_argument("--known", help=KNOWN_HELP)
    parser.add_argument("--seed", type=int, default=1, help="numpy RandomState seed of the noise")
    parser.add_argument("--window", type=int, default=None,
                        help="layers restored together for mlp/attn (default: ROME's 10 of 32 layers scaled to the "
                             "model's depth, max(1, floor(10 * layers / 32 + 1/2)): 10 for SpiritLM)")
    parser.add_argument("--replace", action="store_true", help="overwrite the subject embeddings with noise")
    target = parser.add_argument_group("answer")
    target.add_argument("--target", help="target continuation, tokenised after the prompt (a leading space is "
                                         "added to start a new word); several tokens need --target-rule "
                                         "(default: the clean top-1 among the allowed tokens)")
    target.add_argument("--target-rule", choices=["first_token", "sequence"],
                        help="first_token (ROME: the first piece's probability) or sequence (the whole "
                             "target's teacher-forced probability: the product of its pieces' probabilities)")
    target.add_argument("--target-id", type=int, help="target token id, instead of --target")
    parser.add_argument("--attribute", help="expected answer; sets correct_prediction")
    parser.add_argument("--dtype", default="auto", help=f"model dtype: {DTYPE_RULE}; or float32, bfloat16, float16 "
                                                          "(default: auto)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--max-batch-cells", type=int, help="cap on cells per batched forward")
    parser.add_argument("--method", choices=TRACE_METHODS, default="exact", help=METHOD_HELP)
    parser.add_argument("--verify-top", type=int, metavar="K",
                        help="with an attribution --method: trace the estimate's top K cells exactly and record "
                             "how many it confirms (extra field 'verification')")
    parser.add_argument("--verify-rank", choices=VERIFY_RANKS, default="estimate",
                        help="which cells --verify-top takes: the largest estimated effects, or the largest GradDrop "
                             "magnitudes (one backward per layer)")
    parser.add_argument("--json", required=True, help="output JSON path")
    parser.add_argument("--png", help="heatmap PNG path (default: next to the JSON)")
    parser.add_argument("--alignment-png", help="alignment figure PNG for speech prompts (default: next to the JSON)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.epilog = ("Exit status: 0 done; 1 done but the speech alignment was flagged (low confidence: the "
                     "transcript may not match the audio; the result records it); 2 bad input.")
    parser.set_defaults(func=run)


def _subject_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        b, e = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--subject-range {text!r} must be B:E, two integers") from None
    return b, e


def run(args) -> int:
    from spiritlens import HookedSpiritLM
    from spiritlens._io import save_or_rescue
    from spiritlens.checkpoints.schema import check_samples
    from spiritlens.figures.heatmap import plot_trace_heatmap
    from spiritlens.traces import parse_noise, subject_sigma, trace
    from spiritlens.traces.noise import check_sigma

    if (args.prompt is None) == (args.audio is None):
        raise ValueError("give exactly one of --prompt (text) or --audio (speech)")
    if args.subject is None and args.subject_range is None:
        raise ValueError("give --subject or --subject-range")
    if args.target is not None and args.target_id is not None:
        raise ValueError("give --target or --target-id, not both")
    subject_range = _subject_range(args.subject_range)
    if args.verify_top is not None:
        if args.method == "exact":
            raise ValueError("--verify-top checks a screen: give --method attribution or attribution_qk")
        if args.verify_top < 1:
            raise ValueError(f"--verify-top must be an integer >= 1, got {args.verify_top}")
    check_samples(args.samples, "--samples")
    spec = parse_noise(args.noise)
    check_sigma(args.sigma, "--sigma")
    noise_streams = None
    if args.noise_streams is not None or args.row_mode == "streams":
        from spiritlens.traces.streams import check_streams

        if args.audio is None:
            raise ValueError("--noise-streams and --row-mode streams need a spoken prompt (--audio) on SpiritLM "
                             "Expressive")
        if args.noise_streams is not None:
            noise_streams = check_streams([s.strip() for s in args.noise_streams.split(",") if s.strip()],
                                          "--noise-streams")
    _check_paths(args)  # every path before the model loads: a minute of loading, or a finished trace, is not lost
    sigma = args.sigma
    records = _known_for_sigma(args) if spec.needs_sigma and sigma is None else None  # read before the model
    model = HookedSpiritLM.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                           speech_tokenizer=args.speech_tokenizer, tokenization=args.tokenization,
                                           progress=not args.quiet)
    print(f"tokenizer: {model.tokenization.describe()}")
    sigma_record = {"sigma_source": "--sigma"} if sigma is not None else {}
    if records is not None:
        sigma = subject_sigma(model, [r.subject for r in records], modality="text")
        sigma_record = {"sigma_source": f"subjects of {records.source}", "sigma_modality": "text"}
    if sigma is not None:
        print(f"sigma {sigma:.5g} ({sigma_record['sigma_source']})")
    json_path = Path(args.json)
    extra = {}
    prompt = args.prompt
    if args.audio is not None:
        prompt, extra = _speech_prompt(model, args, json_path)
    result = trace(
        model, prompt, args.subject if args.audio is None else None, kind=args.kind, samples=args.samples,
        noise=spec.text if spec.kind != "absolute" else spec.factor, seed=args.seed, window=args.window,
        sigma=sigma, replace=args.replace, target=args.target if args.target_id is None else args.target_id,
        target_rule=args.target_rule, subject_range=subject_range,
        occurrence="first" if args.first_occurrence else "unique", row_mode=args.row_mode,
        attribute=args.attribute, max_batch_cells=args.max_batch_cells, progress=not args.quiet,
        name=json_path.stem, method=args.method, verify_top=args.verify_top, verify_rank=args.verify_rank,
        noise_streams=noise_streams,
    )
    result.extra.update(extra, **sigma_record, tokenization=model.tokenization.to_dict())
    from spiritlens.cli import print_json_last_resort  # a finished trace is never lost to an output error
    save_or_rescue(result.save, json_path, "trace", last_resort=lambda: print_json_last_resort(result.to_json()))
    png = Path(args.png) if args.png else json_path.with_suffix(".png")
    plot_trace_heatmap(result, png)
    print(f"answer {result.answer!r} ({result.answer_rule}): high {result.high_score:.4f}, "
          f"low {result.low_score:.4f}; method {result.method}; wrote {json_path} (with its arrays, "
          f"{json_path.with_suffix('.npz')}) and {png}")
    if "verification" in result.extra:
        record = result.extra["verification"]
        print(f"verified: {record['confirmed']} of the estimate's top {record['verify_top']} cells confirmed "
              f"by the exact trace ({record['confirm_rule']})")
    if result.extra.get("alignment_low_confidence"):
        # The trace is written (flagged in its JSON), but its subject positions may be wrong.
        print(f"spiritlens trace: warning: alignment flagged (confidence {result.extra['alignment_confidence']:.3f}"
              f", the aligner's threshold {result.extra.get('alignment_min_confidence')}): the transcript may not "
              f"match the audio; {json_path} records alignment_low_confidence: true", file=sys.stderr)
        return 1
    return 0


def _check_paths(args) -> None:
    """The outputs can be written, and for a spoken prompt the audio reads and the aligner exists
    (one-line ValueError naming the option; :mod:`spiritlens.cli.paths`)."""
    from spiritlens.cli.paths import check_aligner, check_output_file

    json_path = Path(args.json)
    check_output_file(json_path, "--json")
    check_output_file(args.png or json_path.with_suffix(".png"), "--png")
    if args.audio is not None:
        if not args.transcript:
            raise ValueError("--audio needs --transcript (what the audio says)")
        if not args.aligner:
            raise ValueError("--audio needs --aligner (a CTC model directory, or 'pocketsphinx')")
        if args.subject is None:
            raise ValueError("--audio needs --subject (the subject's text in the transcript)")
        check_aligner(args.aligner)
        from spiritlens.audio.waveform import load_audio

        load_audio(args.audio)  # a missing, unreadable or empty audio file is refused here, not after loading
        check_output_file(args.alignment_png or json_path.with_name(json_path.stem + "_alignment.png"),
                          "--alignment-png")


def _known_for_sigma(args):
    """Known's records by the one lookup rule (spiritlens.data.known), or a one-line error."""
    from spiritlens.data import KnownDataUnavailable, load_known

    try:
        records = load_known(args.known)
    except (FileNotFoundError, KnownDataUnavailable) as error:
        raise ValueError(f"--noise {args.noise} needs sigma: pass --sigma, or --known known_1000.json (ROME's "
                         f"rule over its subjects), or an absolute --noise; Known was not found: {error}") from None
    dropped = records.dropped_line()
    if dropped:  # as `spiritlens experiment` reports them: sigma comes from the kept records only
        print(f"spiritlens: warning: {dropped}", file=sys.stderr)
    if not records.records:
        raise ValueError(f"{records.source}: no usable Known record to measure sigma from")
    return records


def _speech_prompt(model, args, json_path: Path):
    """The S->T prompt: audio, transcript and subject aligned (spiritlens.align.speech_prompt)."""
    from spiritlens.align import LowAlignmentConfidence
    from spiritlens.align.speech_prompt import SpeechPrompt
    from spiritlens.figures.alignment import plot_speech_prompt

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prompt = SpeechPrompt.from_audio(model, args.audio, transcript=args.transcript, subject=args.subject,
                                         aligner=args.aligner, mapping=args.mapping)
    for warning in caught:  # one line each; a low confidence is reported once, after the trace
        if not issubclass(warning.category, LowAlignmentConfidence):
            print(f"spiritlens trace: warning: {warning.message}", file=sys.stderr)
    figure = Path(args.alignment_png) if args.alignment_png else json_path.with_name(json_path.stem + "_alignment.png")
    plot_speech_prompt(prompt, figure)
    print(f"alignment confidence {prompt.confidence:.3f}; figure {figure}")
    return prompt, {"alignment": prompt.alignment_json(), "alignment_png": str(figure)}
