#!/usr/bin/env python
"""Reference Expressive speech tokens from SpiritLM's own code: ``tests/fixtures/expressive/``.

Run by hand (not by CI), from the repository root, with the project's environment::

    .venv/bin/python scripts/make_expressive_fixtures.py --spiritlm /path/to/spiritlm-checkout \
        [--venv /tmp/spiritlens-spiritlm-ref]

It
1. writes the tiny speech tokenizer with spiritlens' own writers (mHuBERT + quantizer:
   ``spiritlens.synthetic.tiny_units``; F0 VQ-VAE + style encoder: ``spiritlens.synthetic.tiny_expressive``)
   and records the SHA-256 of every file (the suite fails when the writers no longer produce them);
2. writes the audio cases as 16-bit FLAC: flite speech (16 kHz), the same padded with digital
   silence, flite's 8 kHz voice, a stereo file (two voices), a very short piece (1400 samples),
   pure silence, and clipped speech (spiritlm issue #17's kinds);
3. creates (once) a separate virtual environment outside the repository with SpiritLM's runtime
   requirements for these parts (torch CPU, ``transformers<5``, omegaconf, torchfcpe installed
   ``--no-deps`` with einops and local-attention, soundfile, soxr);
4. runs there SpiritLM's own code from the checkout: ``SpiritLMTokenizer(hubert_model=spiritlm_hubert(),
   pitch_model=spiritlm_expressive_f0(), style_model=spiritlm_expressive_style_encoder_w2v2())``
   (``spiritlm_expressive()`` minus the HiFi-GAN vocoder, which tokenising does not use), then
   ``encode_units(waveform)`` and ``units2string``. Two things are supplied because they cannot run
   offline / without torchaudio, and neither is on the tokenising path: ``torchaudio`` is a placeholder
   module (SpiritLM imports it at module level but calls it only for file paths and resampling; the
   waveform is passed as a tensor), and ``Wav2Vec2FeatureExtractor.from_pretrained("facebook/wav2vec2-base")``
   (a Hub download in ``Wav2Vec2StyleEncoder.__init__``) returns that checkpoint's preprocessor settings
   (16 kHz, ``do_normalize=True``, ``return_attention_mask=False``, padding 0.0). Audio is read with
   soundfile and, for the 8 kHz file, resampled with soxr (SpiritLM would use torchaudio's resampler;
   spiritlens uses soxr: the comparison starts from the same 16 kHz samples). A stereo file is passed as
   ``[2, N]`` so that SpiritLM's own channel averaging runs. An exception is recorded as the case's result;
5. writes ``reference.json``: per case the hubert/pitch/style unit strings, the merged string, or the
   error; and SpiritLM's F0 extractor output (``f0``, ``vuv``) for the first chunk. One case
   (``speech_chunked``) runs the speech file with ``max_wav_chunk`` = 1 s, so chunking (each stream
   encoded per chunk, then concatenated and merged by index) is compared too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "expressive"
SENTENCE_A = "The Eiffel Tower is located in the city of Paris."
SENTENCE_B = "Mount Everest belongs to the continent of Asia."
CHUNKED = {"speech_chunked": 16000}  # case -> SpiritLMTokenizer(max_wav_chunk=...) other than its 100 s

REFERENCE = r'''
import json, os, sys, types

request = json.load(open(sys.argv[1]))
os.environ["SPIRITLM_CHECKPOINTS_DIR"] = request["root"]
os.environ["HF_HUB_OFFLINE"] = "1"

# transformers first: it looks torchaudio up once, at import, and must find it absent.
import torch, transformers

# SpiritLM imports torchaudio at module level; with waveforms passed as tensors it is never called.
def _never(*args, **kwargs):
    raise RuntimeError("torchaudio is not installed in the reference environment")
torchaudio = types.ModuleType("torchaudio")
torchaudio.load = _never
torchaudio.functional = types.ModuleType("torchaudio.functional")
torchaudio.functional.resample = _never
torchaudio.transforms = types.ModuleType("torchaudio.transforms")
torchaudio.transforms.Resample = _never
sys.modules.update({"torchaudio": torchaudio, "torchaudio.functional": torchaudio.functional,
                    "torchaudio.transforms": torchaudio.transforms})

# Wav2Vec2StyleEncoder.__init__ downloads facebook/wav2vec2-base's feature extractor from the Hub.
from transformers import Wav2Vec2FeatureExtractor
def _offline_extractor(cls, name, *args, **kwargs):
    assert name == "facebook/wav2vec2-base", name
    return cls(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
               return_attention_mask=False)
Wav2Vec2FeatureExtractor.from_pretrained = classmethod(_offline_extractor)

sys.path.insert(0, request["spiritlm"])
import numpy as np, soundfile, soxr, torchfcpe
from spiritlm.speech_tokenizer.hubert import spiritlm_hubert
from spiritlm.speech_tokenizer.f0 import spiritlm_expressive_f0
from spiritlm.speech_tokenizer.style_encoder import spiritlm_expressive_style_encoder_w2v2
from spiritlm.speech_tokenizer.spiritlm_tokenizer import SpiritLMTokenizer

parts = dict(hubert_model=spiritlm_hubert(), pitch_model=spiritlm_expressive_f0(),
             style_model=spiritlm_expressive_style_encoder_w2v2())
out = {"transformers": transformers.__version__, "torch": torch.__version__, "numpy": np.__version__,
       "cases": {}}
for name, path in request["cases"].items():
    chunk = request["max_wav_chunk"].get(name)
    tokenizer = SpiritLMTokenizer(**parts) if chunk is None else SpiritLMTokenizer(**parts, max_wav_chunk=chunk)
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)  # [N, C]
    if rate != 16000:
        data = np.stack([soxr.resample(data[:, c], rate, 16000) for c in range(data.shape[1])], axis=1)
    wav = torch.from_numpy(np.ascontiguousarray(data.T.astype(np.float32)))  # [C, N]
    case = {"num_samples": int(wav.shape[-1]), "channels": int(wav.shape[0])}
    try:
        units = tokenizer.encode_units(wav)
        case["units"] = {k: units[k] for k in ("hubert", "pitch", "style")}
        case["string"] = tokenizer.units2string(units)
    except Exception as error:
        case["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    try:
        mono = wav.mean(0) if wav.shape[0] == 2 else wav[0]
        f0, vuv = tokenizer.pitch_model.f0_extractor(mono[:tokenizer.max_wav_chunk], vuv=True)
        # shortest decimal that reads back as the same float32
        case["f0"] = [float(str(np.float32(v))) for v in f0]
        case["vuv"] = [float(v) for v in vuv]
    except Exception as error:
        case["f0_error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    out["cases"][name] = case
json.dump(out, open(sys.argv[2], "w"))
'''


def reference_python(venv: Path) -> Path:
    """A Python with SpiritLM's requirements for the speech tokenizer (created on first use)."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        torch_spec = "torch==" + __import__("torch").__version__
        subprocess.run([str(python), "-m", "pip", "install", "-q", torch_spec, "transformers<5", "omegaconf>=2.2",
                        "einops", "local-attention", "numpy", "soundfile", "soxr"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "torchfcpe==0.0.4"], check=True)
    return python


def _flite(text: str, voice: str, path: Path) -> tuple[np.ndarray, int]:
    import soundfile

    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
    data, rate = soundfile.read(str(path), dtype="int16")
    return data, rate


def write_audio(directory: Path) -> dict[str, Path]:
    """The audio cases as 16-bit FLAC files; returns name -> path."""
    import soundfile

    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        slt, rate = _flite(SENTENCE_A, "slt", Path(tmp) / "slt.wav")
        awb, rate_awb = _flite(SENTENCE_A, "awb", Path(tmp) / "awb.wav")
        kal, rate_kal = _flite(SENTENCE_B, "kal", Path(tmp) / "kal.wav")
    if not rate == rate_awb == 16000 or rate_kal != 8000:
        raise RuntimeError(f"unexpected flite rates {rate}, {rate_awb}, {rate_kal}")
    n = min(len(slt), len(awb))
    voiced = int(np.argmax(np.abs(slt) > 3000))  # first loud sample: the short case is speech, not silence
    cases = {
        "speech": (slt, 16000),
        "padded": (np.concatenate([np.zeros(16000, np.int16), slt, np.zeros(11200, np.int16)]), 16000),
        "kal_8k": (kal, 8000),
        "stereo": (np.stack([slt[:n], awb[:n]], axis=1), 16000),
        "short": (slt[voiced:voiced + 1400], 16000),
        "silence": (np.zeros(16000, np.int16), 16000),
        "clipped": (np.clip(slt.astype(np.int32) * 8, -32767, 32767).astype(np.int16), 16000),
    }
    paths = {}
    for name, (data, case_rate) in cases.items():
        path = directory / f"{name}.flac"
        soundfile.write(str(path), data, case_rate, subtype="PCM_16")
        paths[name] = path
    return paths


def file_hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spiritlm", type=Path, required=True,
                        help="a checkout of facebookresearch/spiritlm (its spiritlm/ package is imported)")
    parser.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "spiritlens-spiritlm-ref",
                        help="virtual environment for SpiritLM's code (created if missing)")
    parser.add_argument("--out", type=Path, default=FIXTURES)
    parser.add_argument("--commit", help="the checkout's commit, when it is not a git work tree")
    args = parser.parse_args()
    if not (args.spiritlm / "spiritlm" / "speech_tokenizer").is_dir():
        print(f"{args.spiritlm}: not a spiritlm checkout (no spiritlm/speech_tokenizer/)", file=sys.stderr)
        return 2

    from spiritlens.synthetic.tiny_expressive import write_tiny_expressive
    from spiritlens.synthetic.tiny_units import write_tiny_speech_tokenizer

    python = reference_python(args.venv)
    paths = write_audio(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        speech_dir = Path(tmp) / "speech_tokenizer"
        write_tiny_speech_tokenizer(speech_dir, seed=0)
        write_tiny_expressive(speech_dir, seed=0)
        hashes = file_hashes(speech_dir)
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        cases = {k: str(v) for k, v in paths.items()}
        cases["speech_chunked"] = cases["speech"]  # the same file in 1-second chunks (max_wav_chunk)
        request.write_text(json.dumps({"root": tmp, "spiritlm": str(args.spiritlm.resolve()), "cases": cases,
                                       "max_wav_chunk": CHUNKED}))
        script = Path(tmp) / "reference.py"
        script.write_text(REFERENCE)
        subprocess.run([str(python), str(script), str(request), str(result)], check=True)
        reference = json.loads(result.read_text())
    commit = subprocess.run(["git", "-C", str(args.spiritlm), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or args.commit
    fixture = {
        "made_by": "scripts/make_expressive_fixtures.py",
        "reference_call": "SpiritLMTokenizer(hubert_model=spiritlm_hubert(), pitch_model=spiritlm_expressive_f0(), "
                          "style_model=spiritlm_expressive_style_encoder_w2v2()).encode_units(wav) + units2string",
        "spiritlm_commit": commit,
        "versions": {k: reference[k] for k in ("transformers", "torch", "numpy")},
        "tiny_writers": {"tiny_units": {"seed": 0}, "tiny_expressive": {"seed": 0}},
        "files": hashes,
        "audio": {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in paths.items()},
        "max_wav_chunk": CHUNKED,
        "cases": reference["cases"],
    }
    (args.out / "reference.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {args.out}: {len(paths)} audio cases, spiritlm {commit}, transformers {reference['transformers']}")
    for name, case in reference["cases"].items():
        print(f"  {name}: {case.get('error') or case['string'][:70]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
