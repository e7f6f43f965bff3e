"""Style tokens: normalisation against transformers' own feature extractor, pooling against a per-second
reference, loading rules, and spiritlm issue #23 (one constant style token)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from spiritlens.synthetic.tiny_expressive import write_tiny_style_encoder
from spiritlens.units.style import STYLE_WEIGHTS_FILE, StyleEncoder, normalize_waveform

SR = 16_000


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Different material every second: pitch, loudness and noise change per second."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(int(np.ceil(seconds))):
        n = min(SR, int(seconds * SR) - s * SR)
        t = np.arange(n) / SR
        f = rng.uniform(90, 300)
        parts.append(rng.uniform(0.05, 0.6) * np.sin(2 * np.pi * f * t) + rng.uniform(0, 0.2) * rng.standard_normal(n))
    return np.concatenate(parts).astype(np.float32)


@pytest.fixture(scope="module")
def style_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("style")
    write_tiny_style_encoder(directory, seed=0)
    return directory


@pytest.fixture(scope="module")
def encoder(style_dir) -> StyleEncoder:
    return StyleEncoder.from_dir(style_dir)


def test_normalisation_equals_wav2vec2_base_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    # facebook/wav2vec2-base's preprocessor_config.json, built locally (no Hub)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=False)
    for seed in range(3):
        wav = speechlike(1.3, seed)
        expected = extractor(torch.from_numpy(wav), sampling_rate=16000, return_tensors="pt").input_values[0]
        np.testing.assert_array_equal(normalize_waveform(wav), expected.numpy())


def test_codes_equal_a_per_second_reference(encoder):
    """Each second's code = argmax of the classifier on the mean of that second's projected frames."""
    model = encoder.model
    for seconds, seed in ((3.4, 0), (1.0, 1), (0.5, 2)):
        wav = speechlike(seconds, seed)
        x = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
        with torch.no_grad():
            frames = model.projector(model.wav2vec2(torch.from_numpy(x)[None]).last_hidden_state)[0]
            expected = [int(model.classifier(frames[i:i + 50].mean(dim=0)).argmax())
                        for i in range(0, frames.shape[0], 50)]
        out = encoder.encode(wav)
        assert out.codes == expected
        assert out.num_frames == frames.shape[0] == (len(wav) - 400) // 320 + 1
        assert len(out.codes) == -(-out.num_frames // 50)


def test_style_varies_within_an_utterance(encoder):
    """spiritlm #23 reports one constant style token: pooling per 50-frame chunk (not over the whole
    utterance) and normalising the input are what make the tokens follow the audio. On the tiny
    encoder, a 6-second input with different material each second gets several classes."""
    codes = encoder.encode(speechlike(6.0, 4)).codes
    assert len(codes) == 6 and len(set(codes)) >= 2
    # the utterance-level mean (the stock Wav2Vec2ForSequenceClassification pooling) gives one class only
    wav = speechlike(6.0, 4)
    x = torch.from_numpy(normalize_waveform(wav))[None]
    with torch.no_grad():
        whole = int(encoder.model(x).logits.argmax())
    assert whole in range(100) and codes != [whole] * 6


def test_weight_norm_spellings_and_device_marker(tmp_path, style_dir, encoder):
    write_tiny_style_encoder(tmp_path, seed=0, weight_norm_keys="legacy")
    state = torch.load(tmp_path / STYLE_WEIGHTS_FILE, weights_only=True)
    assert any(k.endswith("weight_g") for k in state) and "_float_tensor" in state
    legacy = StyleEncoder.from_dir(tmp_path)
    wav = speechlike(2.2, 5)
    assert legacy.encode(wav).codes == encoder.encode(wav).codes
    with torch.no_grad():
        torch.testing.assert_close(legacy.logits(wav), encoder.logits(wav), rtol=0, atol=0)


def test_loading_errors_name_the_file(tmp_path, style_dir):
    bad = tmp_path / "bad"
    shutil.copytree(style_dir, bad)
    state = torch.load(bad / STYLE_WEIGHTS_FILE, weights_only=True)
    state.pop("classifier.bias")
    torch.save(state, bad / STYLE_WEIGHTS_FILE)
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: style encoder weights do not match .*classifier\.bias"):
        StyleEncoder.from_dir(bad)
    (bad / STYLE_WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
        StyleEncoder.from_dir(bad)
    with pytest.raises(FileNotFoundError, match="config.json"):
        StyleEncoder.from_dir(tmp_path / "nothing")


def test_too_short_is_one_line(encoder):
    assert encoder.min_samples == 400 and len(encoder.encode(np.ones(400, np.float32)).codes) == 1
    with pytest.raises(ValueError, match="x.wav: 399 samples are too short for a style token"):
        encoder.encode(np.ones(399, np.float32), source="x.wav")
