"""SpiritLM Expressive speech tokens: HuBERT ``[Hu…]``, pitch ``[Pi…]`` and style ``[St…]`` on one time line.

:class:`ExpressiveTokenizer` runs the three encoders over the same 16 kHz waveform, chunk by chunk
as ``SpiritLMTokenizer.encode_units`` does (chunks of 100 s; a chunk under 1280 samples is skipped
by every stream), and :func:`merge_streams` interleaves them as SpiritLM's ``units_to_string``:

- each stream's units get a time ``i / rate`` from their index ``i`` in the stream (HuBERT 24.99 Hz,
  pitch 12.5 Hz, style 1 Hz); HuBERT and pitch are deduplicated (a run keeps its first index),
  style is not;
- all tokens are sorted by that time, ties broken style, then pitch, then HuBERT (SpiritLM sorts the
  concatenation style + pitch + HuBERT stably).

So ``[St71][Pi39][Hu99][Hu49][Pi40]…``. 24.99 Hz (not 25) only orders the streams; spans use the
true grids. Every token gets a **span**: its frames in the 25 Hz HuBERT frame grid (``frames``:
HuBERT frame ``f`` covers samples ``[640 f, 640 f + 640)``; a pitch code ``j`` covers 80 ms =
HuBERT frames ``[2 j, 2 j + 2)``; a style code ``i`` covers second ``i`` = frames ``[25 i, 25 i + 25)``,
the last one of a chunk cut at the chunk's last sample (frame count rounded up); a deduplicated token covers its whole run) and the same
span in seconds (``time_span``). The three grids start at sample 0 of each chunk, so these frame
spans are exact, not rounded. Those spans are what the cross-modal mapper uses to group a word's
speech positions: every token (of any stream) whose span overlaps the word's frames.
"""

from __future__ import annotations


from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from spiritlens.audio import load_audio
from spiritlens.models.spiritlm.vocab import hubert_token, pitch_token, style_token
from spiritlens.units.hubert import DEFAULT_OUTPUT_LAYER
from spiritlens.units.pitch import PitchTokenizer
from spiritlens.units.speech_tokenizer import (
    MAX_CHUNK_SAMPLES,
    MIN_CHUNK_SAMPLES,
    Chunk,
    SpeechTokenizer,
    SpeechUnits,
    deduplicate,
    plan_chunks,
)
from spiritlens.units.style import StyleEncoder

STREAMS = ("style", "pitch", "hubert")  # tie order of units_to_string
RATES = {"hubert": 24.99, "pitch": 12.5, "style": 1.0}  # SpiritLMTokenizer defaults
DEDUP = {"hubert": True, "pitch": True, "style": False}
_TOKEN = {"hubert": hubert_token, "pitch": pitch_token, "style": style_token}


@dataclass(frozen=True)
class StreamToken:
    """One token of the merged sequence.

    ``stream``: ``"hubert"``, ``"pitch"`` or ``"style"``; ``unit``: its code; ``index``: its first
    index in its stream (before deduplication; SpiritLM's time is ``index / rate``); ``frames``:
    ``[first, last + 1)`` in the 25 Hz HuBERT frame grid; ``time_span``: the same in seconds.
    """

    stream: str
    unit: int
    index: int
    frames: tuple[int, int]
    time_span: tuple[float, float]

    @property
    def string(self) -> str:
        return _TOKEN[self.stream](self.unit)

    @property
    def order_time(self) -> float:
        return self.index / RATES[self.stream]


def stream_runs(units: list[int], dedup: bool) -> list[tuple[int, int, int]]:
    """``(unit, first index, last index + 1)`` per token: runs of equal units (``dedup``) or single units."""
    if not dedup:
        return [(int(u), i, i + 1) for i, u in enumerate(units)]
    tokens, spans = deduplicate(list(units))
    return [(u, a, b) for u, (a, b) in zip(tokens, spans)]


def merge_order(streams: dict[str, list[int]]) -> list[tuple[str, int, int, int]]:
    """``units_to_string``'s order: ``(stream, unit, first index, end index)`` sorted by ``index / rate``,
    ties style < pitch < HuBERT. ``streams``: per-index units of the streams present (``"hubert"``
    required; ``"pitch"``/``"style"`` optional)."""
    if "hubert" not in streams:
        raise ValueError("merge needs the HuBERT stream")
    items = []
    for rank, name in enumerate(STREAMS):
        if name in streams:
            for unit, a, b in stream_runs(streams[name], DEDUP[name]):
                items.append((a / RATES[name], rank, a, name, unit, b))
    items.sort(key=lambda item: (item[0], item[1], item[2]))
    return [(name, unit, a, b) for _, _, a, name, unit, b in items]


def units_string(streams: dict[str, list[int]]) -> str:
    """The merged token string, e.g. ``[St71][Pi39][Hu99][Hu49][Pi40]…`` (see :func:`merge_order`)."""
    return "".join(_TOKEN[name](unit) for name, unit, _, _ in merge_order(streams))


@dataclass
class ExpressiveUnits:
    """HuBERT, pitch and style units of one utterance, and their merged tokens.

    ``hubert``: the :class:`SpeechUnits` (25 Hz frames, spans, chunks). ``pitch``/``style``: per-frame
    codes of each stream, concatenated over chunks; ``pitch_chunks``/``style_chunks``: where each
    chunk's codes start. ``tokens``: the merged :class:`StreamToken` list (prompt order).
    ``f0``/``vuv``: the 200 Hz F0 track (Hz, interpolated) and voicing, concatenated over chunks.
    """

    hubert: SpeechUnits
    pitch: list[int]
    style: list[int]
    pitch_chunks: list[Chunk]
    style_chunks: list[Chunk]
    tokens: list[StreamToken]
    pitch_code_samples: int = 1280
    style_code_samples: int = 16_000
    f0: np.ndarray | None = field(default=None, repr=False)
    vuv: np.ndarray | None = field(default=None, repr=False)

    # the interface a prompt segment needs (see spiritlens.tokens.prompt.Segment)
    @property
    def spans(self) -> list[tuple[int, int]]:
        """25 Hz frame span of every merged token (overlapping: a style token covers a second)."""
        return [t.frames for t in self.tokens]

    @property
    def frame_seconds(self) -> float:
        return self.hubert.frame_seconds

    @property
    def num_samples(self) -> int:
        return self.hubert.num_samples

    @property
    def sample_rate(self) -> int:
        return self.hubert.sample_rate

    def token_strings(self) -> list[str]:
        return [t.string for t in self.tokens]

    def token_string(self) -> str:
        """SpiritLM's ``units_to_string`` output for these units."""
        return "".join(self.token_strings())

    def streams(self) -> dict[str, list[int]]:
        """``{"hubert": [...], "pitch": [...], "style": [...]}``: per-frame codes (SpiritLM's ``encode_units``)."""
        return {"hubert": list(self.hubert.units), "pitch": list(self.pitch), "style": list(self.style)}

    def positions_of(self, stream: str) -> list[int]:
        """Indices into :attr:`tokens` of one stream's tokens."""
        return [k for k, t in enumerate(self.tokens) if t.stream == stream]

    def to_json(self) -> dict:
        """The ``spiritlens units --expressive`` JSON: the HuBERT JSON plus ``pitch``, ``style`` and ``tokens``."""
        out = self.hubert.to_json()
        out["pitch"] = {"codes": list(self.pitch), "rate_hz": RATES["pitch"], "dedup": True,
                        "code_seconds": self.pitch_code_samples / self.sample_rate}
        out["style"] = {"codes": list(self.style), "rate_hz": RATES["style"], "dedup": False,
                        "code_seconds": self.style_code_samples / self.sample_rate}
        out["expressive_tokens"] = [
            {"token": t.string, "stream": t.stream, "index": t.index, "frames": list(t.frames),
             "time_span": [round(t.time_span[0], 6), round(t.time_span[1], 6)]} for t in self.tokens]
        out["token_string"] = self.token_string()
        return out


def _stream_tokens(chunks: list[Chunk], code_frames: int, hubert: SpeechUnits,
                   chunk_ends: list[int]) -> dict[int, tuple[tuple[int, int], tuple[float, float]]]:
    """Frame and time spans of every code index of a pitch/style stream (cut at its chunk's end)."""
    hop = round(hubert.frame_seconds * hubert.sample_rate)
    spans = {}
    for c, chunk in enumerate(chunks):
        hubert_chunk = hubert.chunks[c]
        end_sample = chunk_ends[c]
        for j in range(chunk.num_frames):
            a_local, b_local = j * code_frames, (j + 1) * code_frames
            start_sample = chunk.start_sample + a_local * hop
            stop_sample = min(chunk.start_sample + b_local * hop, end_sample)
            b_cut = min(b_local, -(-(end_sample - chunk.start_sample) // hop))  # frames reaching the chunk's end
            spans[chunk.start_frame + j] = (
                (hubert_chunk.start_frame + a_local, hubert_chunk.start_frame + b_cut),
                (start_sample / hubert.sample_rate, stop_sample / hubert.sample_rate))
    return spans


def merge_units(hubert: SpeechUnits, pitch: list[int], style: list[int], pitch_chunks: list[Chunk],
                style_chunks: list[Chunk], *, chunk_ends: list[int], pitch_code_samples: int = 1280,
                style_code_samples: int = 16_000, f0=None, vuv=None) -> ExpressiveUnits:
    """Interleave the streams (:func:`merge_order`) and give every token its frame and time span."""
    hop = round(hubert.frame_seconds * hubert.sample_rate)
    for name, samples in (("pitch", pitch_code_samples), ("style", style_code_samples)):
        if samples % hop:
            raise ValueError(f"a {name} code covers {samples} samples, not a whole number of "
                             f"{hop}-sample HuBERT frames")
    if not len(hubert.chunks) == len(pitch_chunks) == len(style_chunks) == len(chunk_ends):
        raise ValueError("HuBERT, pitch and style were encoded over different chunks")
    hubert_times = hubert.time_spans()
    hubert_spans = {}
    for k, (a, b) in enumerate(hubert.spans):
        hubert_spans[a] = ((a, b), hubert_times[k])
    extra = {"pitch": _stream_tokens(pitch_chunks, pitch_code_samples // hop, hubert, chunk_ends),
             "style": _stream_tokens(style_chunks, style_code_samples // hop, hubert, chunk_ends)}
    tokens = []
    for name, unit, a, b in merge_order({"hubert": hubert.units, "pitch": pitch, "style": style}):
        if name == "hubert":
            frames, times = hubert_spans[a]
        else:
            frames = (extra[name][a][0][0], extra[name][b - 1][0][1])
            times = (extra[name][a][1][0], extra[name][b - 1][1][1])
        tokens.append(StreamToken(name, unit, a, frames, times))
    return ExpressiveUnits(hubert, list(pitch), list(style), list(pitch_chunks), list(style_chunks), tokens,
                           pitch_code_samples, style_code_samples, f0, vuv)


class ExpressiveTokenizer:
    """Audio -> :class:`ExpressiveUnits`, as ``spiritlm.speech_tokenizer.spiritlm_expressive()`` tokenises.

    Build with :meth:`from_dir` (SpiritLM's ``speech_tokenizer/`` folder: ``hubert_25hz/``,
    ``vqvae_f0_quantizer/``, ``style_encoder_w2v2/``). FCPE's weights come from the installed
    ``torchfcpe`` package unless ``fcpe_weights`` is given.
    """

    def __init__(self, hubert: SpeechTokenizer, pitch: PitchTokenizer, style: StyleEncoder, *,
                 max_chunk_samples: int = MAX_CHUNK_SAMPLES, min_chunk_samples: int = MIN_CHUNK_SAMPLES,
                 name: str = "expressive speech tokenizer"):
        self.hubert, self.pitch, self.style = hubert, pitch, style
        self.max_chunk = max_chunk_samples
        self.min_chunk = max(min_chunk_samples, hubert.min_samples, pitch.min_samples, style.min_samples)
        self.name = name

    @classmethod
    def from_dir(cls, speech_tokenizer_dir: str | Path, *, output_layer: int = DEFAULT_OUTPUT_LAYER,
                 fcpe_weights: str | Path | None = None, max_chunk_samples: int = MAX_CHUNK_SAMPLES,
                 min_chunk_samples: int = MIN_CHUNK_SAMPLES) -> "ExpressiveTokenizer":
        directory = Path(speech_tokenizer_dir)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: speech tokenizer directory not found")
        hubert = SpeechTokenizer.from_dir(directory, output_layer=output_layer, max_chunk_samples=max_chunk_samples,
                                          min_chunk_samples=min_chunk_samples)
        return cls(hubert, PitchTokenizer.from_dir(directory, fcpe_weights=fcpe_weights), StyleEncoder.from_dir(directory),
                   max_chunk_samples=max_chunk_samples, min_chunk_samples=min_chunk_samples, name=str(directory))

    @property
    def sample_rate(self) -> int:
        return self.hubert.sample_rate

    @property
    def frame_seconds(self) -> float:
        return self.hubert.frame_seconds

    @property
    def min_samples(self) -> int:
        return self.min_chunk

    def encode(self, audio, sample_rate: float | None = None, *, expressive: bool = True) -> ExpressiveUnits | SpeechUnits:
        """Units of ``audio`` (a path, ``[N]``/``[C, N]`` array or tensor, or a Waveform; stereo is averaged,
        other rates resampled with soxr). ``expressive=False`` gives the HuBERT units only.

        Raises ValueError naming the input when it is shorter than :attr:`min_samples` (1280 samples).
        """
        wave = load_audio(audio, sample_rate, target_sample_rate=self.sample_rate)
        if not expressive:
            return self.hubert.encode(wave)
        if wave.num_samples < self.min_samples:
            raise ValueError(f"{wave.source}: {wave.num_samples} samples ({1000 * wave.duration_s:.1f} ms) are too "
                             f"short for expressive tokens: at least {self.min_samples} samples at "
                             f"{self.sample_rate} Hz are needed (SpiritLM's minimum chunk)")
        hubert = self.hubert.encode(wave)
        samples = torch.from_numpy(wave.samples)
        pitch, style, pitch_chunks, style_chunks, ends, f0s, vuvs = [], [], [], [], [], [], []
        ranges = plan_chunks(wave.num_samples, self.max_chunk, self.min_chunk)
        if len(ranges) != len(hubert.chunks):
            raise ValueError(f"{wave.source}: HuBERT encoded {len(hubert.chunks)} chunks, pitch/style {len(ranges)}")
        for start, end in ranges:
            chunk = samples[start:end]
            codes = self.pitch.encode(chunk, source=wave.source)
            pitch_chunks.append(Chunk(start, len(pitch), len(codes.codes)))
            pitch += codes.codes
            f0s.append(codes.f0)
            vuvs.append(codes.vuv)
            styles = self.style.encode(chunk.numpy(), source=wave.source)
            style_chunks.append(Chunk(start, len(style), len(styles.codes)))
            style += styles.codes
            ends.append(end)
        return merge_units(hubert, pitch, style, pitch_chunks, style_chunks, chunk_ends=ends,
                           pitch_code_samples=self.pitch.code_samples,
                           style_code_samples=self.style.frame_samples * self.style.pool_size,
                           f0=np.concatenate(f0s), vuv=np.concatenate(vuvs))


def is_expressive_dir(speech_tokenizer_dir: str | Path) -> bool:
    """Whether a ``speech_tokenizer/`` folder has the pitch quantizer and the style encoder."""
    from spiritlens.units.pitch import F0_MODEL_FILE
    from spiritlens.units.style import STYLE_WEIGHTS_FILE

    directory = Path(speech_tokenizer_dir)
    return (directory / F0_MODEL_FILE).is_file() and (directory / STYLE_WEIGHTS_FILE).is_file()


__all__ = ["ExpressiveTokenizer", "ExpressiveUnits", "StreamToken", "merge_order", "merge_units", "units_string",
           "stream_runs", "is_expressive_dir", "RATES", "STREAMS"]

