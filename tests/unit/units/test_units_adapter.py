"""SpeechTokenizer.from_spiritlm: wrapping an object with SpiritLM's speech-tokenizer interface."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from spiritlens.units import SpeechTokenizer

# tests/test_tokenizer.py of facebookresearch/spiritlm: the first frames of its example utterance
SPIRITLM_UNITS = [99, 49, 38, 149, 149, 71, 423, 427, 492, 288, 315, 153, 153, 389]


class FakeSpiritLMTokenizer:
    """Duck-typed like ``spiritlm.speech_tokenizer.spiritlm_base()``; returns fixed units."""

    def __init__(self, units, conv_feature_layers="[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 3"):
        self.units = units
        self.max_wav_chunk, self.min_wav_chunk = 100 * 16_000, 1280
        self.hubert_model = types.SimpleNamespace(
            code_hop_size=640, expected_sample_rate=16_000,
            hubert_model_cfg=types.SimpleNamespace(conv_feature_layers=conv_feature_layers))
        self.received = []

    def encode_units(self, audio, channel_id=None):
        self.received.append(audio)
        return {"audio": "ignored", "hubert": " ".join(map(str, self.units))}


def test_adapter_units_tokens_spans():
    fake = FakeSpiritLMTokenizer(SPIRITLM_UNITS)
    n = 720 + 640 * (len(SPIRITLM_UNITS) - 1)
    su = SpeechTokenizer.from_spiritlm(fake).encode(np.full((n, 2), 0.25, np.float32))  # stereo [N, C]
    (audio,) = fake.received
    assert isinstance(audio, torch.Tensor) and audio.shape == (n,) and audio.dtype == torch.float32
    assert su.units == SPIRITLM_UNITS
    assert "".join(su.token_strings()[:5]) == "[Hu99][Hu49][Hu38][Hu149][Hu71]"
    assert su.spans[:5] == [(0, 1), (1, 2), (2, 3), (3, 5), (5, 6)]
    assert su.time_spans()[3] == pytest.approx((0.12, 0.2))
    assert su.frame_seconds == pytest.approx(0.04)


def test_adapter_resamples_before_spiritlm(tmp_path):
    fake = FakeSpiritLMTokenizer([1, 2])
    SpeechTokenizer.from_spiritlm(fake).encode(np.zeros(8_000, np.float32), sample_rate=8_000)
    assert fake.received[0].shape == (16_000,)


def test_adapter_chunk_times_follow_spiritlm_chunks():
    """Two 100 s chunks: frames restart at sample 1,600,000 (2499 frames per full chunk)."""
    fake = FakeSpiritLMTokenizer(list(range(2499)) + [7, 7, 8])
    su = SpeechTokenizer.from_spiritlm(fake).encode(np.zeros(1_600_000 + 2000, np.float32))
    assert [(c.start_sample, c.start_frame, c.num_frames) for c in su.chunks] == [(0, 0, 2499), (1_600_000, 2499, 3)]
    assert su.time_spans()[-2] == pytest.approx((100.0, 100.08))


def test_adapter_rejects_objects_without_the_interface():
    with pytest.raises(ValueError, match=r"object has no encode_units\(audio\); expected SpiritLM's speech tokenizer"):
        SpeechTokenizer.from_spiritlm(object())
    fake = FakeSpiritLMTokenizer([1])
    fake.hubert_model = None
    with pytest.raises(ValueError, match=r"cannot read the frame hop and sample rate"):
        SpeechTokenizer.from_spiritlm(fake)
    assert SpeechTokenizer.from_spiritlm(fake, hop_samples=320, sample_rate=16_000).frame_seconds == 0.02


def test_adapter_bad_output():
    class Broken(FakeSpiritLMTokenizer):
        def encode_units(self, audio, channel_id=None):
            return {"hubert": "1 2 x"}

    with pytest.raises(ValueError, match=r"Broken\.encode_units: 'hubert' is not space-separated integers"):
        SpeechTokenizer.from_spiritlm(Broken([1])).encode(np.zeros(2000, np.float32))
