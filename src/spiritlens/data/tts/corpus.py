"""Speech synthesis of prompts: TTS backends that report where each word is, and a disk cache with a manifest.

Every backend is given the text of :func:`spiritlens.spoken.form.spoken_form` (numbers, symbols,
abbreviations spelled out), so what is said is what the aligners align. Backends
(``get_backend(name)``):

- ``espeak``: libespeak-ng in process (ctypes, :mod:`spiritlens.spoken.espeak`), ``en-us`` by default, ``rate``
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
entry with its TTS text and word times). Synthesis does not depend on the model, so an entry's key is
what it does depend on: its text, TTS text, backend, voice and settings. An item is reused only when
the manifest's ``checksum`` holds (:func:`spiritlens._io.content_checksum`), its entry has the same key,
its ``path`` is its own file name inside ``out_dir`` (a path leading elsewhere, ``../../victim.wav`` or
a link out of the folder, is never read: the item is re-synthesised and the reason recorded) and the
file matches the recorded SHA-256; otherwise it is re-synthesised.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
from tqdm.auto import tqdm

from spiritlens._io import read_json, sha256_file, sweep_temporaries, write_json_atomic
from spiritlens.runkey import stamp, verify
from spiritlens.spoken.form import SpokenForm, spoken_form
from spiritlens.data.tts.backend import TTSBackend, TTSError, TTSUnavailable, WordTime
from spiritlens.data.tts.registry import _describe_backends


MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 3  # 3: a checksum over the whole manifest
_ITEM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
    """Outcome of :func:`synthesize_corpus`: entries in input order and what was done. ``recomputed``:
    ``(item_id, reason)`` of each item the manifest held but that was not reused (synthesised again)."""

    entries: list[SpeechEntry]
    manifest_path: Path
    synthesized: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    recomputed: list[tuple[str, str]] = field(default_factory=list)
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


def load_manifest(out_dir: str | os.PathLike,
                  untrusted: list[tuple[str, str]] | None = None) -> dict[str, SpeechEntry]:
    """Entries of ``out_dir/manifest.json`` by item id (empty if there is none) that may be used: the
    manifest's checksum holds and each entry's ``path`` is its own file name inside ``out_dir``.

    Without ``untrusted`` a manifest or entry that fails is a ValueError naming the manifest (and the
    entry); with it, nothing is raised: ``("manifest.json", reason)`` or ``(item_id, reason)`` is
    appended and the manifest's entries (or that entry) are left out."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        data = verify(read_json(path, "speech manifest"), None, what="speech manifest", path=path)
        if not isinstance(data.get("entries"), list):
            raise ValueError(f"speech manifest {path} has no 'entries' list")
        try:
            entries = {e["item_id"]: SpeechEntry(**e) for e in data["entries"]}
        except (TypeError, KeyError) as e:
            raise ValueError(f"speech manifest {path} has a malformed entry ({e})") from None
    except ValueError as error:
        if untrusted is None:
            raise
        untrusted.append((MANIFEST_NAME, getattr(error, "reason", str(error))))
        return {}
    trusted = {}
    for item_id, entry in entries.items():
        problem = _path_problem(entry, Path(out_dir))
        if problem is None:
            trusted[item_id] = entry
        elif untrusted is None:
            raise ValueError(f"speech manifest {path}: entry {item_id!r}: {problem}")
        else:
            untrusted.append((item_id, problem))
    return trusted


def _path_problem(entry: SpeechEntry, out_dir: Path) -> str | None:
    """Why an entry's ``path`` may not be read (not a plain file name, or leading out of ``out_dir``), or None."""
    if entry.path is None:
        return None
    name = Path(str(entry.path))
    if not isinstance(entry.path, str) or name.is_absolute() or len(name.parts) != 1 or name.name in (".", ".."):
        return f"path {entry.path!r} is not a file name inside {out_dir} (never read; re-synthesised)"
    target = (out_dir / name).resolve()
    if target.parent != out_dir.resolve():
        return f"path {entry.path!r} leads out of {out_dir}, to {target} (never read; re-synthesised)"
    return None


def _write_manifest(path: Path, entries: dict[str, SpeechEntry]) -> None:
    document = {"version": MANIFEST_VERSION, "entries": [asdict(e) for e in entries.values()]}
    write_json_atomic(path, stamp(document, None))


def _reuse_problem(entry: SpeechEntry, request: SpeechEntry, out_dir: Path) -> str | None:
    """Why a manifest entry is not reused for ``request``, or None (it is)."""
    if not entry.ok:
        return "failed before"
    if not entry.same_request(request):
        changed = [k for k in ("text", "tts_text", "backend", "voice", "settings")
                   if getattr(entry, k) != getattr(request, k)]
        return f"request changed ({', '.join(changed)})"
    audio = out_dir / entry.path
    if not audio.is_file() or sha256_file(audio) != entry.sha256:
        return "its WAV is missing or does not match its sha256"
    return None


def _synthesize_one(backend: TTSBackend, request: SpeechEntry, form: SpokenForm, out_dir: Path) -> SpeechEntry:
    """Synthesise ``<item_id>.wav`` (the backends write it atomically: :func:`spiritlens._io.write_atomic`);
    failures become ``error``."""
    final = out_dir / f"{request.item_id}.wav"
    try:
        synthesis = backend.synthesize_spoken(form, final)
        info = sf.info(str(final))
        if info.frames == 0:
            raise TTSError(f"{backend.name}: wrote an empty WAV")
        digest = sha256_file(final)
    except TTSUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - one failing item must not stop the corpus
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

    Each text is spoken in its spoken form (:func:`spiritlens.spoken.form.spoken_form`); the manifest entry
    records the TTS text and the backend's word times. An item is reused when the manifest has it
    with the same text, TTS text, backend, voice and settings and its WAV still matches the recorded
    SHA-256; otherwise it is (re-)synthesised. A failure on one item (a text with no spoken form
    included) is recorded in its entry's ``error`` and the rest continue (a later run retries it); a
    backend that cannot run raises TTSUnavailable. The manifest keeps entries of items
    not passed this time; it is written atomically every ``save_every`` synthesised items and at
    the end (with its checksum). An item the manifest held but that is not reused (its request changed,
    its WAV changed, its entry or the whole manifest failed the checks of :func:`load_manifest`) is
    listed in ``recomputed`` with the reason. Temporaries of a run killed mid-write are swept first
    (:func:`spiritlens._io.sweep_temporaries`). ``progress``: tqdm bar (None: only for more than 20 items
    on a terminal).
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
    sweep_temporaries(out_dir)  # what a run killed mid-write left
    manifest_path = out_dir / MANIFEST_NAME
    untrusted: list[tuple[str, str]] = []
    manifest = load_manifest(out_dir, untrusted)
    distrust = dict(untrusted)
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
                problem = distrust.get(item_id, distrust.get(MANIFEST_NAME))
                if old is not None:
                    problem = _reuse_problem(old, request, out_dir)
                    if problem is None:
                        result.entries.append(old)
                        result.reused.append(item_id)
                        continue
                if problem is not None and problem != "failed before":
                    result.recomputed.append((item_id, problem))
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
