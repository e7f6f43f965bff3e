"""Audio in: any file, array or tensor -> 16 kHz mono float32 (what mHuBERT expects).

``load_audio`` reads files with soundfile (wav, flac, ogg, mp3, ...), averages up to two channels
to mono and resamples with ``soxr.resample(x, sr, 16000)`` at soxr's default quality (the rule in
DESIGN.md; SpiritLM itself uses torchaudio, which we do not install, so resampled audio can differ
from SpiritLM's in the last bits).

Arrays and tensors carry no sample rate: ``sample_rate=None`` means 16 kHz (DESIGN.md: "a 1-D
waveform, 16 kHz unless a sample rate is given"). Integer arrays are PCM and are scaled to [-1, 1)
as soundfile reads the same samples from a file: a signed ``b``-bit sample ``x`` gives
``x / 2**(b-1)``; an unsigned one is centred first, ``(x - 2**(b-1)) / 2**(b-1)`` (8-bit WAV audio is
unsigned: 128 is silence). Float arrays (float16/32/64, bfloat16 tensors) are taken as they are.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TARGET_SAMPLE_RATE = 16_000
MAX_CHANNELS = 2


@dataclass(frozen=True)
class Waveform:
    """Mono audio ready for mHuBERT.

    ``samples``: float32 ``[N]`` at ``sample_rate`` (16 kHz); ``source``: what it was read from
    (a path, or a description of an array), for error messages.
    """

    samples: np.ndarray
    sample_rate: int
    source: str

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


def load_audio(source, sample_rate: float | None = None, *,
               target_sample_rate: int = TARGET_SAMPLE_RATE) -> Waveform:
    """Read ``source`` and return it as a mono float32 :class:`Waveform` at ``target_sample_rate``.

    ``source``: a path (``str``/``Path``); a numpy array or torch tensor ``[N]``, ``[C, N]`` or
    ``[N, C]`` with ``C <= 2`` (the shorter axis is taken as channels); or a :class:`Waveform`
    (returned as is when already at the target rate). ``sample_rate``: the rate of an array or
    tensor (default 16 kHz); for a file, the file's own rate is used and a different
    ``sample_rate`` is an error. Raises ``FileNotFoundError`` for a missing file and a one-line
    ``ValueError`` naming the input for unreadable or empty files, zero-length audio, NaN/Inf
    samples, more than two channels or a non-positive sample rate.
    """
    if isinstance(source, Waveform):
        name, data, rate = source.source, source.samples, source.sample_rate
        if sample_rate is not None and sample_rate != rate:
            raise ValueError(f"{name}: sample_rate={sample_rate} given for a Waveform at {rate} Hz")
    elif isinstance(source, (str, os.PathLike)):
        name = str(source)
        data, rate = _read_file(Path(source))
        if sample_rate is not None and sample_rate != rate:
            raise ValueError(f"{name}: the file is at {rate} Hz but sample_rate={sample_rate} was given; "
                             "leave sample_rate unset for files")
    else:
        data = _to_numpy(source)
        name = f"<{type(source).__module__.split('.')[0]} array of shape {list(data.shape)}>"
        rate = TARGET_SAMPLE_RATE if sample_rate is None else sample_rate
    rate = _check_rate(rate, name)
    mono = _to_mono(data, name, channel_axis=1 if isinstance(source, (str, os.PathLike)) else None)
    if mono.shape[0] == 0:
        raise ValueError(f"{name}: the audio has zero length (no samples)")
    if not np.isfinite(mono).all():
        bad = int((~np.isfinite(mono)).sum())
        raise ValueError(f"{name}: the audio contains {bad} NaN or infinite sample(s)")
    if rate != target_sample_rate:
        import soxr

        mono = np.asarray(soxr.resample(mono, rate, target_sample_rate), dtype=np.float32)
        if mono.shape[0] == 0:
            raise ValueError(f"{name}: the audio is too short to resample from {rate} Hz to "
                             f"{target_sample_rate} Hz (no samples left)")
    return Waveform(samples=np.ascontiguousarray(mono, dtype=np.float32),
                    sample_rate=int(target_sample_rate), source=name)


def check_mono_samples(samples, min_samples: int, *, source: str, what: str) -> None:
    """ValueError naming ``source`` unless ``samples`` is 1-D (mono) with at least ``min_samples`` samples
    at 16 kHz; ``what`` names the consumer ("pitch tokens", "a style token")."""
    shape = tuple(samples.shape)
    if len(shape) != 1:
        raise ValueError(f"{source}: expected a mono waveform [N] for {what}, got shape {list(shape)}")
    if shape[0] < min_samples:
        raise ValueError(f"{source}: {shape[0]} samples are too short for {what}: at least {min_samples} at "
                         f"16 kHz ({1000 * min_samples / 16000:.0f} ms)")


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    """``[N, C]`` float32 samples and the sample rate of an audio file."""
    import soundfile

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such audio file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the audio file is empty (0 bytes)")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(f"{path}: cannot read audio file ({reason})") from None
    if data.shape[0] == 0:
        raise ValueError(f"{path}: the audio file has zero length (no samples)")
    return data, rate


def _to_numpy(array) -> np.ndarray:
    if type(array).__module__.startswith("torch"):
        array = array.detach().cpu()
        if array.dtype.is_floating_point and array.dtype not in (_torch().float32, _torch().float64):
            array = array.float()
        array = array.numpy()
    if not isinstance(array, np.ndarray):
        raise ValueError(f"audio source of type {type(array).__name__} is not supported; pass a path, "
                         "a numpy array or a torch tensor")
    if array.dtype == np.bool_:
        raise ValueError("audio array of dtype bool is not supported; use float or integer PCM")
    if np.issubdtype(array.dtype, np.integer):
        half = 2 ** (8 * array.dtype.itemsize - 1)
        centred = array.astype(np.float64)
        if np.issubdtype(array.dtype, np.unsignedinteger):
            centred -= half  # unsigned PCM: the midpoint is silence
        return (centred / half).astype(np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"audio array of dtype {array.dtype} is not supported; use float or integer PCM")
    return array


def _torch():
    import torch

    return torch


def _check_rate(rate, name: str) -> float | int:
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: sample rate {rate!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: sample rate must be positive, got {rate!r}")
    return int(value) if value.is_integer() else value


def _to_mono(data: np.ndarray, name: str, channel_axis: int | None = None) -> np.ndarray:
    """``[N]`` float32 from ``[N]``, ``[C, N]`` or ``[N, C]`` (``C <= 2``, channels averaged).

    ``channel_axis``: known for files (soundfile gives ``[N, C]``); else the shorter axis.
    """
    if data.size == 0:
        raise ValueError(f"{name}: the audio has zero length (no samples)")
    if data.ndim == 1:
        return data.astype(np.float32, copy=False)
    if data.ndim != 2:
        raise ValueError(f"{name}: expected audio of shape [N], [C, N] or [N, C], got {list(data.shape)}")
    if channel_axis is None:
        channel_axis = 0 if data.shape[0] <= data.shape[1] else 1
    channels = data.shape[channel_axis]
    if channels > MAX_CHANNELS:
        raise ValueError(f"{name}: {channels} channels found, at most {MAX_CHANNELS} (mono or stereo) "
                         f"are supported (shape {list(data.shape)})")
    return data.astype(np.float32, copy=False).mean(axis=channel_axis, dtype=np.float32)
