"""Expressive tokens against SpiritLM's own code (fixtures from scripts/make_expressive_fixtures.py).

The fixture holds, for each audio file, what ``SpiritLMTokenizer(spiritlm_hubert(), spiritlm_expressive_f0(),
spiritlm_expressive_style_encoder_w2v2())`` produced on the tiny checkpoints that spiritlens' writers
make with seed 0 (their SHA-256 are in the fixture, so a writer change fails here first): the HuBERT,
pitch and style unit strings, the merged ``units2string`` output, and SpiritLM's F0 extractor output.
The cases are the issue's: flite speech, silence-padded speech, an 8 kHz file, a stereo file, a very
short piece, clipped speech, and pure silence (on which SpiritLM raises, spiritlm issue #17).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import FIXTURES
from spiritlens.synthetic.tiny_expressive import write_tiny_expressive
from spiritlens.synthetic.tiny_units import write_tiny_speech_tokenizer
from spiritlens.units.expressive import ExpressiveTokenizer

EXPRESSIVE = FIXTURES / "expressive"
REFERENCE = json.loads((EXPRESSIVE / "reference.json").read_text())
PARITY_CASES = sorted(name for name, case in REFERENCE["cases"].items() if "error" not in case)


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("expressive") / "speech_tokenizer"
    write_tiny_speech_tokenizer(directory, seed=REFERENCE["tiny_writers"]["tiny_units"]["seed"])
    write_tiny_expressive(directory, seed=REFERENCE["tiny_writers"]["tiny_expressive"]["seed"])
    return directory


@pytest.fixture(scope="module")
def tokenizer(speech_dir) -> ExpressiveTokenizer:
    return ExpressiveTokenizer.from_dir(speech_dir)


def test_writers_reproduce_the_fixture_checkpoints(speech_dir):
    hashes = {str(p.relative_to(speech_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted(speech_dir.rglob("*")) if p.is_file()}
    assert hashes == REFERENCE["files"]
    for name, digest in REFERENCE["audio"].items():
        assert hashlib.sha256((EXPRESSIVE / f"{name}.flac").read_bytes()).hexdigest() == digest


def test_the_cases_cover_the_issue():
    cases = REFERENCE["cases"]
    assert {"speech", "padded", "kal_8k", "stereo", "short", "clipped", "silence", "speech_chunked"} <= set(cases)
    assert cases["stereo"]["channels"] == 2 and cases["short"]["num_samples"] < 1600
    assert cases["silence"]["error"].startswith("IndexError")  # spiritlm #17: FCPE interpolation on silence


@pytest.mark.parametrize("name", PARITY_CASES)
def test_streams_and_string_equal_spiritlm(tokenizer, speech_dir, name):
    """``*_chunked`` cases: the same file with SpiritLM's ``max_wav_chunk`` lowered (several chunks)."""
    case = REFERENCE["cases"][name]
    chunk = REFERENCE["max_wav_chunk"].get(name)
    if chunk is not None:
        tokenizer = ExpressiveTokenizer.from_dir(speech_dir, max_chunk_samples=chunk)
    units = tokenizer.encode(EXPRESSIVE / f"{name.removesuffix('_chunked')}.flac")
    if chunk is not None:
        assert len(units.hubert.chunks) == len(units.pitch_chunks) == -(-case["num_samples"] // chunk) > 1
        for stream in ("pitch", "style"):  # spans restart at each chunk's first sample, in seconds
            starts = [t.time_span[0] for t in units.tokens if t.stream == stream]
            assert starts == sorted(starts) and starts[-1] < case["num_samples"] / 16000
        assert 1.0 in [t.time_span[0] for t in units.tokens if t.stream == "style"]
    streams = units.streams()
    for key in ("hubert", "pitch", "style"):
        assert " ".join(map(str, streams[key])) == case["units"][key], key
    assert units.token_string() == case["string"]
    assert units.num_samples == case["num_samples"]
    # the F0 track feeding the VQ-VAE, frame by frame (SpiritLM's FCPE extractor on the same first chunk);
    # float32 sums in another order (another torch thread count) move F0 by ~1e-7 relative, never a code
    n = len(case["f0"])
    np.testing.assert_allclose(units.f0[:n], np.asarray(case["f0"], dtype=np.float32), rtol=1e-6, atol=0)
    np.testing.assert_array_equal(units.vuv[:n], np.asarray(case["vuv"], dtype=np.float32))


def test_fixture_strings_use_every_stream():
    """The parity is not vacuous: pitch varies, style varies within one file, tokens interleave."""
    speech = REFERENCE["cases"]["speech"]
    assert len(set(speech["units"]["pitch"].split())) > 5
    assert any(len(set(c["units"]["style"].split())) > 1 for c in REFERENCE["cases"].values() if "units" in c)
    assert speech["string"].startswith("[St") and "[Pi" in speech["string"] and "[Hu" in speech["string"]


def test_silence_gives_a_defined_result_where_spiritlm_raises(tokenizer):
    units = tokenizer.encode(EXPRESSIVE / "silence.flac")
    assert not units.vuv.any() and not units.f0.any()  # no voiced frame: F0 stays 0, nothing interpolated
    assert len(units.pitch) == (16000 // 80 + 1) // 16 and len(units.style) == 1
    assert units.token_string().startswith("[St")
