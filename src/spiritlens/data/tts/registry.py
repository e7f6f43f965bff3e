"""TTS backends by name (``espeak``, ``flite``, ``melotts``)."""

from __future__ import annotations

from typing import Any
from spiritlens.data.tts.backend import TTSBackend, TTSUnavailable
from spiritlens.data.tts.espeak import EspeakTTS
from spiritlens.data.tts.flite import FliteTTS
from spiritlens.data.tts.melo import MeloTTS


BACKENDS: dict[str, type] = {"espeak": EspeakTTS, "flite": FliteTTS, "melotts": MeloTTS}


def get_backend(name: str, **kwargs: Any) -> TTSBackend:
    """Build the backend called ``name`` with ``kwargs``; a clear error if it is unknown or cannot run here."""
    if name not in BACKENDS:
        raise ValueError(f"unknown TTS backend {name!r}; available: {_describe_backends()}")
    backend = BACKENDS[name](**kwargs)
    if not backend.available():
        raise TTSUnavailable(f"TTS backend {name!r} cannot run here; available: {_describe_backends()}")
    return backend


def _describe_backends() -> str:
    parts = []
    for key, cls in BACKENDS.items():
        parts.append(key if cls().available() else f"{key} (not installed)")
    return ", ".join(parts)
