"""CTC emissions from a transformers ``HubertForCTC`` / ``Wav2Vec2ForCTC`` directory with a character vocabulary.

Frame geometry comes from the config's conv feature stack: hop = product of strides (samples per
CTC frame), receptive field = ``1 + sum((k_i - 1) * prod(s_<i))``; frame ``t`` covers samples
``[hop * t, hop * t + receptive_field)`` at the model's sample rate; ``N`` samples give the number
of frames of the conv stack (``floor((N - 400) / 320) + 1`` for the standard one).

The model's sample rate is ``sampling_rate`` of its ``preprocessor_config.json``: a waveform at any
other rate is resampled to it with ``soxr.resample`` (as the speech front end does), so a model
trained at 8 kHz sees 8 kHz and its frames last ``hop / 8000`` s; the rate is recorded in
:class:`Emissions`. The waveform is normalised as the preprocessor config says (zero mean, unit
variance for hubert-large-ls960-ft).

The vocabulary is read from the directory's tokenizer files: ``vocab.json`` (ids 0..V-1 in any
order), the blank = ``pad_token`` and the word delimiter = ``word_delimiter_token`` (``|`` by
default) from ``tokenizer_config.json`` / ``special_tokens_map.json``, and ``do_lower_case``
(recorded; transcript letters are matched case-insensitively either way). So both the
hubert-large-ls960-ft layout (``<pad>`` first, upper case) and the common fine-tuning layout
(lower case, ``[PAD]`` last) load.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from spiritlens._io import MAX_CONFIG_BYTES, read_json
from spiritlens.checkpoints import schema
from spiritlens.units.hubert import conv_hop_samples, conv_num_frames, conv_receptive_field
from spiritlens.align.ctc import DEFAULT_MIN_CONFIDENCE, Alignment, align_emissions, label_index
from spiritlens.align.normalize import WORD_SEPARATOR

__all__ = ["CTCAligner", "Emissions"]

_CTC_ARCHITECTURES = {"HubertForCTC": "hubert", "Wav2Vec2ForCTC": "wav2vec2"}


@dataclass(frozen=True)
class Emissions:
    """CTC log-probabilities ``log_probs`` [T, V] float32 over ``vocab`` (``vocab[blank]`` the blank,
    ``word_delimiter`` between words, or ``None``); frame ``t`` covers samples ``[hop_samples * t,
    hop_samples * t + receptive_field_samples)`` of the ``num_samples``-sample waveform at
    ``sample_rate`` Hz (the model's rate) and lasts ``frame_seconds = hop_samples / sample_rate``."""

    log_probs: np.ndarray
    vocab: list[str]
    frame_seconds: float
    receptive_field_samples: int
    hop_samples: int
    blank: int
    num_samples: int
    sample_rate: int = 16000
    word_delimiter: str | None = WORD_SEPARATOR

    @property
    def num_frames(self) -> int:
        return int(self.log_probs.shape[0])


class CTCAligner:
    """A character CTC model and its vocabulary; ``align`` = ``emissions`` + ``align_emissions``."""

    name = "ctc"

    def __init__(self, model, vocab: list[str], blank: int, feature_extractor, sample_rate: int = 16000, *,
                 word_delimiter: str | None = WORD_SEPARATOR, do_lower_case: bool = False, source: str = ""):
        self.model = model.eval()
        self.vocab = vocab
        self.blank = blank
        self.feature_extractor = feature_extractor
        self.sample_rate = int(sample_rate)
        self.word_delimiter = word_delimiter if word_delimiter in vocab else None
        self.do_lower_case = do_lower_case
        self.source = source
        # [(dim, kernel, stride)] of the conv feature stack, as for the speech tokenizer's HuBERT
        self.conv_layers = list(zip(model.config.conv_dim, model.config.conv_kernel, model.config.conv_stride))
        self.hop_samples = conv_hop_samples(self.conv_layers)
        self.receptive_field_samples = conv_receptive_field(self.conv_layers)
        self.frame_seconds = self.hop_samples / self.sample_rate

    @classmethod
    def from_pretrained(cls, path, device: str = "cpu") -> "CTCAligner":
        """Load a ``HubertForCTC`` or ``Wav2Vec2ForCTC`` directory (config.json, weights, vocab.json,
        tokenizer_config.json, preprocessor_config.json); see the module docstring for the vocabulary."""
        import transformers

        path = Path(path)
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ValueError(f"CTC model path {str(path)!r} has no config.json")
        config = read_json(config_path, "CTC model config", max_bytes=MAX_CONFIG_BYTES)
        if not isinstance(config, dict):
            raise ValueError(f"CTC model config {config_path} is not a JSON object")
        arch = [a for a in config.get("architectures") or [] if a in _CTC_ARCHITECTURES]
        if not arch:
            raise ValueError(
                f"{str(path)!r} is not a CTC model: config.json architectures {config.get('architectures')} "
                f"(expected one of {sorted(_CTC_ARCHITECTURES)})"
            )
        schema.check(config, schema.WAV2VEC2_CONFIG, f"CTC model config {config_path}")  # sizes before building
        if config.get("add_adapter"):
            raise ValueError(f"{str(path)!r}: wav2vec2 adapter layers change the frame rate; not supported")
        vocab_path = path / "vocab.json"
        if not vocab_path.is_file():
            raise ValueError(f"CTC model {str(path)!r} has no vocab.json (character vocabulary)")
        ids = read_json(vocab_path, "CTC vocabulary", max_bytes=MAX_CONFIG_BYTES)
        if not isinstance(ids, dict) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids.values()):
            raise ValueError(f"{vocab_path}: not a mapping of label -> integer id")
        vocab = [label for label, _ in sorted(ids.items(), key=lambda item: item[1])]
        if [ids[label] for label in vocab] != list(range(len(vocab))):
            raise ValueError(f"{vocab_path}: ids are not 0..{len(vocab) - 1}")
        settings = _tokenizer_settings(path)
        pad, delimiter = settings["pad_token"], settings["word_delimiter_token"]
        if pad not in ids:
            raise ValueError(f"{str(path)!r}: pad (blank) token {pad!r} is not in vocab.json")
        letters = {c.upper() for c in label_index(vocab) if c.isalpha()}
        if len(letters) < 20:
            raise ValueError(f"{vocab_path}: only {len(letters)} letters; not a character CTC vocabulary")
        model = getattr(transformers, arch[0]).from_pretrained(path).to(device)
        if model.config.vocab_size != len(vocab):
            raise ValueError(f"{str(path)!r}: CTC head has {model.config.vocab_size} outputs, vocab.json {len(vocab)} labels")
        extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(path) \
            if (path / "preprocessor_config.json").is_file() else transformers.Wav2Vec2FeatureExtractor()
        return cls(model, vocab, ids[pad], extractor, int(extractor.sampling_rate), word_delimiter=delimiter,
                   do_lower_case=settings["do_lower_case"], source=str(path))

    def num_frames(self, num_samples: int) -> int:
        """CTC frames for ``num_samples`` samples at the model's rate, through the conv stack (0 if shorter
        than one field)."""
        return conv_num_frames(num_samples, self.conv_layers)

    def emissions(self, waveform, sample_rate: int | None = None) -> Emissions:
        """CTC log-probabilities of a mono waveform -> ``Emissions`` [T, V].

        ``waveform``: samples at ``sample_rate`` Hz (default 16 kHz; stereo is averaged), a
        :class:`spiritlens.audio.waveform.Waveform` (its own rate) or an audio file (:func:`aligner_samples`).
        Resampled to the model's rate if it differs.
        """
        import torch

        wav = aligner_samples(waveform, sample_rate, self.sample_rate, self.receptive_field_samples, "one CTC frame")
        features = self.feature_extractor(wav, sampling_rate=self.sample_rate, return_tensors="pt").input_values
        param = next(self.model.parameters())
        with torch.no_grad():
            logits = self.model(features.to(device=param.device, dtype=param.dtype)).logits[0]
        log_probs = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
        return Emissions(log_probs, list(self.vocab), self.frame_seconds, self.receptive_field_samples,
                         self.hop_samples, self.blank, len(wav), self.sample_rate, self.word_delimiter)

    def align(self, waveform, transcript: str, *, sample_rate: int | None = None,
              min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> Alignment:
        """Align ``transcript`` to a waveform (as :meth:`emissions` takes it): ``Alignment`` with words (CTC
        frames and seconds), confidence, and the model-rate ``num_samples`` and ``sample_rate``."""
        em = self.emissions(waveform, sample_rate)
        return align_with_emissions(em, transcript, min_confidence=min_confidence)


def align_with_emissions(em: Emissions, transcript: str, *, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> Alignment:
    """``align_emissions`` on an :class:`Emissions`, with its waveform's sample count and rate recorded."""
    alignment = align_emissions(em.log_probs, em.vocab, transcript, em.frame_seconds, blank=em.blank,
                                word_delimiter=em.word_delimiter, min_confidence=min_confidence)
    return replace(alignment, num_samples=em.num_samples, sample_rate=em.sample_rate)


def aligner_samples(waveform, sample_rate: int | None, rate: int, min_samples: int, unit: str) -> np.ndarray:
    """Mono float32 samples at an aligner's ``rate``: :func:`spiritlens.audio.waveform.load_audio` of ``waveform``
    (an array or tensor at ``sample_rate``, default 16 kHz, a ``Waveform`` or a path; channels averaged,
    resampled with soxr), then at least ``min_samples`` (what ``unit`` needs) and not silent, else
    ``ValueError``."""
    from spiritlens.audio.waveform import load_audio

    wav = load_audio(waveform, sample_rate, target_sample_rate=rate).samples
    if len(wav) < min_samples:
        raise ValueError(f"waveform has {len(wav)} samples at {rate} Hz; {unit} needs {min_samples}")
    peak = float(np.abs(wav).max())
    if peak < 1e-5:
        raise ValueError(f"waveform is silent (peak amplitude {peak:.2g}); nothing to align")
    return wav


def _tokenizer_settings(path: Path) -> dict:
    """``pad_token`` (the blank; default ``<pad>``), ``word_delimiter_token`` (default ``|``) and
    ``do_lower_case`` (default False) from tokenizer_config.json, then special_tokens_map.json."""
    found: dict = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        file = path / name
        if file.is_file():
            data = schema.check_tokenizer_file(read_json(file, "tokenizer file", max_bytes=MAX_CONFIG_BYTES), name,
                                               f"tokenizer file {file}")
            for key in ("pad_token", "word_delimiter_token", "do_lower_case"):
                value = data.get(key)
                if isinstance(value, dict):
                    value = value.get("content")
                if value is not None and key not in found:
                    found[key] = value
    return {"pad_token": found.get("pad_token", "<pad>"),
            "word_delimiter_token": found.get("word_delimiter_token", WORD_SEPARATOR),
            "do_lower_case": bool(found.get("do_lower_case", False))}
