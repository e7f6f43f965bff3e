"""ROME's Known dataset (``known_1000.json``, 1209 facts): loading, validation, subsets.

Where the file comes from: one rule for every command (``spiritlens trace``, ``spiritlens
experiment``) and the Python API, :func:`find_known`, in order: the ``path`` argument (``--known``);
``$SPIRITLENS_KNOWN_PATH``; the cache (``cache_dir``, default ``~/.cache/spiritlens/known_1000.json``);
``../shared/data/known_1000.json`` next to a source checkout; else it is downloaded into the cache
from ROME's site. A record that cannot be used (a missing field, a field of the wrong type or beyond the limits of
:data:`spiritlens.checkpoints.schema.KNOWN_RECORD`, a subject that does not occur in its prompt, a
repeated ``known_id``) is left out and reported in :attr:`KnownDataset.problems`; the rest load.
"""

from __future__ import annotations

import os
import random
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spiritlens._io import MAX_JSON_BYTES, loads_json, read_json, write_atomic
from spiritlens.checkpoints import schema

__all__ = [
    "KNOWN_URL",
    "KnownDataUnavailable",
    "KnownDataset",
    "KnownRecord",
    "find_known",
    "load_known",
    "parse_known",
    "select",
]

KNOWN_URL = "https://rome.baulab.info/data/dsets/known_1000.json"
KNOWN_FILENAME = "known_1000.json"
ENV_KNOWN_PATH = "SPIRITLENS_KNOWN_PATH"
DEFAULT_CACHE_DIR = Path("~/.cache/spiritlens")
# ``shared/data/`` beside the repository of a source checkout (src/spiritlens/data/known.py -> repo/..).
SOURCE_CHECKOUT_KNOWN = Path(__file__).resolve().parents[3].parent / "shared" / "data" / KNOWN_FILENAME

_REQUIRED_TEXT = ("prompt", "subject", "attribute")


class KnownDataUnavailable(FileNotFoundError):
    """The Known dataset is neither given, cached, next to the checkout, nor downloadable (a
    FileNotFoundError, so the CLI reports it as one line)."""


@dataclass(frozen=True)
class KnownRecord:
    """One Known fact. ``prompt`` contains ``subject``; the model should continue it with ``attribute``."""

    known_id: int
    prompt: str
    subject: str
    attribute: str
    relation_id: str = ""
    template: str = ""
    prediction: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KnownRecord:
        """Build from one JSON record (unknown keys are ignored)."""
        return cls(
            known_id=int(d["known_id"]),
            prompt=d["prompt"],
            subject=d["subject"],
            attribute=d["attribute"],
            relation_id=d.get("relation_id") or "",
            template=d.get("template") or "",
            prediction=d.get("prediction") or "",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def subject_span(self) -> tuple[int, int]:
        """Half-open character span ``[start, end)`` of the subject's first occurrence in ``prompt``."""
        start = self.prompt.index(self.subject)
        return start, start + len(self.subject)


@dataclass
class KnownDataset(Sequence):
    """Valid records in file order, plus ``problems``: ``(known_id or None, reason)`` per rejected record."""

    records: list[KnownRecord]
    problems: list[tuple[int | None, str]] = field(default_factory=list)
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def __iter__(self) -> Iterator[KnownRecord]:
        return iter(self.records)

    def by_id(self) -> dict[int, KnownRecord]:
        return {r.known_id: r for r in self.records}

    def dropped_line(self, shown: int = 3) -> str | None:
        """One line saying how many records were dropped and why (the first ``shown`` reasons), e.g.
        ``known.json: 2 of 5 records dropped (3 kept): 9001: missing or empty subject; …``; None if
        every record was kept."""
        if not self.problems:
            return None
        total = len(self.records) + len(self.problems)
        reasons = "; ".join(reason if kid is None else f"{kid}: {reason}"
                            for kid, reason in self.problems[:shown])
        more = "; …" if len(self.problems) > shown else ""
        return (f"{self.source or 'Known dataset'}: {len(self.problems)} of {total} records dropped "
                f"({len(self.records)} kept): {reasons}{more}")


def _record_problem(index: int, raw: Any, seen: set[int]) -> tuple[int | None, str] | None:
    """The reason record ``index`` cannot be used, or None when it is valid."""
    if not isinstance(raw, dict):
        return None, f"record #{index} is a {type(raw).__name__}, not an object"
    known_id = raw.get("known_id")
    if isinstance(known_id, bool) or not isinstance(known_id, int):
        return None, f"record #{index} has no integer known_id (got {schema.short(known_id)})"
    try:
        schema.check_value(known_id, schema.KNOWN_RECORD["known_id"], f"record #{index}", "known_id")
    except ValueError as error:  # an id of 260 digits would name a result file no file system accepts
        return None, str(error)
    for key in _REQUIRED_TEXT:
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            return known_id, f"missing or empty {key}"
    try:
        schema.check(raw, schema.KNOWN_RECORD, f"record #{index}")
    except ValueError as error:
        return known_id, str(error)
    if raw["subject"] not in raw["prompt"]:
        return known_id, f"subject {raw['subject']!r} not in prompt {raw['prompt']!r}"
    if known_id in seen:
        return known_id, "duplicate known_id"
    return None


def parse_known(data: Any, source: Path | None = None) -> KnownDataset:
    """Validate a decoded Known JSON list; bad records go to ``problems``."""
    if not isinstance(data, list):
        raise ValueError(f"Known dataset {source or ''} must be a JSON list of records, got {type(data).__name__}")
    records: list[KnownRecord] = []
    problems: list[tuple[int | None, str]] = []
    seen: set[int] = set()
    for index, raw in enumerate(data):
        problem = _record_problem(index, raw, seen)
        if problem is not None:
            problems.append(problem)
            continue
        seen.add(raw["known_id"])
        records.append(KnownRecord.from_dict(raw))
    return KnownDataset(records=records, problems=problems, source=source)


def _download(url: str, dest: Path, timeout: float) -> None:
    """Fetch ``url`` into ``dest`` atomically; a one-line KnownDataUnavailable when offline."""
    hint = f"pass a local copy with load_known(path=...) or set ${ENV_KNOWN_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read(MAX_JSON_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise KnownDataUnavailable(f"cannot download the Known dataset from {url} ({reason}); {hint}") from None
    try:
        if len(payload) > MAX_JSON_BYTES:
            raise ValueError("too large")
        loads_json(payload.decode("utf-8"), url)
    except ValueError:
        raise KnownDataUnavailable(f"the file downloaded from {url} is not valid JSON; {hint}") from None
    write_atomic(dest, payload)


def find_known(
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    url: str = KNOWN_URL,
    timeout: float = 30.0,
) -> Path:
    """Where ``known_1000.json`` is, by the one lookup rule of the module docstring (downloading
    it into the cache as the last resort).

    Raises:
        FileNotFoundError: ``path`` (or ``$SPIRITLENS_KNOWN_PATH``'s path) does not exist.
        KnownDataUnavailable: not found anywhere and the download failed.
    """
    if path is None and os.environ.get(ENV_KNOWN_PATH):
        path = os.environ[ENV_KNOWN_PATH]
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Known dataset not found: {path}")
        return path
    cached = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser() / KNOWN_FILENAME
    if cached.is_file():
        return cached
    if SOURCE_CHECKOUT_KNOWN.is_file():
        return SOURCE_CHECKOUT_KNOWN
    _download(url, cached, timeout)
    return cached


def load_known(
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    url: str = KNOWN_URL,
    timeout: float = 30.0,
) -> KnownDataset:
    """Load and validate ROME's Known dataset.

    Args:
        path: a local ``known_1000.json``. When None, the file is found by :func:`find_known`
            (``$SPIRITLENS_KNOWN_PATH``, the cache, ``../shared/data/`` next to a source
            checkout, or a download into the cache).
        cache_dir: download cache (default ``~/.cache/spiritlens``).
        url: where to download from (ROME's published file).
        timeout: download timeout in seconds.

    Raises:
        FileNotFoundError: ``path`` (or the environment variable's path) does not exist.
        KnownDataUnavailable: not found anywhere and the download failed.
        ValueError: the file is not a JSON list.
    """
    path = find_known(path, cache_dir, url=url, timeout=timeout)
    return parse_known(read_json(path, "Known dataset"), source=path)


def select(records: Sequence[KnownRecord], n: int, seed: int = 0) -> list[KnownRecord]:
    """A deterministic random subset of ``n`` records, kept in their original order.

    The same ``seed`` gives nested subsets: ``select(r, 10, s)`` is contained in ``select(r, 20, s)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(records):
        raise ValueError(f"n must be an integer between 0 and {len(records)} (the number of records), got {n!r}")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    return [records[i] for i in sorted(order[:n])]
