"""``spiritlens units`` in a real subprocess: the contract JSON, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from helpers import run_cli
from spiritlens.synthetic.tiny_units import write_tiny_speech_tokenizer
from spiritlens.units import SpeechTokenizer

def spiritlens(*args: str, env: dict | None = None):
    return run_cli(*args, env=env, timeout=120)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    write_tiny_speech_tokenizer(root / "speech_tokenizer", seed=0)
    return root


def test_units_writes_contract_json(checkpoints, tmp_path):
    audio = tmp_path / "a.flac"
    rng = np.random.default_rng(3)
    soundfile.write(audio, (rng.standard_normal((48_000, 2)) * 0.1).astype(np.float32), 24_000)
    out = tmp_path / "out" / "units.json"
    done = spiritlens("units", str(audio), "--json", str(out), env={"SPIRITLM_CHECKPOINTS_DIR": str(checkpoints)})
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    expected = SpeechTokenizer.from_dir(checkpoints / "speech_tokenizer").encode(audio)
    assert data["units"] == expected.units and len(data["units"]) == (32_000 - 720) // 640 + 1 == 49
    assert data["tokens"] == expected.tokens
    assert data["spans"] == [list(s) for s in expected.spans]
    assert data["spans"][0][0] == 0 and data["spans"][-1][1] == 49
    assert data["frame_seconds"] == 0.04 and data["time_spans"][-1][1] == pytest.approx(1.96)
    assert [p.name for p in out.parent.iterdir()] == ["units.json"]  # no temporary file left behind


@pytest.mark.parametrize("case", ["missing_audio", "short_audio", "no_tokenizer_dir", "bad_tokenizer_dir"])
def test_units_bad_input_exits_nonzero_with_one_line(checkpoints, tmp_path, case):
    audio = tmp_path / "a.wav"
    soundfile.write(audio, np.zeros(1000 if case == "short_audio" else 4000, np.float32), 16_000)
    args = ["units", str(tmp_path / "nope.wav") if case == "missing_audio" else str(audio),
            "--json", str(tmp_path / "o.json")]
    env = {"SPIRITLM_CHECKPOINTS_DIR": str(checkpoints)}
    if case == "no_tokenizer_dir":
        env = {"SPIRITLM_CHECKPOINTS_DIR": ""}
    if case == "bad_tokenizer_dir":
        args += ["--speech-tokenizer", str(tmp_path / "missing")]
    done = spiritlens(*args, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spiritlens units: error: ")
    assert {"missing_audio": "nope.wav: no such audio file",
            "short_audio": "1000 samples (62.5 ms) are too short",
            "no_tokenizer_dir": "pass --speech-tokenizer DIR or set SPIRITLM_CHECKPOINTS_DIR",
            "bad_tokenizer_dir": "missing: speech tokenizer directory not found"}[case] in lines[0]
    assert not (tmp_path / "o.json").exists()
