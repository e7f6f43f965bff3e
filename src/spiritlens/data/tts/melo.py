"""The MeloTTS backend (the paper's choice), when the ``melo`` package is importable; it reports no word times."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any
import soundfile as sf
from spiritlens.spoken.form import SpokenForm
from spiritlens.data.tts.backend import Synthesis, TTSError, TTSUnavailable, _Backend


class MeloTTS(_Backend):
    """MeloTTS (the paper's synthesiser), used only when the ``melo`` package is importable; no word times.

    Untested here: MeloTTS cannot be installed or fetch its checkpoints offline.
    """

    name = "melotts"

    def __init__(self, voice: str = "EN-US", speed: float = 1.0, device: str = "cpu"):
        self.voice = voice
        self.speed = float(speed)
        self.device = device
        self._model = None

    @property
    def settings(self) -> dict[str, Any]:
        return {"speed": self.speed}

    def available(self) -> bool:
        return importlib.util.find_spec("melo") is not None

    def synthesize_spoken(self, form: SpokenForm, path: str | os.PathLike) -> Synthesis:
        if not self.available():
            raise TTSUnavailable("melotts: the 'melo' package is not installed (see MeloTTS's README); use 'espeak' or 'flite'")
        if self._model is None:
            from melo.api import TTS  # lazy: heavy, optional

            self._model = TTS(language="EN", device=self.device)
        speakers = self._model.hps.data.spk2id
        if self.voice not in speakers:
            raise ValueError(f"melotts: unknown voice {self.voice!r}; choose one of {', '.join(speakers)}")
        path = Path(path)
        try:
            self._model.tts_to_file(form.tts_text, speakers[self.voice], str(path), speed=self.speed)
        except Exception as e:  # noqa: BLE001 - report any backend failure as one line
            raise TTSError(f"melotts: synthesis failed ({type(e).__name__}: {e})") from None
        info = sf.info(str(path))
        return Synthesis(path, int(info.samplerate), int(info.frames), form, None)
