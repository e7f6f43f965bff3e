"""The espeak-ng backend: libespeak-ng in process (``spiritlens.spoken.espeak``), with word times from its phoneme events."""

from __future__ import annotations

import os
from typing import Any
from spiritlens.spoken import espeak
from spiritlens.spoken.form import SpokenForm
from spiritlens.data.tts.backend import Synthesis, TTSError, TTSUnavailable, _Backend


class EspeakTTS(_Backend):
    """espeak-ng through libespeak-ng (22,050 Hz). ``rate`` in words per minute (espeak's default 175)."""

    name = "espeak"
    voices = ("en-us", "en", "en-gb", "en-us+f3", "en-us+m3")
    sample_rate = 22050

    def __init__(self, voice: str = "en-us", rate: int = 175):
        self.voice = self._check_voice(voice)
        if not 80 <= rate <= 450:
            raise ValueError(f"espeak: rate must be 80-450 words per minute, got {rate}")
        self.rate = int(rate)

    @property
    def settings(self) -> dict[str, Any]:
        return {"rate": self.rate}

    def available(self) -> bool:
        return espeak.available()

    def synthesize_spoken(self, form: SpokenForm, path: str | os.PathLike) -> Synthesis:
        if not form.words:
            raise TTSError(f"{self.name}: text to synthesise is empty")
        try:
            speech = espeak.synthesize(form.tts_text, voice=self.voice, rate=self.rate)
        except espeak.EspeakUnavailable as error:
            raise TTSUnavailable(f"espeak: {error}") from None
        except ValueError as error:
            raise TTSError(f"espeak: {error}") from None
        times = speech.word_times([(w.tts_start, w.tts_end) for w in form.words])
        return self._write(form, path, speech.samples, speech.sample_rate, times)
