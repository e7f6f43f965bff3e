"""espeak-ng through its C library (``libespeak-ng.so.1``, ctypes): speech with phoneme timings, and phonemes.

One process-wide engine (the library keeps global state), used under a lock:

- :func:`synthesize` returns the 16-bit samples (22,050 Hz for the standard voices) and every
  phoneme event the library reports while it synthesises: the character position of the word the
  phoneme belongs to (0-based, in characters of the input text) and the sample where the phoneme
  starts. Pauses are phonemes whose name starts with ``_``. Measured against the waveform, a
  phoneme event sits at the onset of its phoneme's energy (within 1 ms), while the library's WORD
  events can fire one phoneme early, so word times are built from phoneme events
  (:meth:`EspeakSpeech.word_times`).
- :func:`phonemes` returns the IPA phonemes espeak-ng says for a text, as the
  library's ``espeak_TextToPhonemes`` gives them (what the pocketsphinx aligner uses for words its
  dictionary lacks).

espeak-ng keeps state between calls: in one process the same text comes out a few samples (now and
then one pause ~10 ms) longer or shorter from call to call, and after many phoneme look-ups it can
even come out silent (measured on 1.51). So every use of the engine (speech and phonemes) runs in a
child forked from the process, whose engine has been initialised but never used: every call gives
the first call's result, the same audio as the ``espeak-ng`` program's (measured: sample for sample,
before the program's trailing silence), at ~40 ms a call. Where ``os.fork`` is missing the calls run
in process. Event layout and constants follow espeak-ng's public header ``speak_lib.h``
(API 1.51).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import threading
from dataclasses import dataclass

import numpy as np

from spiritlens.checkpoints import pickle_safe

__all__ = ["EspeakSpeech", "EspeakUnavailable", "LIBRARY", "available", "phoneme_names", "phonemes", "phonemes_of",
           "synthesize"]

LIBRARY = "libespeak-ng.so.1"
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED, _EVENT_PHONEME = 0, 7
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_RATE = 1
_PHONEMES_IPA = 0x02


class EspeakUnavailable(RuntimeError):
    """libespeak-ng cannot be loaded or initialised here."""


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class EspeakSpeech:
    """Samples ``[N]`` int16 at ``sample_rate`` Hz of ``text`` spoken by ``voice``, and the phoneme events
    ``(char, sample, name)``: ``char`` the 0-based character position in ``text`` of the phoneme's word,
    ``sample`` the sample where it starts, ``name`` espeak's phoneme mnemonic (pauses start with ``_``)."""

    samples: np.ndarray
    sample_rate: int
    phoneme_events: tuple[tuple[int, int, str], ...]
    text: str = ""
    voice: str = "en-us"

    def word_times(self, spans) -> list[tuple[float, float] | None]:
        """Start and end in seconds of each word given its character span ``[start, end)`` in ``text``.

        A word starts where its first phoneme starts and ends where the next phoneme (a pause or the
        next word's first) starts, or at the end of the audio. espeak-ng speaks some word pairs as one
        ("in the", "to the"): their phonemes all carry the first word's position. Such a group is
        split by the words' own pronunciations (:func:`phoneme_names` of each word alone): at the
        matching phoneme when the names agree, else by phoneme counts from the end. ``None`` for a
        word left with no phoneme.
        """
        speech = [(i, char) for i, (char, _, name) in enumerate(self.phoneme_events) if not name.startswith("_")]
        owned: list[list[int]] = []
        for a, b in spans:
            owned.append([i for i, char in speech if a <= char < b])
        for first in range(len(spans)):
            last = first
            while last + 1 < len(spans) and not owned[last + 1] and owned[first]:
                last += 1
            if last > first:
                self._split_group(spans, owned, first, last)
        out: list[tuple[float, float] | None] = []
        for idx in owned:
            if not idx:
                out.append(None)
                continue
            start = self.phoneme_events[idx[0]][1]
            end = self.phoneme_events[idx[-1] + 1][1] if idx[-1] + 1 < len(self.phoneme_events) else len(self.samples)
            out.append((start / self.sample_rate, min(end, len(self.samples)) / self.sample_rate))
        return out

    def _split_group(self, spans, owned, first: int, last: int) -> None:
        """Share the phonemes of word ``first`` among words ``first..last`` (see :meth:`word_times`)."""
        group = owned[first]
        names = [self.phoneme_events[i][2] for i in group]
        alone = phonemes_of([self.text[a:b] for a, b in spans[first:last + 1]], voice=self.voice, ipa=False)
        counts = [max(1, len(p)) for p in alone]
        if [n for p in alone for n in p] != names:  # pronounced differently together: counts from the end
            remaining = len(names)
            for k in range(len(counts) - 1, 0, -1):
                counts[k] = min(counts[k], max(0, remaining - k))
                remaining -= counts[k]
            counts[0] = remaining
        position = 0
        for k, count in enumerate(counts):
            owned[first + k] = group[position:position + count]
            position += count

class _Engine:
    def __init__(self):
        self.lock = threading.Lock()
        self.lib = None
        self.sample_rate = 0
        self.error: str | None = None
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str]] = []
        self._callback = _CALLBACK(self._on_synth)

    def load(self):
        if self.lib is None and self.error is None:
            try:
                lib = ctypes.CDLL(LIBRARY)
            except OSError as error:
                self.error = f"cannot load {LIBRARY} ({error}); install espeak-ng (apt-get install espeak-ng)"
                raise EspeakUnavailable(self.error) from None
            lib.espeak_Initialize.restype = ctypes.c_int
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                         ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
            lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                         _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
            if rate <= 0:
                self.error = f"{LIBRARY}: espeak_Initialize failed ({rate}); is espeak-ng-data installed?"
                raise EspeakUnavailable(self.error)
            lib.espeak_SetSynthCallback(self._callback)
            self.lib, self.sample_rate = lib, rate
        if self.error is not None:
            raise EspeakUnavailable(self.error)
        return self.lib

    def _on_synth(self, wav, count, events):
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                name = bytes(event.id).split(b"\0")[0].decode("utf-8", "replace")
                self._events.append((event.text_position - 1, event.sample, name))
            i += 1
        return 0

    def voice(self, lib, voice: str) -> None:
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng: unknown voice {voice!r}")


_ENGINE = _Engine()


def available() -> bool:
    """Whether libespeak-ng loads and initialises here."""
    try:
        with _ENGINE.lock:
            _ENGINE.load()
    except EspeakUnavailable:
        return False
    return True


def synthesize(text: str, *, voice: str = "en-us", rate: int = 175) -> EspeakSpeech:
    """Speak ``text`` (UTF-8, plain text) with ``voice`` at ``rate`` words per minute; see the module docstring.

    Raises ``EspeakUnavailable`` when the library is missing and ``ValueError`` for an unknown voice or
    a synthesis error.
    """
    return _in_child(_speak, text, voice, rate)


def phonemes(text: str, *, voice: str = "en-us") -> list[str]:
    """IPA phonemes espeak-ng says for ``text`` (stress marks attached), e.g. ``"Muawiyah"`` ->
    ``["m", "j", "ˈuː", "ɐ", "w", "ˌɪ", "j", "ə"]``: one call per word gives a word's pronunciation."""
    return phonemes_of([text], voice=voice)[0]


def phonemes_of(texts: list[str], *, voice: str = "en-us", ipa: bool = True) -> list[list[str]]:
    """:func:`phonemes` (``ipa=False``: :func:`phoneme_names`) of each text, in one call of the engine."""
    return _in_child(_texts_to_phonemes, list(texts), voice, _PHONEMES_IPA if ipa else 0)


def phoneme_names(text: str, *, voice: str = "en-us") -> list[str]:
    """espeak-ng's phoneme mnemonics for ``text``, stress marks removed: the names its phoneme events
    carry (``"in the"`` -> ``["I", "n", "D", "@2"]``)."""
    return phonemes_of([text], voice=voice, ipa=False)[0]


def _in_child(function, *args):
    """``function(*args)`` on the engine in a child forked from this process, whose engine has been
    initialised and never used: every call starts from the same state (module docstring). Where
    ``os.fork`` is missing it runs here. Errors are raised here; a child that dies is a ``ValueError``."""
    with _ENGINE.lock:
        _ENGINE.load()
        if not hasattr(os, "fork"):
            return function(*args)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child works once and exits
            os.close(read_end)
            try:
                result = function(*args)
            except BaseException as error:  # noqa: BLE001 - handed to the parent
                result = error if isinstance(error, (ValueError, EspeakUnavailable)) else RuntimeError(repr(error))
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(pickle.dumps(result, protocol=2))  # numpy arrays as _reconstruct + bytes
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(pid, 0)
    if not payload:
        raise ValueError(f"espeak-ng: {function.__name__} of {args[0]!r} ended without a result (wait status {status})")
    result = pickle_safe.loads(payload, f"espeak-ng child of {function.__name__}", _CHILD_GLOBALS)
    if isinstance(result, BaseException):
        raise result
    return result


#: All a child's pickled result may name: the classes it returns, and numpy's array pieces.
_CHILD_GLOBALS = {f"{c.__module__}.{c.__qualname__}": c for c in (EspeakSpeech, EspeakUnavailable)}
_CHILD_GLOBALS.update({"builtins.ValueError": ValueError, "builtins.RuntimeError": RuntimeError,
                       **pickle_safe.NUMPY_GLOBALS})


def _speak(text: str, voice: str, rate: int) -> EspeakSpeech:
    """One synthesis on this process's engine."""
    lib = _ENGINE.load()
    _ENGINE.voice(lib, voice)
    lib.espeak_SetParameter(_RATE, int(rate), 0)
    _ENGINE._chunks, _ENGINE._events = [], []
    data = text.encode("utf-8")
    buffer = ctypes.create_string_buffer(data)
    status = lib.espeak_Synth(buffer, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    lib.espeak_Synchronize()
    if status != 0:
        raise ValueError(f"espeak-ng: espeak_Synth failed with status {status} for {text!r}")
    samples = np.concatenate(_ENGINE._chunks) if _ENGINE._chunks else np.zeros(0, np.int16)
    return EspeakSpeech(samples.astype(np.int16), _ENGINE.sample_rate, tuple(_ENGINE._events), text, voice)


def _texts_to_phonemes(texts: list[str], voice: str, mode: int) -> list[list[str]]:
    """Phonemes of each text on this process's engine (IPA or mnemonics per ``mode``), stress kept for IPA."""
    lib = _ENGINE.load()
    _ENGINE.voice(lib, voice)
    out = []
    for text in texts:
        pointer = ctypes.c_char_p(text.encode("utf-8"))
        names: list[str] = []
        while pointer.value:  # one clause per call; phonemes separated by "_" (bits 8-23), words by spaces
            result = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, mode | (ord("_") << 8))
            names += [name for word in (result or b"").decode("utf-8").split() for name in word.split("_") if name]
        out.append(names if mode else [n.lstrip("',%=") for n in names if n.lstrip("',%=")])
    return out
