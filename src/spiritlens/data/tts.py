"""Speech synthesis of prompts: TTS backends that report where each word is, and a disk cache with a manifest.

Every backend is given the text of :func:`spiritlens.spoken.spoken_form` (numbers, symbols,
abbreviations spelled out), so what is said is what the aligners align. Backends
(``get_backend(name)``):

- ``espeak``: libespeak-ng in process (ctypes, :mod:`spiritlens.espeak`), ``en-us`` by default, ``rate``
  in words per minute; 22,050 Hz; robotic but always available offline (the default). **Ground
  truth**: each word starts where its first phoneme starts and ends where the next phoneme (a pause
  or the next word) starts, from the library's phoneme events.
- ``flite``: libflite in process (ctypes), voices slt/awb/rms (16 kHz) and kal (8 kHz), optional
  ``duration_stretch`` (> 1 is slower); more natural than espeak. **Ground truth**: flite's
  utterance gives every segment's end time; a word spans its segments (pauses excluded). flite
  reads ASCII, so accents are folded first (``Zürich`` -> ``Zurich``).
- ``melotts``: MeloTTS, the paper's choice, when the ``melo`` package is importable (it is not
  installable offline; imported lazily, never required); it reports no word times.

``backend.synthesize_spoken(form, path)`` returns a :class:`Synthesis` (the WAV and one
:class:`WordTime` per spoken word, seconds from the start of the file); ``backend.synthesize(text,
path)`` writes the WAV of ``spoken_form(text)`` and returns its path.

:func:`synthesize_corpus` writes ``<out_dir>/<item_id>.wav`` and ``<out_dir>/manifest.json`` (each
entry with its TTS text and word times) and re-synthesises an item only when its text, TTS text,
backend, voice or settings changed or its file is missing or does not match the recorded checksum.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from spiritlens import espeak
from spiritlens._io import read_json, sha256_file, write_json_atomic as atomic_write_json
from spiritlens.numbers import strip_accents
from spiritlens.spoken import SpokenForm, spoken_form

__all__ = [
    "BACKENDS",
    "EspeakTTS",
    "FliteTTS",
    "MeloTTS",
    "SpeechEntry",
    "Synthesis",
    "SynthesisResult",
    "TTSBackend",
    "TTSError",
    "TTSUnavailable",
    "WordTime",
    "get_backend",
    "load_manifest",
    "synthesize_corpus",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2
_ITEM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
        sf.write(str(path), samples, rate, subtype="PCM_16", format="WAV")
        words = None if times is None else tuple(
            None if t is None else WordTime(w.text, w.char_start, w.char_end, round(t[0], 5), round(t[1], 5))
            for w, t in zip(form.words, times))
        return Synthesis(path, int(rate), len(samples), form, words)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(voice={self.voice!r}, settings={self.settings})"


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


class MeloTTS(_Backend):
    """MeloTTS (the paper's synthesiser), used only when the ``melo`` package is importable; no word times.

    Untested here: MeloTTS cannot be installed or fetch its checkpoints offline (SPEECH.md, section 9).
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


@dataclass
class SpeechEntry:
    """One manifest row. ``path`` is relative to the corpus folder; ``error`` is set when synthesis failed.

    ``tts_text`` is what the synthesiser was given (``spoken_form(text).tts_text``); ``words`` the
    ground truth, one dict per spoken word (``text``, ``char_start``, ``char_end``, ``start_s``,
    ``end_s``; ``None`` for a word with no sound), or ``None`` when the backend reports no times.
    """

    item_id: str
    text: str
    backend: str
    voice: str
    settings: dict[str, Any] = field(default_factory=dict)
    tts_text: str | None = None
    path: str | None = None
    sample_rate: int | None = None
    duration: float | None = None
    sha256: str | None = None
    words: list[dict[str, Any] | None] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.path is not None

    def same_request(self, other: SpeechEntry) -> bool:
        keys = ("text", "tts_text", "backend", "voice", "settings")
        return all(getattr(self, k) == getattr(other, k) for k in keys)

    def word_times(self) -> list[WordTime | None] | None:
        """The ground-truth word times as :class:`WordTime` (``None`` if the backend reported none)."""
        return None if self.words is None else [None if w is None else WordTime(**w) for w in self.words]


@dataclass
class SynthesisResult:
    """Outcome of :func:`synthesize_corpus`: entries in input order and what was done."""

    entries: list[SpeechEntry]
    manifest_path: Path
    synthesized: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def ok_items(self) -> list[tuple[str, str, Path]]:
        """``(item_id, text, absolute audio path)`` of every synthesised item (the input of ``wer_check``)."""
        root = self.manifest_path.parent
        return [(e.item_id, e.text, root / e.path) for e in self.entries if e.ok]

    def audio_path(self, item_id: str) -> Path:
        """Absolute path of a synthesised item; KeyError if it is absent or failed."""
        for entry in self.entries:
            if entry.item_id == item_id and entry.ok:
                return self.manifest_path.parent / entry.path
        raise KeyError(f"no synthesised audio for item {item_id!r}")


def load_manifest(out_dir: str | os.PathLike) -> dict[str, SpeechEntry]:
    """Entries of ``out_dir/manifest.json`` by item id (empty if there is none)."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return {}
    data = read_json(path, "speech manifest")
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ValueError(f"speech manifest {path} has no 'entries' list")
    try:
        return {e["item_id"]: SpeechEntry(**e) for e in data["entries"]}
    except (TypeError, KeyError) as e:
        raise ValueError(f"speech manifest {path} has a malformed entry ({e})") from None


def _write_manifest(path: Path, entries: dict[str, SpeechEntry]) -> None:
    atomic_write_json(path, {"version": MANIFEST_VERSION, "entries": [asdict(e) for e in entries.values()]})


def _cached(entry: SpeechEntry | None, request: SpeechEntry, out_dir: Path) -> bool:
    if entry is None or not entry.ok or not entry.same_request(request):
        return False
    audio = out_dir / entry.path
    return audio.is_file() and sha256_file(audio) == entry.sha256


def _synthesize_one(backend: TTSBackend, request: SpeechEntry, form: SpokenForm, out_dir: Path) -> SpeechEntry:
    """Synthesise into a temporary file, then move it into place; failures become ``error``."""
    final = out_dir / f"{request.item_id}.wav"
    fd, tmp = tempfile.mkstemp(prefix=f".{request.item_id}.", suffix=".wav", dir=out_dir)
    os.close(fd)
    try:
        synthesis = backend.synthesize_spoken(form, tmp)
        info = sf.info(tmp)
        if info.frames == 0:
            raise TTSError(f"{backend.name}: wrote an empty WAV")
        digest = sha256_file(tmp)
        os.replace(tmp, final)
    except TTSUnavailable:
        Path(tmp).unlink(missing_ok=True)
        raise
    except Exception as e:  # noqa: BLE001 - one failing item must not stop the corpus
        Path(tmp).unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        return SpeechEntry(**{**asdict(request), "error": f"{type(e).__name__}: {e}"})
    words = None if synthesis.words is None else [None if w is None else w.to_dict() for w in synthesis.words]
    return SpeechEntry(
        **{**asdict(request), "path": final.name, "sample_rate": int(info.samplerate),
           "duration": round(info.frames / info.samplerate, 4), "sha256": digest, "words": words}
    )


def synthesize_corpus(
    items: Iterable[tuple[str, str]],
    backend: TTSBackend,
    out_dir: str | os.PathLike,
    *,
    progress: bool | None = None,
    save_every: int = 25,
) -> SynthesisResult:
    """Synthesise ``(item_id, text)`` pairs into ``out_dir`` with a cache and a manifest.

    Each text is spoken in its spoken form (:func:`spiritlens.spoken.spoken_form`); the manifest entry
    records the TTS text and the backend's word times. An item is reused when the manifest has it
    with the same text, TTS text, backend, voice and settings and its WAV still matches the recorded
    SHA-256; otherwise it is (re-)synthesised. A failure on one item (a text with no spoken form
    included) is recorded in its entry's ``error`` and the rest continue (a later run retries it); a
    backend that cannot run raises TTSUnavailable. The manifest keeps entries of items
    not passed this time; it is written atomically every ``save_every`` synthesised items and at
    the end. ``progress``: tqdm bar (None: only for more than 20 items on a terminal).
    """
    items = list(items)
    ids = [item_id for item_id, _ in items]
    for item_id in ids:
        if not isinstance(item_id, str) or not _ITEM_ID.match(item_id):
            raise ValueError(f"item id {item_id!r} must be a non-empty str of letters, digits, '_', '.', '-'")
    if len(set(ids)) != len(ids):
        raise ValueError("item ids passed to synthesize_corpus must be unique")
    if not backend.available():
        raise TTSUnavailable(f"TTS backend {backend.name!r} cannot run here; available: {_describe_backends()}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    manifest = load_manifest(out_dir)
    result = SynthesisResult(entries=[], manifest_path=manifest_path)
    settings = dict(backend.settings)
    start = time.perf_counter()
    show = None if progress is None and len(items) > 20 else bool(progress)
    pending = 0
    try:
        for item_id, text in tqdm(items, desc=f"TTS {backend.name}", unit="item", disable=None if show is None else not show):
            request = SpeechEntry(item_id=item_id, text=text, backend=backend.name, voice=backend.voice, settings=settings)
            try:
                form = spoken_form(text)
                if not form.words:
                    raise TTSError(f"{backend.name}: text to synthesise is empty")
            except (ValueError, TypeError, TTSError) as error:
                form, entry = None, SpeechEntry(**{**asdict(request), "error": f"{type(error).__name__}: {error}"})
            else:
                request.tts_text = form.tts_text
                old = manifest.get(item_id)
                if _cached(old, request, out_dir):
                    result.entries.append(old)
                    result.reused.append(item_id)
                    continue
                entry = _synthesize_one(backend, request, form, out_dir)
            manifest[item_id] = entry
            result.entries.append(entry)
            if entry.ok:
                result.synthesized.append(item_id)
            else:
                result.failed.append((item_id, entry.error))
            pending += 1
            if pending >= save_every:
                _write_manifest(manifest_path, manifest)
                pending = 0
    finally:
        if pending or not manifest_path.exists():
            _write_manifest(manifest_path, manifest)
    result.seconds = time.perf_counter() - start
    return result
