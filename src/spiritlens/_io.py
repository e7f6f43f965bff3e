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

Reads are bounded before they cost memory or time: :func:`read_text` reads at most ``max_bytes``
(a FIFO or ``/dev/zero`` given as a file cannot make it read forever), :func:`read_json` refuses
nesting deeper than ``max_depth`` before ``json`` parses it (Python's parser raises RecursionError
near 1000 levels, and every consumer below walks the document recursively), and :func:`read_yaml`
is ``yaml.safe_load`` with aliases refused (an alias bomb expands a few hundred bytes into
gigabytes) and the same depth limit.

Writes that fail on the storage (disk full, file too large, read-only or permission denied) raise
:class:`OutputError`, one line naming the file; :func:`save_or_rescue` writes a finished result
elsewhere when its own path fails, so that it is never lost to an output error.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

#: What a JSON or YAML document read here may weigh and how deep it may nest, unless the caller says
#: otherwise. The largest JSON spiritlens reads is a trace result or a manifest (a few MB); the deepest
#: is a few levels (a tokenizer's ``added_tokens_decoder``: 3). Configs pass 1 MiB (``MAX_CONFIG_BYTES``).
MAX_JSON_BYTES = 64 << 20
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 64
#: errno values meaning "this output cannot be stored here": disk full, quota exceeded, file too large
#: (``RLIMIT_FSIZE``), read-only file system, permission denied (EPERM: an immutable folder).
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})
RESCUE_FOLDER = "spiritlens-rescued"  # under the temporary folder: where save_or_rescue puts a result


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


class OutputError(OSError):
    """A write that failed on the storage (an errno of :data:`OUTPUT_ERRNOS`): one line naming the file
    and the reason (``reason``), and, when given, what happened to the data (``note``)."""

    def __init__(self, path: str | os.PathLike, error: OSError, note: str = ""):
        self.reason = error.reason if isinstance(error, OutputError) else (error.strerror or str(error))
        self.message = f"cannot write {os.fspath(path)}: {self.reason}" + (f"; {note}" if note else "")
        super().__init__(error.errno, self.message)
        self.filename = os.fspath(path)

    def __str__(self) -> str:
        return self.message


def is_output_error(error: BaseException) -> bool:
    """Whether ``error`` says the storage refused a write (disk full, too large, read-only, no permission)."""
    return isinstance(error, OSError) and error.errno in OUTPUT_ERRNOS


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (parent folders created); returns the path.

    The file's mode is what ``open()`` would give (see the module docstring). A storage fault (disk
    full, file too large, read-only, permission denied) is an :class:`OutputError` naming ``path``;
    nothing is left behind and a previous file at ``path`` is untouched."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"-{os.getpid()}{TEMPORARY_SUFFIX}",
                                   dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _open_mode(path))
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_output_error(error) and not isinstance(error, OutputError):
            raise OutputError(path, error) from None
        raise
    return path


def save_or_rescue(save: Callable[[Path], Any], path: str | os.PathLike, what: str, *,
                   last_resort: Callable[[], str] | None = None) -> Path:
    """``save(path)``, and when the storage refuses it (:func:`is_output_error`), ``save(rescue)`` with
    ``rescue`` in ``<temporary folder>/spiritlens-rescued/``; returns the path written.

    A finished result is never lost to an output error: when ``path`` fails, the raised
    :class:`OutputError` names ``path``, the reason and where the result went instead: the rescue
    file, or, when that fails too, what ``last_resort()`` did with it (it returns a phrase such as
    "it is printed on standard output above"). Other errors propagate unchanged.
    """
    path = Path(path)
    try:
        save(path)
        return path
    except OSError as error:
        if not is_output_error(error):
            raise
        first = error
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rescue = Path(tempfile.gettempdir()) / RESCUE_FOLDER / f"{path.stem}-{stamp}-{os.getpid()}{path.suffix}"
    try:
        save(rescue)
    except OSError as error:
        if not is_output_error(error):
            raise
        reason = error.reason if isinstance(error, OutputError) else (error.strerror or str(error))
        done = last_resort() if last_resort is not None else "it is lost"
        raise OutputError(path, first, f"the finished {what} could not be saved to {rescue} either "
                                       f"({reason}): {done}") from None
    raise OutputError(path, first, f"the finished {what} was saved to {rescue} instead") from None


def save_torch(obj: Any, path: str | os.PathLike, **kwargs) -> Path:
    """``torch.save(obj, path)``, atomically: saved under its own name in a temporary folder beside
    ``path`` (torch names the archive's root folder after the file, so the bytes are exactly those of
    a plain ``torch.save``), then moved into place. A storage fault is an :class:`OutputError` naming
    ``path`` (torch's C++ writer says only "PytorchStreamWriter failed writing file …: file write
    failed": the errno is read back by writing the same bytes with Python)."""
    import io

    import torch

    path = Path(path)
    folder = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            torch.save(obj, folder / path.name, **kwargs)
        except RuntimeError as error:
            if "write failed" not in str(error):
                raise
            buffer = io.BytesIO()
            torch.save(obj, buffer, **kwargs)
            with open(folder / path.name, "wb") as handle:  # the same size through Python: its OSError
                handle.write(buffer.getvalue())
            raise
        os.replace(folder / path.name, path)
    except OSError as error:
        if is_output_error(error) and not isinstance(error, OutputError):
            raise OutputError(path, error) from None
        raise
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 1) -> Path:
    """``obj`` as JSON (UTF-8, trailing newline), written atomically. Characters a terminal acts on
    (:data:`spiritlens.figures.escape.UNSAFE`: DEL, C1 controls, bidirectional overrides; ``json``
    already writes C0 controls as ``\\u00XX``) are written as ``\\uXXXX`` escapes, so that ``cat``
    shows the file as it is; the JSON value is the same."""
    return write_atomic(path, json_text(obj, indent=indent) + "\n")


def json_text(obj: Any, *, indent: int | None = 1) -> str:
    """``json.dumps(obj, ensure_ascii=False)`` with terminal-unsafe characters as ``\\uXXXX`` escapes
    (C0 controls are escaped by ``json`` itself; the line breaks left are the layout's)."""
    from spiritlens.figures.escape import UNSAFE

    def escape(match: re.Match) -> str:
        char = match.group()
        return char if char < " " else f"\\u{ord(char):04x}"

    return UNSAFE.sub(escape, json.dumps(obj, indent=indent, ensure_ascii=False))


def read_text(path: str | os.PathLike, what: str, *, max_bytes: int = MAX_JSON_BYTES) -> str:
    """UTF-8 text of ``path``, reading at most ``max_bytes + 1`` bytes; a one-line ValueError naming
    ``what`` and the path when it is larger, a directory or not UTF-8 text. FileNotFoundError as ``open``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except IsADirectoryError:
        raise ValueError(f"{what} {path} is a directory, not a file") from None
    if len(data) > max_bytes:
        raise ValueError(f"{what} {path} is larger than {_size(max_bytes)}, the limit for a {what}: refused "
                         "unread")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path} is not UTF-8 text (a binary file?): byte {error.start} "
                         f"is {data[error.start:error.start + 1]!r}") from None


def read_json(path: str | os.PathLike, what: str, *, max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:
    """Read JSON from ``path``; a one-line ``ValueError`` naming ``what`` and the path if the file is
    empty, larger than ``max_bytes``, not UTF-8 text (a binary file), nested deeper than
    ``max_depth`` (checked before parsing) or malformed JSON."""
    text = read_text(path, what, max_bytes=max_bytes)
    if not text.strip():
        raise ValueError(f"{what} {path} is empty")
    return loads_json(text, f"{what} {path}", max_depth=max_depth)


def loads_json(text: str, source: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(text)`` after a nesting check; one-line ValueError ``"<source> is not valid JSON: …"``
    or ``"<source> is nested deeper than …"``."""
    check_json_depth(text, source, max_depth)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, and int() of a number of 4300+ digits
        raise ValueError(f"{source} is not valid JSON: {_first_line(error)}") from None


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


def check_json_depth(text: str, source: str, max_depth: int = MAX_DEPTH) -> None:
    """ValueError naming ``source`` if the JSON text nests arrays/objects deeper than ``max_depth``
    (brackets inside strings do not count); linear in the text, nothing parsed."""
    if text.count("[") + text.count("{") <= max_depth:
        return
    depth = 0
    for match in _BRACKETS.finditer(_JSON_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            if depth > max_depth:
                raise ValueError(f"{source} is nested deeper than {max_depth} levels (refused before parsing)")
        else:
            depth -= 1


def read_yaml(path: str | os.PathLike, what: str, *, max_bytes: int = MAX_CONFIG_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:
    """``yaml.safe_load`` of ``path`` with aliases refused and nesting bounded (module docstring);
    one-line ValueError naming ``what`` and the path for any problem. Anchors alone are harmless and read."""
    import yaml

    text = read_text(path, what, max_bytes=max_bytes)
    loader = _bounded_yaml_loader(yaml)(text)
    loader.max_depth = max_depth
    try:
        return loader.get_single_data()
    except _YamlRefused as error:
        raise ValueError(f"{what} {path}: {error}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as error:
        raise ValueError(f"{what} {path} is not valid YAML ({_first_line(error)})") from None
    finally:
        loader.dispose()


class _YamlRefused(Exception):
    pass


_YAML_LOADER = None


def _bounded_yaml_loader(yaml):
    global _YAML_LOADER
    if _YAML_LOADER is None:
        class BoundedSafeLoader(yaml.SafeLoader):
            """``yaml.SafeLoader`` that refuses aliases and nodes deeper than ``max_depth``."""

            max_depth = MAX_DEPTH
            _depth = 0

            def compose_node(self, parent, index):
                if self.check_event(yaml.AliasEvent):
                    event = self.peek_event()
                    raise _YamlRefused(f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are "
                                       "refused (an alias bomb expands a few lines into gigabytes)")
                self._depth += 1
                try:
                    if self._depth > self.max_depth:
                        mark = self.peek_event().start_mark
                        raise _YamlRefused(f"line {mark.line + 1}: nested deeper than {self.max_depth} levels")
                    return super().compose_node(parent, index)
                finally:
                    self._depth -= 1

        _YAML_LOADER = BoundedSafeLoader
    return _YAML_LOADER


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


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
