"""The run key: what a cached or resumed file was computed from, and the one check before reusing it.

Every cache and resume of spiritlens (the sigma cache, trace results, the cross-modal results, the
filter manifests) records the run key it was computed under, next to a checksum of its full content
(:func:`spiritlens._io.content_checksum`). A later run reuses a file only when its checksum holds, its
content validates and its key equals the key the run computes now (:func:`verify`); anything else is
recomputed, never reused, and :func:`key_changes` says why in words ("model weights changed",
"dtype float32 → bfloat16"), which the experiment's summary and report repeat.

The key is a JSON object; a field that does not apply to a file is absent:

- ``weights``: SHA-256 over the model directory's files (config, weights, tokenizer files;
  :func:`folder_digest`), so the same variant name with other weights is another key;
- ``speech_tokenizer``, ``aligner``: the same over the speech-tokenizer folder and a CTC aligner's
  directory (``"pocketsphinx"`` for pocketsphinx), where the file depends on them;
- ``dtype`` (``"float32"``, ``"bfloat16"``, ``"float16"``) and ``device`` (its kind: ``"cpu"``, ``"cuda"``);
- ``method``: how the numbers were computed: ``"exact"``, ``"attribution"``, ``"attribution_qk"``,
  a cross-modal analysis (``"patching"``, ``"geometry"``, ``"logit_lens"``), ``"greedy generation"``
  (the filter) or ``"subject sigma"``;
- ``noise`` (the rule, e.g. ``"3s"``), ``sigma_source`` and ``sigma``, ``samples``, ``seed``, ``window``;
- ``rows``: what was computed on: prompt, subject, answer, the audio's SHA-256, mapping, row mode, ...;
- ``options``: anything else that changes the numbers (cross-modal modes and directions,
  ``--verify-top``, the filter's ``max_new_tokens``).

Cost: every file is read and hashed once per process; the digest is kept per (path, size, mtime_ns,
ctime_ns, inode), so a rewritten file is hashed again and an unchanged one is not. SHA-256 ran at 1.2 GB/s on one
core of this project's CPU (AMD EPYC; ``hashlib``), so SpiritLM's 13.5 GB of bf16 weights cost about
11 s plus the time to read them from disk, once per run (the experiment hashes in its prepare stage and
records the digests in ``prepare.json`` for the other ranks).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from spiritlens._io import CHECKSUM_FIELD, checksum_problem, json_digest, sha256_file, with_checksum

RUN_KEY_FIELD = "run_key"
FIELDS = ("weights", "speech_tokenizer", "aligner", "dtype", "device", "method", "noise", "sigma_source", "sigma",
          "samples", "seed", "window", "rows", "options")
_FILE_DIGESTS: dict[tuple, str] = {}


class UntrustedFile(ValueError):
    """A cached or resumed file that may not be reused: ``reason`` says why in a few words (for the
    summary's counts); the message names the file too."""

    def __init__(self, what: str, path: str | os.PathLike, reason: str):
        self.reason = reason
        super().__init__(f"{what} {str(path)!r}: {reason}")


def file_digest(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, computed once per (path, size, mtime_ns, ctime_ns, inode) in this
    process (ctime too: a rewrite within one mtime tick still changes it, and no tool can set it back)."""
    path = Path(path).resolve()
    info = path.stat()
    key = (str(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = sha256_file(path)
    return _FILE_DIGESTS[key]


def folder_digest(folder: str | os.PathLike) -> str:
    """Hex SHA-256 over the regular files under ``folder`` (recursively; names relative to it, sorted):
    each file's :func:`file_digest` with its name. Hidden files (temporaries, markers) are left out.
    FileNotFoundError when ``folder`` is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a folder")
    entries = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        entries.append([relative.as_posix(), file_digest(path)])
    return json_digest(entries)


def device_kind(device: Any) -> str:
    """``"cpu"``, ``"cuda"``, ... of a torch device or its name (``"cuda:1"`` -> ``"cuda"``)."""
    kind = getattr(device, "type", None)
    return str(kind if kind is not None else device or "cpu").split(":")[0]


def dtype_name(dtype: Any) -> str:
    """``"float32"``, ``"bfloat16"``, ... of a torch dtype or its name."""
    return str(dtype).removeprefix("torch.")


def aligner_digest(aligner: str | os.PathLike | None) -> str | None:
    """What an aligner contributes to a key: a CTC directory's :func:`folder_digest`, else its name and
    its installed package's version (``"pocketsphinx 5.0.4"``)."""
    if aligner is None:
        return None
    if Path(aligner).is_dir():
        return folder_digest(aligner)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{aligner} {version(str(aligner))}"
    except (PackageNotFoundError, ValueError):
        return str(aligner)


def model_fingerprint(model, *, speech_tokenizer: str | os.PathLike | None = None) -> dict:
    """The model part of a key (``weights``, ``dtype``, ``device``; ``speech_tokenizer`` when a folder is
    given) of a loaded :class:`~spiritlens.HookedSpiritLM` (its ``model_dir``, ``dtype``, ``device``)."""
    fingerprint = {"weights": folder_digest(model.model_dir), "dtype": dtype_name(model.dtype),
                   "device": device_kind(model.device)}
    if speech_tokenizer is not None:
        fingerprint["speech_tokenizer"] = folder_digest(speech_tokenizer)
    return fingerprint


def run_key(base: dict, **fields: Any) -> dict:
    """A run key: ``base`` (e.g. :func:`model_fingerprint`) and ``fields``, as plain JSON (tuples become
    lists, so a key read back from a file compares equal). ValueError for a field not in ``FIELDS``."""
    key = {**base, **fields}
    unknown = sorted(set(key) - set(FIELDS))
    if unknown:
        raise ValueError(f"run key fields {unknown} are not among {', '.join(FIELDS)}")
    return json.loads(json.dumps(key))


def key_changes(recorded: Any, key: dict) -> list[str]:
    """What differs between a ``recorded`` key and ``key``, in words (empty when they are equal)."""
    if not isinstance(recorded, dict):
        return ["no run key recorded (written before run keys, or edited)"]
    changes = []
    for field in [*FIELDS, *sorted((set(recorded) | set(key)) - set(FIELDS))]:
        old, new = recorded.get(field), key.get(field)
        if old == new:
            continue
        if field in ("weights", "speech_tokenizer"):
            changes.append("model weights changed" if field == "weights" else "speech tokenizer files changed")
        elif field == "aligner":
            changes.append("aligner changed")
        elif field in ("rows", "options") and isinstance(old, dict) and isinstance(new, dict):
            names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            changes.append(f"{field} changed ({', '.join(names)})")
        elif isinstance(old, (dict, list)) or isinstance(new, (dict, list)):
            changes.append(f"{field} changed")
        else:
            changes.append(f"{field} {_short(old)} → {_short(new)}")
    return changes


def _short(value: Any) -> str:
    text = "none" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def stamp(document: dict, key: dict | None) -> dict:
    """``document`` with its ``run_key`` (when given) and a ``checksum`` over everything else, last."""
    body = {k: v for k, v in document.items() if k not in (RUN_KEY_FIELD, CHECKSUM_FIELD)}
    if key is not None:
        body[RUN_KEY_FIELD] = key
    return with_checksum(body)


def verify(document: Any, key: dict | None, *, what: str, path: str | os.PathLike) -> dict:
    """``document`` (a file's JSON) when its checksum holds and, with ``key``, its recorded run key equals
    ``key``; else :class:`UntrustedFile` naming ``what`` and ``path`` with the reason (the key's changes)."""
    if not isinstance(document, dict):
        raise UntrustedFile(what, path, f"not a JSON object ({type(document).__name__})")
    problem = checksum_problem(document)
    if problem:
        raise UntrustedFile(what, path, problem)
    if key is not None:
        changes = key_changes(document.get(RUN_KEY_FIELD), key)
        if changes:
            raise UntrustedFile(what, path, "; ".join(changes))
    return document


def reason_counts(reasons: list[str]) -> dict[str, int]:
    """``{reason: how many}`` in first-seen order (the summary's form of "what was recomputed and why")."""
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return counts
