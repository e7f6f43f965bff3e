"""Audio in: any file, array or tensor -> 16 kHz mono float32 (what mHuBERT expects).

``load_audio`` reads files with soundfile (wav, flac, ogg, mp3, ...), averages up to two channels
to mono and resamples with ``soxr.resample(x, sr, 16000)`` at soxr's default quality (spiritlens' rule; SpiritLM itself uses torchaudio, which we do not install, so resampled audio can differ
from SpiritLM's in the last bits).

Arrays and tensors carry no sample rate: ``sample_rate=None`` means 16 kHz (a 1-D
waveform is 16 kHz unless a sample rate is given). Integer arrays are PCM and are scaled to [-1, 1)
as soundfile reads the same samples from a file: a signed ``b``-bit sample ``x`` gives
``x / 2**(b-1)``; an unsigned one is centred first, ``(x - 2**(b-1)) / 2**(b-1)`` (8-bit WAV audio is
unsigned: 128 is silence). Float arrays (float16/32/64, bfloat16 tensors) are taken as they are.

Plausibility, checked before the audio costs memory or time (one-line ValueError naming the input):

- the sample rate lies in ``MIN_SAMPLE_RATE``..``MAX_SAMPLE_RATE`` (4 kHz..768 kHz): a WAV header
  declaring 1 Hz would be resampled into 16000 times as many samples;
- the audio lasts at most ``max_seconds`` (default ``MAX_SECONDS``, 10 minutes: Known prompts last
  seconds, SpiritLM encodes 100 s chunks), read from the file's header before its samples are read
  (and no more than that many samples are ever read); ``max_seconds=None`` lifts the limit
  (``spiritlens units --max-audio-seconds``);
- no sample is NaN or infinite, and none exceeds ``MAX_AMPLITUDE`` (10, i.e. 20 dB above full
  scale) in magnitude: float audio of amplitude 1e30, or float samples in integer scale (32767), is
  a scaling error that mHuBERT (which does not normalise) would tokenise without a word.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TARGET_SAMPLE_RATE = 16_000
MAX_CHANNELS = 2
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 768_000
MAX_SECONDS = 600.0
MAX_AMPLITUDE = 10.0


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


def load_audio(source, sample_rate: float | None = None, *, target_sample_rate: int = TARGET_SAMPLE_RATE,
               max_seconds: float | None = MAX_SECONDS) -> Waveform:
    """Read ``source`` and return it as a mono float32 :class:`Waveform` at ``target_sample_rate``.

    ``source``: a path (``str``/``Path``); a numpy array or torch tensor ``[N]``, ``[C, N]`` or
    ``[N, C]`` with ``C <= 2`` (the shorter axis is taken as channels); or a :class:`Waveform`
    (returned as is when already at the target rate). ``sample_rate``: the rate of an array or
    tensor (default 16 kHz); for a file, the file's own rate is used and a different
    ``sample_rate`` is an error. ``max_seconds``: the longest audio accepted (None: no limit; a
    :class:`Waveform` passes, its duration was checked when it was loaded).
    Raises ``FileNotFoundError`` for a missing file and a one-line ``ValueError`` naming the input for
    unreadable or empty files, zero-length audio, NaN/Inf samples, samples beyond ``MAX_AMPLITUDE``,
    more than two channels, a sample rate outside 4 kHz..768 kHz or audio longer than ``max_seconds``
    (module docstring).
    """
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and not isinstance(max_seconds, bool)
                                        and max_seconds > 0):
        raise ValueError(f"max_seconds must be a number > 0 or None, got {max_seconds!r}")
    if isinstance(source, Waveform):  # its duration was checked when it was loaded (perhaps with the limit lifted)
        name, data, rate, max_seconds = source.source, source.samples, source.sample_rate, None
        if sample_rate is not None and sample_rate != rate:
            raise ValueError(f"{name}: sample_rate={sample_rate} given for a Waveform at {rate} Hz")
    elif isinstance(source, (str, os.PathLike)):
        name = str(source)
        data, rate = _read_file(Path(source), max_seconds)
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
    _check_duration(mono.shape[0], rate, max_seconds, name)
    if not np.isfinite(mono).all():
        bad = int((~np.isfinite(mono)).sum())
        raise ValueError(f"{name}: the audio contains {bad} NaN or infinite sample(s)")
    peak = float(np.abs(mono).max())
    if peak > MAX_AMPLITUDE:
        raise ValueError(f"{name}: samples reach {peak:.6g}, beyond the plausible amplitude {MAX_AMPLITUDE:g} "
                         "(full scale is 1: float audio in integer scale, or damaged)")
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


def _read_file(path: Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """``[N, C]`` float32 samples and the sample rate of an audio file; the rate and the duration
    the header declares are checked before any sample is read, and at most ``max_seconds`` of
    samples (plus one) are read whatever the header says."""
    import soundfile

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such audio file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the audio file is empty (0 bytes)")
    try:
        info = soundfile.info(str(path))
        rate = _check_rate(info.samplerate, str(path))
        if info.channels > MAX_CHANNELS:
            raise ValueError(f"{path}: {info.channels} channels found, at most {MAX_CHANNELS} (mono or stereo) "
                             "are supported")
        if 0 < info.frames < 2**62:
            _check_duration(info.frames, rate, max_seconds, str(path))
        frames = -1 if max_seconds is None else int(max_seconds * rate) + 1
        data, rate = soundfile.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except ValueError:
        raise
    except Exception as error:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(f"{path}: cannot read audio file ({reason})") from None
    if data.shape[0] == 0:
        raise ValueError(f"{path}: the audio file has zero length (no samples)")
    return data, rate


def _check_duration(num_samples: int, rate: float, max_seconds: float | None, name: str) -> None:
    if max_seconds is not None and num_samples > max_seconds * rate:
        raise ValueError(f"{name}: {num_samples / rate:.1f} s of audio, longer than the limit of {max_seconds:g} s "
                         "(pass max_seconds=None, or --max-audio-seconds on the command line, to lift it)")


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
    """The sample rate as a number in ``MIN_SAMPLE_RATE``..``MAX_SAMPLE_RATE``; ValueError naming ``name``."""
    try:
        value = float(rate)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name}: sample rate {rate!r:.40} is not a number") from None
    if isinstance(rate, bool) or not math.isfinite(value) or not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise ValueError(f"{name}: sample rate {rate!r:.40} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz "
                         "(not a plausible audio rate)")
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
