"""Pitch tokens: FCPE F0 against torchfcpe's own inference, interpolation and the VQ-VAE against plain references."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spiritlens.synthetic.tiny_expressive import TINY_F0_CONFIG, write_tiny_f0_quantizer
from spiritlens.units.pitch import (
    F0_MODEL_FILE,
    F0Quantizer,
    FcpeF0,
    PitchTokenizer,
    f0_track,
    import_torchfcpe,
    interpolate_unvoiced,
    load_f0_quantizer,
    normalize_f0,
)

SR = 16_000


def voice(seconds: float, seed: int = 0, gaps: bool = True) -> np.ndarray:
    """A harmonic source with a gliding pitch (110..220 Hz), silent gaps and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 165 + 55 * np.sin(2 * np.pi * 0.8 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    wav = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2
    if gaps:
        wav = wav * (np.sin(2 * np.pi * 1.5 * t) > -0.4)
    return (wav + 0.003 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def fcpe() -> FcpeF0:
    return FcpeF0()


@pytest.fixture(scope="module")
def quantizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("f0")
    write_tiny_f0_quantizer(directory, seed=0)
    return directory


def test_fcpe_f0_equals_torchfcpe_inference_frame_by_frame(fcpe):
    """Our FCPE track (network via the package's classes, our interpolation/resizing) vs torchfcpe's
    ``spawn_bundled_infer_model().infer`` with SpiritLM's arguments."""
    import_torchfcpe()
    import torchfcpe

    reference_model = torchfcpe.spawn_bundled_infer_model(device="cpu")
    for seconds, seed in ((2.0, 0), (0.3, 1), (3.1, 2)):
        wav = voice(seconds, seed)
        n = len(wav)
        f0_ref, uv_ref = reference_model.infer(
            torch.from_numpy(wav).view(1, -1, 1), sr=SR, decoder_mode="local_argmax", threshold=0.05,
            f0_min=50, f0_max=1100, interp_uv=True, output_interp_target_length=n // 80 + 1, retur_uv=True)
        f0, vuv = f0_track(fcpe.raw_f0(torch.from_numpy(wav)), n)
        assert f0.shape == (n // 80 + 1,)
        torch.testing.assert_close(f0, f0_ref.view(-1), rtol=0, atol=0)
        torch.testing.assert_close(vuv, 1 - uv_ref.view(-1), rtol=0, atol=0)
        if seconds > 1:  # the gaps start at 0.38 s: voiced and unvoiced frames both present
            assert 0 < float(vuv.mean()) < 1
        voiced = f0[vuv > 0]
        assert 100 < float(voiced.median()) < 240  # FCPE's real weights find the glide's pitch


def test_torchaudio_stays_out(fcpe):
    import_torchfcpe()
    assert "torchaudio" not in sys.modules and importlib.util.find_spec("torchaudio") is None
    from transformers.utils import is_torchaudio_available

    assert not is_torchaudio_available()
    # FCPE's own resampler is never built: asking it for another rate is a clear error
    with pytest.raises(RuntimeError, match="resample"):
        fcpe.network(torch.zeros(1, 8000, 1), 8000)


def test_interpolation_matches_a_brute_force_rule():
    rng = np.random.default_rng(3)
    f0 = torch.from_numpy(rng.uniform(80, 300, 200).astype(np.float32))
    unvoiced = torch.from_numpy(rng.random(200) < 0.4)
    unvoiced[:5] = True
    unvoiced[-7:] = True
    out = interpolate_unvoiced(f0, unvoiced).numpy()
    voiced_t = np.flatnonzero(~unvoiced.numpy())
    for t in range(200):
        if not unvoiced[t]:
            assert out[t] == f0[t]
            continue
        left = voiced_t[voiced_t < t]
        right = voiced_t[voiced_t > t]
        if not len(left):
            expected = f0[voiced_t[0]]
        elif not len(right):
            expected = f0[voiced_t[-1]]
        else:
            a, b = left[-1], right[0]
            expected = f0[a] + (t - a) * (f0[b] - f0[a]) / (b - a)
        assert out[t] == pytest.approx(float(expected), rel=1e-6)


def test_interpolation_edge_cases():
    f0 = torch.tensor([0.0, 0.0, 120.0, 0.0])
    assert interpolate_unvoiced(f0, torch.tensor([True, True, False, True])).tolist() == [120.0] * 4
    assert interpolate_unvoiced(f0, torch.ones(4, dtype=torch.bool)).tolist() == f0.tolist()  # #17: no crash
    track, vuv = f0_track(torch.tensor([0.0, 2000.0, 30.0]), 240)  # clip at 1100, voicing before interpolation
    assert vuv.tolist() == [0.0, 0.0, 1.0, 0.0] and track.tolist() == [1100.0] * 4  # nearest: frames 0,0,1,2


def test_normalisation_subtracts_the_voiced_mean():
    f0 = torch.tensor([100.0, 200.0, 0.0, 150.0])
    vuv = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert normalize_f0(f0, vuv).tolist() == [-50.0, 50.0, 0.0, 0.0]
    assert normalize_f0(f0, torch.zeros(4)).tolist() == f0.tolist()


def reference_codes(state: dict, cfg: dict, x: torch.Tensor) -> torch.Tensor:
    """The encoder written out with F.conv1d on the raw state dict, and the nearest codebook row by
    ``torch.cdist`` (float64): independent of spiritlens' module structure."""
    enc = cfg["encoder_params"]
    sd = {k: v.double() for k, v in state.items()}
    h = x.double()
    prefix = "encoder.level_blocks.0.model"
    stride, down = enc["strides_t"][0], enc["downs_t"][0]
    for i in range(down):
        h = F.conv1d(h, sd[f"{prefix}.{i}.0.weight"], sd[f"{prefix}.{i}.0.bias"], stride=stride, padding=stride // 2)
        for d in range(enc["depth"]):
            p = f"{prefix}.{i}.1.model.{d}.model"
            dilation = enc["dilation_growth_rate"] ** d
            r = F.conv1d(F.relu(h), sd[f"{p}.1.weight"], sd[f"{p}.1.bias"], padding=dilation, dilation=dilation)
            h = h + F.conv1d(F.relu(r), sd[f"{p}.3.weight"], sd[f"{p}.3.bias"])
    h = F.conv1d(h, sd[f"{prefix}.{down}.weight"], sd[f"{prefix}.{down}.bias"], padding=1)
    return torch.cdist(h[0].t(), sd["vq.level_blocks.0.k"]).argmin(dim=-1)


def test_vqvae_codes_equal_a_plain_reference(quantizer_dir):
    quantizer = load_f0_quantizer(quantizer_dir)
    state = torch.load(quantizer_dir / F0_MODEL_FILE, weights_only=True)["model"]
    assert quantizer.factor == 16 and quantizer.normalize and quantizer.num_codes == 64
    rng = np.random.default_rng(0)
    agree = total = 0
    used = set()
    for length in (17, 160, 401, 1000):
        f0 = torch.from_numpy(np.cumsum(rng.normal(0, 3, length)).astype(np.float32))
        vuv = torch.from_numpy((rng.random(length) > 0.3).astype(np.float32))
        x = torch.stack([f0, vuv]).unsqueeze(0)
        codes = quantizer(x)[0]
        assert codes.shape == (length // 16,)
        ref = reference_codes(state, TINY_F0_CONFIG, x)
        agree += int((codes == ref).sum())
        total += len(codes)
        used |= set(codes.tolist())
    assert agree == total
    assert len(used) > 8


def test_pitch_tokenizer_errors_and_minimum(quantizer_dir, fcpe):
    tokenizer = PitchTokenizer(load_f0_quantizer(quantizer_dir), fcpe)
    assert tokenizer.min_samples == 1280 and tokenizer.code_samples == 1280
    assert len(tokenizer.encode(voice(0.1)[:1280]).codes) == 1  # SpiritLM's minimum chunk gives one code
    with pytest.raises(ValueError, match=r"clip\.wav: 1279 samples are too short for pitch tokens"):
        tokenizer.encode(voice(0.1)[:1279], source="clip.wav")
    loud = np.clip(voice(1.0) * 40, -1, 1)  # clipped audio: defined codes (parity in test_expressive_reference)
    assert len(tokenizer.encode(loud).codes) == (SR // 80 + 1) // 16


def test_config_and_weight_errors_name_the_file(tmp_path, quantizer_dir):
    import shutil

    import yaml

    bad = tmp_path / "bad"
    shutil.copytree(quantizer_dir, bad)
    config_path = bad / "vqvae_f0_quantizer" / "config.yaml"
    cfg = yaml.safe_load(config_path.read_text())
    cfg["features"] = "f0,energy"
    config_path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"config\.yaml: features = 'f0,energy' is not one of 'f0_interp,vuv', "):
        load_f0_quantizer(bad)
    cfg["features"] = "norm_f0_interp,vuv"
    cfg["vq_params"]["emb_width"] = 8
    cfg["encoder_params"]["output_emb_width"] = 8
    config_path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"model\.pt: F0 VQ-VAE weights do not match its config: \d+ mis-shaped \("):
        load_f0_quantizer(bad)
    torch.save({"state": {}}, bad / "vqvae_f0_quantizer" / "model.pt")
    with pytest.raises(ValueError, match=r"model\.pt: expected a dict with a 'model' state dict"):
        load_f0_quantizer(bad)
    with pytest.raises(FileNotFoundError, match="config not found"):
        load_f0_quantizer(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"encoder_params\.input_emb_width = 1 is not an integer equal to 2$"):
        F0Quantizer({**TINY_F0_CONFIG, "encoder_params": {**TINY_F0_CONFIG["encoder_params"], "input_emb_width": 1}})


def test_missing_torchfcpe_names_the_install_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "torchfcpe.models_infer")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchfcpe" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install --no-deps 'torchfcpe==0\.0\.4' einops local-attention"):
        import_torchfcpe()

