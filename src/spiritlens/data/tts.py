"""Speech synthesis of prompts: small TTS backends and a disk cache with a manifest.

Backends (``get_backend(name)``):

- ``espeak``: espeak-ng subprocess, ``-v en-us``, ``-s`` words per minute; always 22,050 Hz; robotic
  but always available offline (the default).
- ``flite``: flite subprocess, voices slt/awb/rms (16 kHz) and kal (8 kHz), optional
  ``duration_stretch`` (> 1 is slower); more natural than espeak.
- ``melotts``: MeloTTS, the paper's choice, when the ``melo`` package is importable (it is not
  installable offline; imported lazily, never required).

:func:`synthesize_corpus` writes ``<out_dir>/<item_id>.wav`` and ``<out_dir>/manifest.json`` and
re-synthesises an item only when its text, backend, voice or settings changed or its file is
missing or does not match the recorded checksum.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import soundfile as sf
from tqdm.auto import tqdm

from spiritlens._io import read_json, sha256_file, write_json_atomic as atomic_write_json

__all__ = [
    "BACKENDS",
    "EspeakTTS",
    "FliteTTS",
    "MeloTTS",
    "SpeechEntry",
    "SynthesisResult",
    "TTSBackend",
    "TTSError",
    "TTSUnavailable",
    "get_backend",
    "load_manifest",
    "synthesize_corpus",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_ITEM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TTSError(RuntimeError):
    """Synthesis of one text failed."""


class TTSUnavailable(RuntimeError):
    """A TTS backend cannot run here (program or package missing)."""


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

    def synthesize(self, text: str, path: str | os.PathLike) -> Path:
        """Write ``text`` as a mono WAV to ``path`` and return the path; raise TTSError on failure."""
        ...


class _CommandTTS:
    """A backend that runs one command line per text and writes a WAV."""

    name = ""
    executable = ""
    voices: tuple[str, ...] = ()
    voice = ""

    def _check_voice(self, voice: str) -> str:
        if voice not in self.voices:
            raise ValueError(f"{self.name}: unknown voice {voice!r}; choose one of {', '.join(self.voices)}")
        return voice

    @property
    def settings(self) -> dict[str, Any]:
        return {}

    def available(self) -> bool:
        return shutil.which(self.executable) is not None

    def command(self, text: str, path: Path) -> list[str]:
        """The argument list that writes ``text`` to ``path``."""
        raise NotImplementedError

    def stdin(self, text: str) -> str | None:
        """Text fed on standard input (None: nothing)."""
        return None

    def synthesize(self, text: str, path: str | os.PathLike) -> Path:
        if not isinstance(text, str) or not text.strip():
            raise TTSError(f"{self.name}: text to synthesise is empty")
        path = Path(path)
        argv = self.command(text, path)
        try:
            proc = subprocess.run(argv, input=self.stdin(text), capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise TTSUnavailable(f"{self.name}: program {argv[0]!r} not found; install it (e.g. apt-get install {self.executable})") from None
        except subprocess.TimeoutExpired:
            raise TTSError(f"{self.name}: {argv[0]} timed out after 120 s") from None
        if proc.returncode != 0:
            detail = " ".join(proc.stderr.split())[:200] or "no error output"
            raise TTSError(f"{self.name}: {argv[0]} exited with status {proc.returncode} ({detail})")
        try:
            info = sf.info(str(path))
        except (RuntimeError, OSError) as e:
            raise TTSError(f"{self.name}: {argv[0]} wrote no readable WAV at {path} ({e})") from None
        if info.frames == 0:
            raise TTSError(f"{self.name}: {argv[0]} wrote an empty WAV at {path}")
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(voice={self.voice!r}, settings={self.settings})"


class EspeakTTS(_CommandTTS):
    """espeak-ng (22,050 Hz). ``rate`` in words per minute (espeak's default 175)."""

    name = "espeak"
    executable = "espeak-ng"
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

    def command(self, text: str, path: Path) -> list[str]:
        # Text goes through stdin so that a text starting with "-" is never read as an option.
        return [self.executable, "-v", self.voice, "-s", str(self.rate), "-w", str(path), "--stdin"]

    def stdin(self, text: str) -> str:
        return text


class FliteTTS(_CommandTTS):
    """flite 2.x: voices slt/awb/rms (16 kHz), kal (8 kHz); ``duration_stretch`` > 1 speaks slower."""

    name = "flite"
    executable = "flite"
    voices = ("slt", "awb", "rms", "kal")

    def __init__(self, voice: str = "awb", duration_stretch: float | None = None):
        self.voice = self._check_voice(voice)
        if duration_stretch is not None and not 0.25 <= duration_stretch <= 4.0:
            raise ValueError(f"flite: duration_stretch must be between 0.25 and 4, got {duration_stretch}")
        self.duration_stretch = duration_stretch

    @property
    def settings(self) -> dict[str, Any]:
        return {"duration_stretch": self.duration_stretch}

    def command(self, text: str, path: Path) -> list[str]:
        argv = [self.executable, "-voice", self.voice]
        if self.duration_stretch is not None:
            argv += ["--setf", f"duration_stretch={self.duration_stretch}"]
        return argv + ["-t", text, "-o", str(path)]


class MeloTTS:
    """MeloTTS (the paper's synthesiser), used only when the ``melo`` package is importable.

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

    def synthesize(self, text: str, path: str | os.PathLike) -> Path:
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
            self._model.tts_to_file(text, speakers[self.voice], str(path), speed=self.speed)
        except Exception as e:  # noqa: BLE001 - report any backend failure as one line
            raise TTSError(f"melotts: synthesis failed ({type(e).__name__}: {e})") from None
        return path


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
    """One manifest row. ``path`` is relative to the corpus folder; ``error`` is set when synthesis failed."""

    item_id: str
    text: str
    backend: str
    voice: str
    settings: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    sample_rate: int | None = None
    duration: float | None = None
    sha256: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.path is not None

    def same_request(self, other: SpeechEntry) -> bool:
        return (self.text, self.backend, self.voice, self.settings) == (other.text, other.backend, other.voice, other.settings)


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


def _synthesize_one(backend: TTSBackend, request: SpeechEntry, out_dir: Path) -> SpeechEntry:
    """Synthesise into a temporary file, then move it into place; failures become ``error``."""
    final = out_dir / f"{request.item_id}.wav"
    fd, tmp = tempfile.mkstemp(prefix=f".{request.item_id}.", suffix=".wav", dir=out_dir)
    os.close(fd)
    try:
        backend.synthesize(request.text, tmp)
        info = sf.info(tmp)
        digest = sha256_file(tmp)
        os.replace(tmp, final)
    except TTSUnavailable:
        Path(tmp).unlink(missing_ok=True)
        raise
    except Exception as e:  # noqa: BLE001 - one failing item must not stop the corpus
        Path(tmp).unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        return SpeechEntry(**{**asdict(request), "error": f"{type(e).__name__}: {e}"})
    return SpeechEntry(
        **{**asdict(request), "path": final.name, "sample_rate": int(info.samplerate),
           "duration": round(info.frames / info.samplerate, 4), "sha256": digest}
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

    An item is reused when the manifest has it with the same text, backend, voice and settings
    and its WAV still matches the recorded SHA-256; otherwise it is (re-)synthesised. A failure
    on one item is recorded in its entry's ``error`` and the rest continue (a later run retries
    it); a backend that cannot run raises TTSUnavailable. The manifest keeps entries of items
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
            old = manifest.get(item_id)
            if _cached(old, request, out_dir):
                result.entries.append(old)
                result.reused.append(item_id)
                continue
            entry = _synthesize_one(backend, request, out_dir)
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
