"""``spiritlens units AUDIO --json OUT.json [--expressive]``: HuBERT units, deduplicated tokens and frame
spans; with ``--expressive`` also pitch and style codes and the merged Expressive token string."""

from __future__ import annotations

import math

from spiritlens.audio.waveform import MAX_SECONDS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "units",
        help="audio file -> SpiritLM HuBERT units (25 Hz frames), deduplicated tokens and their frame spans",
        description="Needs SpiritLM's speech tokenizer (speech_tokenizer/hubert_25hz/ with "
                    "mhubert_base_25hz.pt and L11_quantizer_500.pt): --speech-tokenizer DIR, or "
                    "$SPIRITLM_CHECKPOINTS_DIR/speech_tokenizer. `spiritlens make-tiny DIR` writes a tiny "
                    "random one to try it.",
    )
    parser.add_argument("audio", help="audio file (wav, flac, ogg, mp3; any rate, mono or stereo)")
    parser.add_argument("--json", required=True, dest="json_out", metavar="OUT.json",
                        help="where to write units, tokens, spans (written atomically)")
    parser.add_argument("--speech-tokenizer", metavar="DIR", default=None,
                        help="SpiritLM speech_tokenizer/ folder (default: $SPIRITLM_CHECKPOINTS_DIR/speech_tokenizer)")
    parser.add_argument("--expressive", action="store_true",
                        help="also pitch (FCPE + F0 VQ-VAE, 12.5 Hz) and style (1 Hz) tokens, merged with "
                             "the HuBERT units as SpiritLM Expressive writes them (needs vqvae_f0_quantizer/ and "
                             "style_encoder_w2v2/ in the folder, and torchfcpe installed)")
    parser.add_argument("--max-audio-seconds", default=f"{MAX_SECONDS:g}", metavar="S",
                        help="refuse audio longer than S seconds (0: no limit)")
    parser.set_defaults(func=run)


def _seconds(text: str) -> float | None:
    """``--max-audio-seconds``: a number of seconds >= 0, 0 meaning no limit (None); one-line ValueError."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"--max-audio-seconds must be a number of seconds >= 0 (0: no limit), got {text!r}")
    return value or None


def run(args) -> int:
    from spiritlens._io import save_or_rescue, write_json_atomic
    from spiritlens.audio.waveform import load_audio
    from spiritlens.cli import print_json_last_resort
    from spiritlens.cli.paths import check_output_file
    from spiritlens.units import SpeechTokenizer, default_speech_tokenizer_dir

    check_output_file(args.json_out, "--json")  # before any model loads (spiritlens.cli.paths)
    max_seconds = _seconds(args.max_audio_seconds)
    directory = default_speech_tokenizer_dir(args.speech_tokenizer)
    wave = load_audio(args.audio, max_seconds=max_seconds)  # bad audio fails before the model loads

    def save(data: dict) -> None:
        save_or_rescue(lambda path: write_json_atomic(path, data), args.json_out, "units",
                       last_resort=lambda: print_json_last_resort(data))

    if args.expressive:
        from spiritlens.units.expressive import ExpressiveTokenizer

        try:
            tokenizer = ExpressiveTokenizer.from_dir(directory)
        except ImportError as error:  # torchfcpe (or its einops/local-attention) missing: one line, exit 2
            raise ValueError(str(error)) from None
        units = tokenizer.encode(wave)
        save(units.to_json())
        print(f"{args.audio}: {len(units.hubert.units)} HuBERT frames, {len(units.pitch)} pitch codes, "
              f"{len(units.style)} style codes -> {len(units.tokens)} tokens -> {args.json_out}")
        return 0
    units = SpeechTokenizer.from_dir(directory).encode(wave)
    save(units.to_json())
    print(f"{args.audio}: {len(units.units)} frames, {len(units.tokens)} tokens -> {args.json_out}")
    return 0
