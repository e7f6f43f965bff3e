"""conversions/convert_mhubert_to_hf.py: fairseq mHuBERT -> transformers directory, with parity check."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

from helpers import REPO_ROOT
from spiritlens.synthetic.tiny_units import write_tiny_speech_tokenizer
from spiritlens.units import HubertFeatures, SpeechTokenizer

SCRIPT = REPO_ROOT / "conversions" / "convert_mhubert_to_hf.py"


def test_convert_fairseq_checkpoint(tmp_path):
    st = write_tiny_speech_tokenizer(tmp_path / "st", seed=4, layout="fairseq", task_cfg={"normalize": True})
    out = tmp_path / "hf"
    done = subprocess.run([sys.executable, str(SCRIPT), str(st / "hubert_25hz/mhubert_base_25hz.pt"), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "layer 11 features [49, 48], max |diff| after save/load = 0" in done.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["conv_stride"] == [5, 2, 2, 2, 2, 2, 2, 2] and config["num_hidden_layers"] == 12
    assert json.loads((out / "preprocessor_config.json").read_text())["do_normalize"] is True
    wav = torch.from_numpy(np.random.default_rng(0).standard_normal(20_000).astype(np.float32))
    direct = SpeechTokenizer.from_dir(st)._source.hubert
    assert torch.equal(HubertFeatures.from_hf_dir(out).features(wav), direct.features(wav))


def test_convert_bad_checkpoint_fails_cleanly(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"nope")
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "bad.pt"), str(tmp_path / "hf")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"convert_mhubert_to_hf: error: {tmp_path / 'bad.pt'}: cannot read mHuBERT checkpoint (")
    assert not (tmp_path / "hf").exists()
