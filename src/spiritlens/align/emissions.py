"""CTC emissions from a transformers ``HubertForCTC`` / ``Wav2Vec2ForCTC`` directory with a character vocabulary.

Frame geometry comes from the config's conv feature stack: hop = product of strides (samples per
CTC frame), receptive field = ``1 + sum((k_i - 1) * prod(s_<i))``; frame ``t`` covers samples
``[hop * t, hop * t + receptive_field)``; ``N`` samples give the number of frames of the conv stack
(``floor((N - 400) / 320) + 1`` for the standard one). The waveform is normalised as the model's
``preprocessor_config.json`` says (zero mean, unit variance for hubert-large-ls960-ft).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..units.hubert import conv_hop_samples, conv_num_frames, conv_receptive_field
from .ctc import DEFAULT_MIN_CONFIDENCE, Alignment, align_emissions
from .normalize import WORD_SEPARATOR

__all__ = ["CTCAligner", "Emissions"]

_CTC_ARCHITECTURES = {"HubertForCTC": "hubert", "Wav2Vec2ForCTC": "wav2vec2"}


@dataclass(frozen=True)
class Emissions:
    """CTC log-probabilities ``log_probs`` [T, V] float32 over ``vocab`` (``vocab[blank]`` the blank);
    frame ``t`` covers samples ``[hop_samples * t, hop_samples * t + receptive_field_samples)``."""

    log_probs: np.ndarray
    vocab: list[str]
    frame_seconds: float
    receptive_field_samples: int
    hop_samples: int
    blank: int
    num_samples: int

    @property
    def num_frames(self) -> int:
        return int(self.log_probs.shape[0])


class CTCAligner:
    """A character CTC model and its vocabulary; ``align`` = ``emissions`` + ``align_emissions``."""

    def __init__(self, model, vocab: list[str], blank: int, feature_extractor, sample_rate: int = 16000):
        self.model = model.eval()
        self.vocab = vocab
        self.blank = blank
        self.feature_extractor = feature_extractor
        self.sample_rate = sample_rate
        # [(dim, kernel, stride)] of the conv feature stack, as for the speech tokenizer's HuBERT
        self.conv_layers = list(zip(model.config.conv_dim, model.config.conv_kernel, model.config.conv_stride))
        self.hop_samples = conv_hop_samples(self.conv_layers)
        self.receptive_field_samples = conv_receptive_field(self.conv_layers)
        self.frame_seconds = self.hop_samples / sample_rate

    @classmethod
    def from_pretrained(cls, path, device: str = "cpu") -> "CTCAligner":
        """Load a ``HubertForCTC`` or ``Wav2Vec2ForCTC`` directory (config.json, weights, vocab.json,
        tokenizer_config.json, preprocessor_config.json). The blank is the pad token."""
        import transformers

        path = Path(path)
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ValueError(f"CTC model path {str(path)!r} has no config.json")
        config = json.loads(config_path.read_text())
        arch = [a for a in config.get("architectures") or [] if a in _CTC_ARCHITECTURES]
        if not arch:
            raise ValueError(
                f"{str(path)!r} is not a CTC model: config.json architectures {config.get('architectures')} "
                f"(expected one of {sorted(_CTC_ARCHITECTURES)})"
            )
        if config.get("add_adapter"):
            raise ValueError(f"{str(path)!r}: wav2vec2 adapter layers change the frame rate; not supported")
        vocab_path = path / "vocab.json"
        if not vocab_path.is_file():
            raise ValueError(f"CTC model {str(path)!r} has no vocab.json (character vocabulary)")
        ids = json.loads(vocab_path.read_text())
        vocab = [label for label, _ in sorted(ids.items(), key=lambda item: item[1])]
        if [ids[label] for label in vocab] != list(range(len(vocab))):
            raise ValueError(f"{vocab_path}: ids are not 0..{len(vocab) - 1}")
        if WORD_SEPARATOR not in ids:
            raise ValueError(f"{vocab_path}: no word delimiter {WORD_SEPARATOR!r}; not a character CTC vocabulary")
        pad = _pad_token(path)
        if pad not in ids:
            raise ValueError(f"{str(path)!r}: pad (blank) token {pad!r} is not in vocab.json")
        model = getattr(transformers, arch[0]).from_pretrained(path).to(device)
        if model.config.vocab_size != len(vocab):
            raise ValueError(f"{str(path)!r}: CTC head has {model.config.vocab_size} outputs, vocab.json {len(vocab)} labels")
        extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(path) \
            if (path / "preprocessor_config.json").is_file() else transformers.Wav2Vec2FeatureExtractor()
        return cls(model, vocab, ids[pad], extractor, int(extractor.sampling_rate))

    def num_frames(self, num_samples: int) -> int:
        """CTC frames for ``num_samples`` samples, through the conv stack (0 if shorter than one field)."""
        return conv_num_frames(num_samples, self.conv_layers)

    def emissions(self, waveform_16k: np.ndarray) -> Emissions:
        """CTC log-probabilities of a mono waveform (1-D, ``sample_rate`` Hz, float) -> ``Emissions`` [T, V]."""
        import torch

        wav = np.asarray(waveform_16k, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"waveform must be 1-D mono samples, got shape {list(wav.shape)}")
        if len(wav) < self.receptive_field_samples:
            raise ValueError(f"waveform has {len(wav)} samples; one CTC frame needs {self.receptive_field_samples}")
        if not np.isfinite(wav).all():
            raise ValueError("waveform contains NaN or inf")
        peak = float(np.abs(wav).max())
        if peak < 1e-5:
            raise ValueError(f"waveform is silent (peak amplitude {peak:.2g}); nothing to align")
        features = self.feature_extractor(wav, sampling_rate=self.sample_rate, return_tensors="pt").input_values
        param = next(self.model.parameters())
        with torch.no_grad():
            logits = self.model(features.to(device=param.device, dtype=param.dtype)).logits[0]
        log_probs = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
        return Emissions(log_probs, list(self.vocab), self.frame_seconds, self.receptive_field_samples,
                         self.hop_samples, self.blank, len(wav))

    def align(self, waveform_16k: np.ndarray, transcript: str, *,
              min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> Alignment:
        """Align ``transcript`` to a waveform: ``Alignment`` with words (CTC frames and seconds),
        confidence, ``num_samples`` and ``num_frames``."""
        em = self.emissions(waveform_16k)
        alignment = align_emissions(em.log_probs, em.vocab, transcript, em.frame_seconds, blank=em.blank,
                                    min_confidence=min_confidence)
        return replace(alignment, num_samples=em.num_samples)


def _pad_token(path: Path) -> str:
    """The pad (= CTC blank) token from tokenizer_config.json / special_tokens_map.json, else ``<pad>``."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        file = path / name
        if file.is_file():
            pad = json.loads(file.read_text()).get("pad_token")
            if isinstance(pad, dict):
                pad = pad.get("content")
            if pad:
                return pad
    return "<pad>"
