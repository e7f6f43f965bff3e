"""What every TTS backend gives: a WAV and one :class:`WordTime` per spoken word (seconds); errors; the shared writer."""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
import numpy as np
import soundfile as sf
from spiritlens._io import write_atomic
from spiritlens.spoken.form import SpokenForm, spoken_form


class TTSError(RuntimeError):
    """Synthesis of one text failed."""


class TTSUnavailable(RuntimeError):
    """A TTS backend cannot run here (library or package missing)."""


@dataclass(frozen=True)
class WordTime:
    """Where the synthesiser put one spoken word (ground truth): ``text`` the transcript word,
    ``[char_start, char_end)`` the prompt characters it reads, ``[start_s, end_s)`` seconds from the
    start of the audio file."""

    text: str
    char_start: int
    char_end: int
    start_s: float
    end_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Synthesis:
    """A synthesised WAV: ``path``, ``sample_rate`` (Hz), ``num_samples``, the ``spoken`` form it says, and
    ``words`` (one :class:`WordTime` per spoken word, ``None`` for a word the synthesiser gave no
    sound; ``words`` is ``None`` when the backend reports no times)."""

    path: Path
    sample_rate: int
    num_samples: int
    spoken: SpokenForm
    words: tuple[WordTime | None, ...] | None


@runtime_checkable
class TTSBackend(Protocol):
    """What :func:`synthesize_corpus` needs from a synthesiser."""

    name: str
    voice: str

    @property
    def settings(self) -> dict[str, Any]:
        """Every parameter that changes the audio (part of the cache key)."""
        ...

    def available(self) -> bool: ...

    def synthesize_spoken(self, form: SpokenForm, path: str | os.PathLike) -> Synthesis:
        """Write ``form.tts_text`` as a mono WAV to ``path``; raise TTSError on failure."""
        ...


class _Backend:
    """Shared parts: voice check, ``synthesize(text, path)``, WAV writing."""

    name = ""
    voices: tuple[str, ...] = ()
    voice = ""

    def _check_voice(self, voice: str) -> str:
        if voice not in self.voices:
            raise ValueError(f"{self.name}: unknown voice {voice!r}; choose one of {', '.join(self.voices)}")
        return voice

    @property
    def settings(self) -> dict[str, Any]:
        return {}

    def synthesize(self, text: str, path: str | os.PathLike) -> Path:
        """Write the spoken form of ``text`` as a mono WAV to ``path`` and return the path."""
        if not isinstance(text, str) or not text.strip():
            raise TTSError(f"{self.name}: text to synthesise is empty")
        return self.synthesize_spoken(spoken_form(text), path).path

    def _write(self, form: SpokenForm, path, samples: np.ndarray, rate: int, times) -> Synthesis:
        if len(samples) == 0:
            raise TTSError(f"{self.name}: synthesis of {form.tts_text!r} produced no audio")
        path = Path(path)
        wav = io.BytesIO()
        sf.write(wav, samples, rate, subtype="PCM_16", format="WAV")
        write_atomic(path, wav.getvalue())  # whole or not at all, with the mode open() would give
        words = None if times is None else tuple(
            None if t is None else WordTime(w.text, w.char_start, w.char_end, round(t[0], 5), round(t[1], 5))
            for w, t in zip(form.words, times))
        return Synthesis(path, int(rate), len(samples), form, words)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(voice={self.voice!r}, settings={self.settings})"
