"""``spiritlens units AUDIO --json OUT.json``: HuBERT units, deduplicated tokens and frame spans."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "units",
        help="audio file -> SpiritLM HuBERT units (25 Hz frames), deduplicated tokens and their frame spans",
    )
    parser.add_argument("audio", help="audio file (wav, flac, ogg, mp3; any rate, mono or stereo)")
    parser.add_argument("--json", required=True, dest="json_out", metavar="OUT.json",
                        help="where to write units, tokens, spans (written atomically)")
    parser.add_argument("--speech-tokenizer", metavar="DIR", default=None,
                        help="SpiritLM speech_tokenizer/ folder (default: $SPIRITLM_CHECKPOINTS_DIR/speech_tokenizer)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from spiritlens.audio import load_audio
    from spiritlens.units import SpeechTokenizer, default_speech_tokenizer_dir

    directory = default_speech_tokenizer_dir(args.speech_tokenizer)
    wave = load_audio(args.audio)  # bad audio fails before the model is loaded
    units = SpeechTokenizer.from_dir(directory).encode(wave)
    write_json_atomic(Path(args.json_out), units.to_json())
    print(f"{args.audio}: {len(units.units)} frames, {len(units.tokens)} tokens -> {args.json_out}")
    return 0


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
