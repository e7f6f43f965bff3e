"""The flite backend and its binding: libflite in process through ctypes, segment end times as word times."""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any
import numpy as np
from spiritlens.spoken.numbers import strip_accents
from spiritlens.spoken.form import SpokenForm
from spiritlens.data.tts.backend import Synthesis, TTSError, TTSUnavailable, _Backend


class _FliteVoice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("features", ctypes.c_void_p), ("ffunctions", ctypes.c_void_p),
                ("utt_init", ctypes.c_void_p)]


class _FliteWave(ctypes.Structure):
    _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
                ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short))]


class _Flite:
    """libflite (the CMU flite 2.x C library) through ctypes; one per process, used under a lock.

    flite's voices draw noise excitation from the C library's ``rand()``: unseeded, the same text gave
    a different waveform on every call (awb, slt, rms; measured), and pocketsphinx heard "offended"
    for "the founder" in one of them. Each synthesis seeds ``rand()`` first (``srand(RAND_SEED)``),
    so the same text and voice give the same samples, as the ``flite`` program's first call does.
    """

    RAND_SEED = 1  # the C library's default seed: what a fresh process (the flite program) starts from

    LIBRARY = "libflite.so.1"

    def __init__(self):
        self.lock = threading.Lock()
        self.lib = None
        self.voices: dict[str, int] = {}

    def load(self, voice: str):
        if self.lib is None:
            try:
                lib = ctypes.CDLL(self.LIBRARY)
            except OSError as error:
                raise TTSUnavailable(f"flite: cannot load {self.LIBRARY} ({error}); install flite "
                                     "(apt-get install flite)") from None
            for name, res, args in [
                ("flite_synth_text", ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_void_p]),
                ("utt_wave", ctypes.POINTER(_FliteWave), [ctypes.c_void_p]),
                ("utt_relation", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
                ("relation_head", ctypes.c_void_p, [ctypes.c_void_p]),
                ("item_next", ctypes.c_void_p, [ctypes.c_void_p]),
                ("flite_path_to_item", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
                ("flite_ffeature_string", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_char_p]),
                ("flite_ffeature_float", ctypes.c_float, [ctypes.c_void_p, ctypes.c_char_p]),
                ("flite_feat_set_float", None, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_float]),
                ("delete_utterance", None, [ctypes.c_void_p]),
            ]:
                getattr(lib, name).restype, getattr(lib, name).argtypes = res, args
            lib.flite_init()
            self.srand = ctypes.CDLL(None).srand  # the process's C library (flite's rand())
            self.srand.argtypes, self.srand.restype = [ctypes.c_uint], None
            self.lib = lib
        if voice not in self.voices:
            library = f"libflite_cmu_us_{voice}.so.1"
            try:
                register = getattr(ctypes.CDLL(library), f"register_cmu_us_{voice}")
            except (OSError, AttributeError) as error:
                raise TTSUnavailable(f"flite: cannot load voice {voice!r} from {library} ({error})") from None
            register.restype, register.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
            self.voices[voice] = register(None)
        return self.lib, self.voices[voice]

    def speak(self, text: str, voice: str, duration_stretch: float) -> tuple[np.ndarray, int, list]:
        """Samples, rate and per input token ``(start_s, end_s)`` (``None`` for a token with no segment)."""
        with self.lock:
            lib, vox = self.load(voice)
            features = ctypes.cast(vox, ctypes.POINTER(_FliteVoice)).contents.features
            lib.flite_feat_set_float(features, b"duration_stretch", float(duration_stretch))
            self.srand(self.RAND_SEED)
            utt = lib.flite_synth_text(text.encode("ascii", "replace"), vox)
            if not utt:
                raise TTSError(f"flite: synthesis of {text!r} failed")
            try:
                wave = lib.utt_wave(utt).contents
                samples = np.ctypeslib.as_array(wave.samples, shape=(wave.num_samples * wave.num_channels,)).copy()
                tokens, item = {}, lib.relation_head(lib.utt_relation(utt, b"Token"))
                while item:
                    tokens[item] = len(tokens)
                    item = lib.item_next(item)
                times: list = [None] * len(tokens)
                start, item = 0.0, lib.relation_head(lib.utt_relation(utt, b"Segment"))
                while item:
                    end = float(lib.flite_ffeature_float(item, b"end"))
                    token = lib.flite_path_to_item(item, b"R:SylStructure.parent.parent.R:Token.parent")
                    if token and token in tokens and lib.flite_ffeature_string(item, b"name") != b"pau":
                        k = tokens[token]
                        times[k] = (start, end) if times[k] is None else (times[k][0], end)
                    start, item = end, lib.item_next(item)
                return samples, int(wave.sample_rate), times
            finally:
                lib.delete_utterance(utt)


_FLITE = _Flite()


class FliteTTS(_Backend):
    """flite 2.x through libflite: voices slt/awb/rms (16 kHz), kal (8 kHz); ``duration_stretch`` > 1 speaks slower."""

    name = "flite"
    voices = ("slt", "awb", "rms", "kal")

    def __init__(self, voice: str = "awb", duration_stretch: float | None = None):
        self.voice = self._check_voice(voice)
        if duration_stretch is not None and not 0.25 <= duration_stretch <= 4.0:
            raise ValueError(f"flite: duration_stretch must be between 0.25 and 4, got {duration_stretch}")
        self.duration_stretch = duration_stretch

    @property
    def settings(self) -> dict[str, Any]:
        return {"duration_stretch": self.duration_stretch}

    def available(self) -> bool:
        try:
            with _FLITE.lock:
                _FLITE.load(self.voice)
        except TTSUnavailable:
            return False
        return True

    def synthesize_spoken(self, form: SpokenForm, path: str | os.PathLike) -> Synthesis:
        if not form.words:
            raise TTSError(f"{self.name}: text to synthesise is empty")
        text = strip_accents(form.tts_text)  # flite reads ASCII; one token per spoken word either way
        samples, rate, times = _FLITE.speak(text, self.voice, self.duration_stretch or 1.0)
        if len(times) != len(form.words):
            raise TTSError(f"flite: read {len(times)} tokens in {text!r}, expected {len(form.words)} words")
        return self._write(form, path, samples, rate, times)
