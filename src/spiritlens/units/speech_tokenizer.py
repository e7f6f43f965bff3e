"""Audio -> SpiritLM ``[Hu…]`` units with frame spans: :class:`SpeechTokenizer`, :class:`SpeechUnits`.

Pipeline, reproducing ``spiritlm.speech_tokenizer.spiritlm_base().encode_units``:

1. :func:`spiritlens.audio.waveform.load_audio`: mono, 16 kHz (soxr), float32.
2. Chunks of ``max_chunk_samples`` (100 s); a chunk shorter than ``min_chunk_samples`` (SpiritLM's
   1280 samples = 80 ms) is skipped, as SpiritLM skips it. Each chunk is normalised on its own when
   the checkpoint asks for it (for audio under 100 s: the whole waveform).
3. mHuBERT layer-11 features, one per 25 Hz frame; the linear quantizer's argmax with blanks filled
   from the left (a blank at a chunk's frame 0 takes that chunk's last unit, SpiritLM's wrap-around).
4. Runs of equal units become one token that keeps its run's frames as a span.

Audio shorter than ``max(min_chunk_samples, receptive field)`` is an error, not an empty result
(SpiritLM returns nothing). The receptive field is computed from the conv stack: 720 samples for
the 25 Hz mHuBERT (400 is the 50 Hz stack's, hence SpiritLM's ``HubertTokenizer(min_chunk=400)``).
The feature layer is a parameter (``output_layer=11``, as SpiritLM hard-codes ``hubert_layer=11``;
the checkpoint does not record it); the tiny checkpoint has 12 layers like the real one.

Coordinates: ``units``/``spans`` count 25 Hz frames (frame ``f`` of a chunk starting at sample
``s`` covers samples ``[s + f*hop, s + (f+1)*hop)``); ``tokens`` index deduplicated units.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from spiritlens.models.spiritlm.tree import (
    CHECKPOINTS_ENV,
    SPEECH_TOKENIZER_FOLDER,
    checkpoints_dir,
    speech_tokenizer_folder,
)
from spiritlens.audio.waveform import Waveform, load_audio
from spiritlens.models.spiritlm.vocab import hubert_token
from spiritlens.units.hubert import (
    DEFAULT_OUTPUT_LAYER,
    HUBERT_FILE,
    HubertFeatures,
    conv_num_frames,
    parse_conv_layers,
)
from spiritlens.units.quantizer import QUANTIZER_FILE, KmeansQuantizer, LinearQuantizer, load_quantizer

MAX_CHUNK_SAMPLES = 100 * 16_000  # SpiritLMTokenizer.max_wav_chunk
MIN_CHUNK_SAMPLES = 1280  # SpiritLMTokenizer.min_wav_chunk (80 ms; HubertTokenizer alone uses 400)


@dataclass(frozen=True)
class Chunk:
    """One encoded piece of the waveform: its first sample and its first frame in ``units``."""

    start_sample: int
    start_frame: int
    num_frames: int


@dataclass
class SpeechUnits:
    """HuBERT units of one utterance.

    ``units``: one unit per 25 Hz frame, before deduplication. ``tokens``: units after removing
    consecutive duplicates. ``spans[i]``: ``[first_frame, last_frame + 1)`` of token ``i`` in frame
    coordinates (the spans tile ``[0, len(units))``). ``frame_seconds``: hop / sample rate, read from
    the conv stack. ``num_samples``: length of the 16 kHz waveform. ``chunks``: where each encoded
    chunk starts (frames restart at each 100 s chunk; one chunk for shorter audio).
    """

    units: list[int]
    tokens: list[int]
    spans: list[tuple[int, int]]
    frame_seconds: float
    sample_rate: int
    num_samples: int
    chunks: list[Chunk] = field(default_factory=list)

    @classmethod
    def from_units(cls, units: list[int], *, frame_seconds: float, sample_rate: int, num_samples: int,
                   chunks: list[Chunk] | None = None) -> "SpeechUnits":
        tokens, spans = deduplicate(units)
        if chunks is None:
            chunks = [Chunk(0, 0, len(units))]
        return cls(units=list(units), tokens=tokens, spans=spans, frame_seconds=frame_seconds,
                   sample_rate=sample_rate, num_samples=num_samples, chunks=list(chunks))

    def frame_start_seconds(self, frame: int) -> float:
        """Start time (s) of frame ``frame`` (``0 <= frame <= len(units)``; ``len`` = end of the last)."""
        if not 0 <= frame <= len(self.units):
            raise ValueError(f"frame {frame} is outside 0..{len(self.units)}")
        chunk = next((c for c in reversed(self.chunks) if c.start_frame <= frame), self.chunks[0])
        hop_s = self.frame_seconds
        return chunk.start_sample / self.sample_rate + (frame - chunk.start_frame) * hop_s

    def time_spans(self) -> list[tuple[float, float]]:
        """``(start_s, end_s)`` per token: its first frame's start to its last frame's end."""
        return [(self.frame_start_seconds(a), self.frame_start_seconds(b - 1) + self.frame_seconds)
                for a, b in self.spans]

    def token_strings(self) -> list[str]:
        """SpiritLM's token string of each token (``[Hu99]``, :func:`spiritlens.models.spiritlm.vocab.hubert_token`)."""
        return [hubert_token(u) for u in self.tokens]

    def to_json(self) -> dict:
        """The ``spiritlens units`` JSON (README, "JSON outputs": ``units``, ``tokens``, ``spans``)."""
        return {
            "units": list(self.units),
            "tokens": list(self.tokens),
            "spans": [[a, b] for a, b in self.spans],
            "token_strings": self.token_strings(),
            "frame_seconds": self.frame_seconds,
            "time_spans": [[round(a, 6), round(b, 6)] for a, b in self.time_spans()],
            "sample_rate": self.sample_rate,
            "num_samples": self.num_samples,
            "duration_s": self.num_samples / self.sample_rate,
        }


def deduplicate(units: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
    """Runs of equal consecutive units -> (one token per run, its frame span ``[start, end)``)."""
    tokens: list[int] = []
    spans: list[tuple[int, int]] = []
    for frame, unit in enumerate(units):
        if tokens and tokens[-1] == unit:
            spans[-1] = (spans[-1][0], frame + 1)
        else:
            tokens.append(int(unit))
            spans.append((frame, frame + 1))
    return tokens, spans


def plan_chunks(num_samples: int, max_chunk: int, min_chunk: int) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges SpiritLM encodes: ``max_chunk`` pieces, short ones skipped."""
    return [(s, min(s + max_chunk, num_samples)) for s in range(0, num_samples, max_chunk)
            if min(s + max_chunk, num_samples) - s >= min_chunk]


class _UnitSource(Protocol):
    """Something that turns a 16 kHz waveform into per-frame units, chunk by chunk."""

    hop_samples: int
    sample_rate: int
    min_samples: int

    def frame_units(self, wave: Waveform) -> tuple[list[int], list[Chunk]]: ...


class _NativeUnits:
    """mHuBERT (as HF HubertModel) + quantizer, chunked like SpiritLMTokenizer."""

    def __init__(self, hubert: HubertFeatures, quantizer: LinearQuantizer | KmeansQuantizer, *,
                 max_chunk_samples: int, min_chunk_samples: int):
        if quantizer.dim != hubert.hidden_size:
            raise ValueError(f"quantizer expects {quantizer.dim}-dim features but {hubert.source} gives "
                             f"{hubert.hidden_size}")
        if max_chunk_samples < min_chunk_samples:
            raise ValueError(f"max_chunk_samples={max_chunk_samples} is below min_chunk_samples={min_chunk_samples}")
        self.hubert, self.quantizer = hubert, quantizer
        self.max_chunk, self.min_chunk = max_chunk_samples, min_chunk_samples
        self.hop_samples = hubert.hop_samples
        self.sample_rate = hubert.sample_rate
        self.min_samples = max(min_chunk_samples, hubert.receptive_field_samples)

    def frame_units(self, wave: Waveform) -> tuple[list[int], list[Chunk]]:
        samples = torch.from_numpy(wave.samples)
        units: list[int] = []
        chunks: list[Chunk] = []
        for start, end in plan_chunks(wave.num_samples, self.max_chunk, self.min_samples):
            chunk_units = self.quantizer(self.hubert.features(samples[start:end])).tolist()
            chunks.append(Chunk(start, len(units), len(chunk_units)))
            units += chunk_units
        return units, chunks


class _SpiritLMUnits:
    """SpiritLM's own speech tokenizer (``spiritlm_base()``) behind the same interface."""

    def __init__(self, tokenizer, hop_samples: int | None, sample_rate: int | None):
        if not callable(getattr(tokenizer, "encode_units", None)):
            raise ValueError(f"{type(tokenizer).__name__} has no encode_units(audio); expected SpiritLM's "
                             "speech tokenizer (spiritlm.speech_tokenizer.spiritlm_base())")
        hubert = getattr(tokenizer, "hubert_model", None)
        hop_samples = hop_samples or getattr(hubert, "code_hop_size", None)
        sample_rate = sample_rate or getattr(hubert, "expected_sample_rate", None) \
            or getattr(tokenizer, "expected_sample_rate", None)
        if not hop_samples or not sample_rate:
            raise ValueError(f"{type(tokenizer).__name__}: cannot read the frame hop and sample rate "
                             "(hubert_model.code_hop_size, expected_sample_rate); pass hop_samples= and sample_rate=")
        self.tokenizer = tokenizer
        self.hop_samples, self.sample_rate = int(hop_samples), int(sample_rate)
        self.max_chunk = int(getattr(tokenizer, "max_wav_chunk", MAX_CHUNK_SAMPLES))
        self.min_samples = int(getattr(tokenizer, "min_wav_chunk", MIN_CHUNK_SAMPLES))

    def frame_units(self, wave: Waveform) -> tuple[list[int], list[Chunk]]:
        result = self.tokenizer.encode_units(torch.from_numpy(wave.samples))
        text = result.get("hubert") if isinstance(result, dict) else None
        if not isinstance(text, str):
            raise ValueError(f"{type(self.tokenizer).__name__}.encode_units returned no 'hubert' string")
        try:
            units = [int(u) for u in text.split()]
        except ValueError:
            raise ValueError(f"{type(self.tokenizer).__name__}.encode_units: 'hubert' is not space-separated "
                             f"integers: {text[:40]!r}") from None
        chunks, frame = [], 0
        for start, end in plan_chunks(wave.num_samples, self.max_chunk, self.min_samples):
            n = self._chunk_frames(end - start)
            chunks.append(Chunk(start, frame, n))
            frame += n
        return units, chunks

    def _chunk_frames(self, num_samples: int) -> int:
        """Frames of one chunk: exact from SpiritLM's conv stack when readable, else ``N // hop``."""
        cfg = getattr(getattr(self.tokenizer, "hubert_model", None), "hubert_model_cfg", None)
        spec = getattr(cfg, "conv_feature_layers", None)
        if spec is None:
            return num_samples // self.hop_samples
        return conv_num_frames(num_samples, parse_conv_layers(spec, source=type(self.tokenizer).__name__))


class SpeechTokenizer:
    """Audio -> :class:`SpeechUnits` exactly as SpiritLM tokenises speech (base model, HuBERT only).

    Build with :meth:`from_dir` (SpiritLM's ``speech_tokenizer/`` folder) or :meth:`from_spiritlm`
    (wrap SpiritLM's own tokenizer object). HuBERT units only: Expressive pitch/style tokens come from
    :class:`spiritlens.units.expressive.ExpressiveTokenizer`.
    """

    def __init__(self, source: _UnitSource, *, name: str = "speech tokenizer"):
        self._source = source
        self.name = name

    @classmethod
    def from_dir(cls, speech_tokenizer_dir: str | Path, *, output_layer: int = DEFAULT_OUTPUT_LAYER,
                 device: str | torch.device = "cpu", max_chunk_samples: int = MAX_CHUNK_SAMPLES,
                 min_chunk_samples: int = MIN_CHUNK_SAMPLES) -> "SpeechTokenizer":
        """Load ``DIR/hubert_25hz/{mhubert_base_25hz.pt, L11_quantizer_500.pt}``.

        ``output_layer``: 1-based mHuBERT layer fed to the quantizer (SpiritLM: 11).
        ``min_chunk_samples``: chunks shorter than this are skipped (SpiritLMTokenizer: 1280).
        """
        directory = Path(speech_tokenizer_dir)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: speech tokenizer directory not found "
                                    f"(expected {HUBERT_FILE} and {QUANTIZER_FILE} inside)")
        hubert = HubertFeatures.from_checkpoint(directory / HUBERT_FILE, output_layer=output_layer, device=device)
        quantizer = load_quantizer(directory / QUANTIZER_FILE).to(device)
        return cls.from_parts(hubert, quantizer, max_chunk_samples=max_chunk_samples,
                              min_chunk_samples=min_chunk_samples, name=str(directory))

    @classmethod
    def from_parts(cls, hubert: HubertFeatures, quantizer: LinearQuantizer | KmeansQuantizer, *,
                   max_chunk_samples: int = MAX_CHUNK_SAMPLES, min_chunk_samples: int = MIN_CHUNK_SAMPLES,
                   name: str = "speech tokenizer") -> "SpeechTokenizer":
        """A speech tokenizer from a loaded mHuBERT and quantizer, chunked as :meth:`from_dir` chunks
        (another model family's files, e.g. SpeechGPT's 50 Hz mHuBERT and joblib k-means). ValueError
        when the quantizer's feature width is not the mHuBERT's."""
        return cls(_NativeUnits(hubert, quantizer, max_chunk_samples=max_chunk_samples,
                                min_chunk_samples=min_chunk_samples), name=name)

    @classmethod
    def from_spiritlm(cls, tokenizer, *, hop_samples: int | None = None,
                      sample_rate: int | None = None) -> "SpeechTokenizer":
        """Wrap SpiritLM's speech tokenizer (``spiritlm_base()``): same units, our spans and JSON.

        ``tokenizer.encode_units(waveform)`` must return ``{"hubert": "99 49 38 ..."}`` (one unit per
        frame). The hop and sample rate are read from ``tokenizer.hubert_model`` unless given. Audio
        is loaded and resampled by :func:`load_audio` (soxr) before it reaches SpiritLM.
        """
        return cls(_SpiritLMUnits(tokenizer, hop_samples, sample_rate), name=type(tokenizer).__name__)

    @property
    def sample_rate(self) -> int:
        return self._source.sample_rate

    @property
    def frame_seconds(self) -> float:
        return self._source.hop_samples / self._source.sample_rate

    @property
    def min_samples(self) -> int:
        """Shortest input (16 kHz samples) that gives units."""
        return self._source.min_samples

    def encode(self, audio, sample_rate: float | None = None, *, expressive: bool = False) -> SpeechUnits:
        """Units of ``audio`` (a path, ``[N]``/``[C, N]`` array or tensor, or a Waveform).

        ``sample_rate``: of an array/tensor (default 16 kHz). ``expressive=True`` raises ValueError
        pointing to :class:`~spiritlens.units.expressive.ExpressiveTokenizer`.
        """
        if expressive:
            raise ValueError("SpeechTokenizer gives HuBERT units only; pitch and style tokens "
                             "come from spiritlens.units.expressive.ExpressiveTokenizer (it needs "
                             "vqvae_f0_quantizer/ and style_encoder_w2v2/ next to hubert_25hz/)")
        wave = load_audio(audio, sample_rate, target_sample_rate=self.sample_rate)
        if wave.num_samples < self.min_samples:
            raise ValueError(f"{wave.source}: {wave.num_samples} samples ({1000 * wave.duration_s:.1f} ms) are too "
                             f"short to encode: at least {self.min_samples} samples at {self.sample_rate} Hz "
                             "are needed (mHuBERT receptive field / SpiritLM's minimum chunk)")
        units, chunks = self._source.frame_units(wave)
        if not units:
            raise ValueError(f"{wave.source}: {self.name} produced no units")
        return SpeechUnits.from_units(units, frame_seconds=self.frame_seconds, sample_rate=wave.sample_rate,
                                      num_samples=wave.num_samples, chunks=chunks)


def default_speech_tokenizer_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit``, else ``$SPIRITLM_CHECKPOINTS_DIR/speech_tokenizer``; ValueError if neither is set."""
    if explicit:
        return Path(explicit)
    root = checkpoints_dir(required=False)
    if root is None:
        raise ValueError(f"no speech tokenizer directory: pass --speech-tokenizer DIR or set "
                         f"{CHECKPOINTS_ENV} (its {SPEECH_TOKENIZER_FOLDER}/ folder is used)")
    return speech_tokenizer_folder(root)


__all__ = ["Chunk", "SpeechTokenizer", "SpeechUnits", "deduplicate", "plan_chunks", "default_speech_tokenizer_dir"]
