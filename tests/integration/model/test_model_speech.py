"""HookedSpiritLM with speech input: audio -> [Hu…] tokens, end to end, and SpiritLM interop."""

from __future__ import annotations

import types

import numpy as np
import pytest
import soundfile as sf
import torch

from spiritlens import HookedSpiritLM
from spiritlens.units import SpeechTokenizer


@pytest.fixture(scope="module")
def model(tiny_root):
    # The speech tokenizer is found next to spiritlm_model/ and loaded on first use.
    return HookedSpiritLM.from_pretrained(tiny_root / "spiritlm_model" / "spirit-lm-base-7b")


def test_to_tokens_with_audio_file_and_text(model, spoken_prompt_wav):
    units = model.speech_tokenizer.encode(spoken_prompt_wav)
    ids, token_map = model.encode([("speech", spoken_prompt_wav), ("text", " is located in")])
    hubert = [model.vocab.hubert_ids[u] for u in units.tokens]
    # SpiritLM's tokenisation of "[Speech][Hu…]…[Text] is located in": SentencePiece's lone ▁ first.
    prefix = model.tokenizer.convert_tokens_to_ids("▁")
    expected = [model.vocab.bos_id, prefix, model.vocab.speech_marker_id, *hubert, model.vocab.text_marker_id]
    assert ids[0, :len(expected)].tolist() == expected
    strings = model.to_str_tokens([("speech", spoken_prompt_wav), ("text", " is located in")])
    assert strings[3] == f"[Hu{units.tokens[0]}]" and strings[len(expected) - 1] == "[Text]"
    speech = [p for p in token_map.positions if p.kind == "speech"]
    assert [p.frame_span for p in speech] == [tuple(s) for s in units.spans]
    assert speech[-1].frame_span[1] == len(units.units)
    with torch.no_grad():
        assert torch.isfinite(model(ids)).all()


def test_waveform_with_sample_rate_equals_the_file(model, spoken_prompt_wav):
    samples, rate = sf.read(spoken_prompt_wav, dtype="float32")
    from_file = model.to_tokens([("speech", spoken_prompt_wav)])
    from_array = model.to_tokens([("speech", (samples, rate))])
    assert torch.equal(from_file, from_array)


class SpiritLMStyleTokenizer:
    """Speaks the interface of SpiritLM's ``spiritlm_base()`` (``encode_units`` -> {"hubert": "..."}),
    computing the units with spiritlens' own tokenizer on the same tiny checkpoint."""

    def __init__(self, native: SpeechTokenizer):
        self.native = native
        self.hubert_model = types.SimpleNamespace(
            code_hop_size=640, expected_sample_rate=16_000,
            hubert_model_cfg=types.SimpleNamespace(
                conv_feature_layers="[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 3"))

    def encode_units(self, audio, channel_id=None):
        units = self.native.encode(np.asarray(audio, dtype=np.float32)).units
        return {"audio": "in-memory", "hubert": " ".join(map(str, units))}


def test_spiritlm_speech_tokenizer_object_gives_identical_tokens(tiny_root, model, spoken_prompt_wav):
    native = SpeechTokenizer.from_dir(tiny_root / "speech_tokenizer")
    interop = HookedSpiritLM.from_pretrained(tiny_root / "spiritlm_model" / "spirit-lm-base-7b",
                                             speech_tokenizer=SpiritLMStyleTokenizer(native))
    prompt = [("speech", spoken_prompt_wav), ("text", " is in")]
    assert torch.equal(interop.to_tokens(prompt), model.to_tokens(prompt))


def test_missing_speech_tokenizer_is_a_clear_error(tiny_base_dir, tmp_path, monkeypatch):
    import shutil

    lonely = shutil.copytree(tiny_base_dir, tmp_path / "alone" / "model")
    monkeypatch.delenv("SPIRITLM_CHECKPOINTS_DIR", raising=False)
    alone = HookedSpiritLM.from_pretrained(lonely)
    with pytest.raises(FileNotFoundError, match="no speech tokenizer found"):
        alone.to_tokens([("speech", np.zeros(16000, np.float32))])
    assert alone.to_tokens("text still works").shape[1] > 2


def test_expressive_model_takes_pitch_and_style_tokens(tiny_root, spoken_prompt_wav):
    """The Expressive model tokenises audio as SpiritLM Expressive: HuBERT, pitch and style interleaved
    (the exact string is checked against SpiritLM's code in tests/integration/units/test_units_expressive_model.py)."""
    expressive = HookedSpiritLM.from_pretrained(tiny_root / "spiritlm_model" / "spirit-lm-expressive-7b")
    assert expressive.vocab.is_expressive
    ids = expressive.to_tokens([("speech", spoken_prompt_wav)])[0].tolist()
    units = expressive.speech_tokenizer.encode(spoken_prompt_wav)
    assert expressive.to_str_tokens(ids)[:3] == ["<s>", "▁", "[Speech]"]  # SpiritLM's lone ▁ first
    vocab = expressive.vocab
    stream_ids = {"hubert": vocab.hubert_ids, "pitch": vocab.pitch_ids, "style": vocab.style_ids}
    assert ids[3:-1] == [stream_ids[t.stream][t.unit] for t in units.tokens]
    assert set(ids) & set(vocab.pitch_ids) and set(ids) & set(vocab.style_ids)
    assert [vocab.unit_of(i) for i in ids[3:-1] if vocab.unit_of(i) is not None] == units.hubert.tokens
    with pytest.raises(ValueError, match="ExpressiveTokenizer"):
        expressive.speech_tokenizer.hubert.encode(spoken_prompt_wav, expressive=True)
