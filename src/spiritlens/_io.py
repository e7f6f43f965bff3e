"""File helpers shared by every stage: atomic writes, JSON reads with one-line errors, checksums.

Every file the pipeline's stages write (results and their arrays, manifests, WAVs, figures, reports)
goes through :func:`write_atomic`: a temporary file in the same folder, then ``os.replace``, so a reader never sees a half-written file
and an interrupted write leaves the previous file intact. **The one temporary-file rule**: the
temporary of ``<name>`` is ``.<name>.<random>-<pid>.tmp`` (the writer's process id last), and
:func:`sweep_temporaries` is the one sweep: it removes the temporaries under a folder whose process
is gone (and the names older versions used). The file gets the mode ``open()`` would give it: a new
file ``0o666 & ~umask``, a replaced file its previous mode (``tempfile.mkstemp`` alone makes 0600,
which other users of a shared results folder could not read).

:func:`content_checksum` is the checksum every result and manifest carries in its ``checksum`` field
(SHA-256 of its canonical JSON without that field).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


TEMPORARY_SUFFIX = ".tmp"
CHECKSUM_FIELD = "checksum"
# What a killed writer leaves: write_atomic's temporaries, and the names of older versions
# (TraceResult.save's ``<name>.npz.tmp.npz``, the speech corpus's ``.<item>.tmp-<pid>.<random>.wav``).
TEMPORARY_PATTERNS = (f".*{TEMPORARY_SUFFIX}", "*.tmp.npz", ".*.tmp-*.wav")


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting it, then restore it at once
    os.umask(mask)
    return mask


def _open_mode(path: Path) -> int:
    """Permission bits ``open(path, "w")`` would leave: the existing file's, else 0o666 & ~umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (parent folders created); returns the path.

    The file's mode is what ``open()`` would give (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"-{os.getpid()}{TEMPORARY_SUFFIX}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _open_mode(path))
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 1) -> Path:
    """``obj`` as JSON (UTF-8, trailing newline), written atomically."""
    return write_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Read JSON from ``path``; a one-line ``ValueError`` naming ``what`` and the path if the file is
    empty, not UTF-8 text (a binary file) or malformed JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path} is not UTF-8 text (a binary file?): byte {error.start} "
                         f"is {error.object[error.start:error.start + 1]!r}") from None
    if not text.strip():
        raise ValueError(f"{what} {path} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} {path} is not valid JSON: {error}") from None


def json_digest(obj: Any) -> str:
    """Hex SHA-256 of ``obj`` as canonical JSON (sorted keys, UTF-8): a cache key for settings."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def content_checksum(document: dict) -> str:
    """SHA-256 of a document without its ``checksum`` field, as canonical JSON (sorted keys, no spaces,
    UTF-8; NaN as ``NaN``): a value changed by hand changes it."""
    body = {k: v for k, v in document.items() if k != CHECKSUM_FIELD}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checksum_problem(document: dict) -> str | None:
    """Why a document fails its checksum (none recorded, or a mismatch), or None."""
    recorded = document.get(CHECKSUM_FIELD)
    if not isinstance(recorded, str):
        return "no checksum recorded (written before checksums, or edited)"
    if recorded != content_checksum(document):
        return "content does not match its checksum (edited or damaged after it was written)"
    return None


def with_checksum(document: dict) -> dict:
    """A copy of ``document`` with its ``checksum`` field (re)computed, last."""
    body = {k: v for k, v in document.items() if k != CHECKSUM_FIELD}
    body[CHECKSUM_FIELD] = content_checksum(body)
    return body


def sweep_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries a killed writer left anywhere under ``folder`` (the module's rule, and the
    names of older versions): those whose process (the id after the last ``-``) is gone on this
    machine, and those without a process id. A live writer's temporary is kept. Returns the removed paths."""
    removed: list[Path] = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]:
        for pattern in TEMPORARY_PATTERNS:
            removed += remove_orphans(directory, pattern, keep_without_pid=False)
    return removed


def remove_orphans(directory: str | os.PathLike, pattern: str, *, keep_without_pid: bool = True) -> list[Path]:
    """Remove what a killed process left in ``directory``: entries matching the glob ``pattern``
    whose name carries the id of the process that made them after a ``-`` (``.toy.building-1234``,
    ``.r.json.k2x9-1234.tmp``) and whose process is gone on this machine (and, unless
    ``keep_without_pid``, entries without a process id). Returns the removed paths. Entries of live
    processes are kept."""
    import re
    import shutil

    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for entry in directory.glob(pattern):
        pids = re.findall(r"-(\d+)(?=\.|$)", entry.name)
        if (not pids and keep_without_pid) or (pids and _alive(int(pids[-1]))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (the current process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OverflowError:
        return False
    return True


def umask_mode() -> int:
    """``0o666 & ~umask``: the mode ``open()`` gives a new file."""
    return 0o666 & ~current_umask()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
