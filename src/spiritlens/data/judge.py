"""Judging a model's continuation against the Known attribute, and filtering Known-t2t / Known-s2t.

The rule (:func:`judge`), on both texts normalised by ``normalize_words(..., drop_articles=True)``
(accents stripped, lower case, punctuation removed, numbers spelled out, "a"/"an"/"the" dropped,
whitespace collapsed):

1. **wrong** if the continuation is empty after normalisation.
2. **exact** if the continuation's words start with the attribute's words ("Rome" /
   " Rome, the capital"; "United States" / " the United States."; "Microsoft" / " Microsoft
   Corporation" is exact too: the continuation starts with the attribute at a word boundary).
3. **partial** if any of, checked in this order:
   a. *later*: the attribute's words occur contiguously starting within the first ``WINDOW_WORDS``
      (5) words, articles not counted ("Rome" / " the city of Rome"; "Italy" / " Rome, Italy");
   b. *alias*: a listed alias of the attribute (``ALIAS_GROUPS``: "US"/"U.S."/"USA"/"America" for
      "United States", "UK"/"Britain", "BBC"/"British Broadcasting Corporation", ...) starts the
      continuation or occurs within the first 5 words;
   c. *variant*: the first generated words (as many as the attribute has) differ from the
      attribute only at the end: one is a string prefix of the other, the shared part has at
      least ``MIN_STEM_CHARS`` (4) characters, and the longer one adds at most ``MAX_SUFFIX_CHARS``
      (3) characters or the shorter one ends at a word boundary of the attribute ("Japanese" /
      "Japan", "Antarctic" / "Antarctica", " Microsoft" / "Microsoft Corporation"). Known
      false positives of this loose rule: "Indiana" for "India", "Romeo" for "Rome".
4. **wrong** otherwise ("Italy" for "Italian", "France" for "French", "Paris" for "London").

:func:`filter_prompts` keeps the records whose label is in ``accept`` (default: exact only, the
strict reading of "the model answers correctly"); ``keep_all=True`` keeps every judged record.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from spiritlens._io import read_json, write_json_atomic
from spiritlens.data.known import KnownRecord
from spiritlens.data.normalize import normalize_words

__all__ = [
    "ALIAS_GROUPS",
    "LABELS",
    "KNOWN_SUBSETS",
    "FilterEntry",
    "FilterResult",
    "Judgement",
    "filter_prompts",
    "judge",
]

LABELS = ("exact", "partial", "wrong")
from spiritlens.terms import KNOWN_SUBSETS
WINDOW_WORDS = 5
MIN_STEM_CHARS = 4
MAX_SUFFIX_CHARS = 3
ALIAS_GROUPS: tuple[tuple[str, ...], ...] = (
    ("United States", "U.S.", "USA", "U.S.A.", "United States of America", "America"),
    ("United Kingdom", "U.K.", "Britain", "Great Britain"),
    ("Soviet Union", "USSR", "U.S.S.R."),
    ("New York City", "New York", "NYC"),
    ("BBC", "British Broadcasting Corporation"),
    ("CBS", "Columbia Broadcasting System"),
    ("NBC", "National Broadcasting Company"),
    ("HBO", "Home Box Office"),
    ("IBM", "International Business Machines"),
    ("FIFA", "Fédération Internationale de Football Association"),
    ("television", "TV"),
)


def _alias_table() -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    table: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for group in ALIAS_GROUPS:
        forms = [tuple(normalize_words(f, drop_articles=True)) for f in group]
        for form in forms:
            table.setdefault(form, []).extend(f for f in forms if f != form)
    return table


_ALIASES = _alias_table()


@dataclass(frozen=True)
class Judgement:
    """``label`` in ``LABELS`` and a short ``reason``."""

    label: str
    reason: str


def _find(words: list[str], target: Sequence[str], start: int, stop: int) -> int | None:
    """First index in ``[start, stop)`` where ``target`` occurs contiguously in ``words``."""
    n = len(target)
    for i in range(start, min(stop, len(words) - n + 1)):
        if tuple(words[i : i + n]) == tuple(target):
            return i
    return None


def _variant(head: str, target: str) -> bool:
    """``head`` and ``target`` differ only at the end (rule 3c)."""
    if head != target and target.startswith(head):
        shared, extra, boundary = head, target[len(head):], target[len(head)] == " "
    elif head != target and head.startswith(target):
        shared, extra, boundary = target, head[len(target):], False
    else:
        return False
    return len(shared) >= MIN_STEM_CHARS and (boundary or len(extra) <= MAX_SUFFIX_CHARS)


def judge(generated: str, attribute: str) -> Judgement:
    """Label ``generated`` (the model's continuation) against ``attribute``; the rule is in the module docstring."""
    if not isinstance(generated, str):
        raise TypeError(f"generated must be a str, got {type(generated).__name__}")
    target = normalize_words(attribute, drop_articles=True)
    if not target:
        raise ValueError(f"attribute {attribute!r} is empty after normalisation")
    words = normalize_words(generated, drop_articles=True)
    if not words:
        return Judgement("wrong", "empty output")
    if _find(words, target, 0, 1) == 0:
        return Judgement("exact", "starts with the attribute")
    at = _find(words, target, 1, WINDOW_WORDS)
    if at is not None:
        return Judgement("partial", f"attribute at word {at + 1} of the first {WINDOW_WORDS}")
    for alias in _ALIASES.get(tuple(target), []):
        at = _find(words, alias, 0, WINDOW_WORDS)
        if at is not None:
            return Judgement("partial", f"alias {' '.join(alias)!r} at word {at + 1}")
    head = " ".join(words[: len(target)])
    if _variant(head, " ".join(target)):
        return Judgement("partial", f"first words {head!r} are a variant of the attribute")
    return Judgement("wrong", f"attribute not in the first {WINDOW_WORDS} words")


@dataclass
class FilterEntry:
    """One record's outcome: the generation, its judgement, or the ``error`` from ``generate_fn``."""

    known_id: int
    prompt: str
    subject: str
    attribute: str
    generated: str | None
    label: str | None
    reason: str
    kept: bool
    error: str | None = None


@dataclass
class FilterResult:
    """Judged entries in input order, the kept records, counts per label, and the manifest path."""

    modality: str
    dataset: str
    entries: list[FilterEntry]
    kept: list[KnownRecord]
    counts: dict[str, int]
    accept: tuple[str, ...]
    keep_all: bool
    manifest_path: Path | None = None
    reused: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "modality": self.modality,
            "accept": list(self.accept),
            "keep_all": self.keep_all,
            "judge_rule": "exact: starts with the attribute; partial: later in the first "
            f"{WINDOW_WORDS} words, an alias, or a variant; wrong otherwise (spiritlens.data.judge)",
            "counts": self.counts,
            "kept_ids": [r.known_id for r in self.kept],
            "entries": [asdict(e) for e in self.entries],
        }


def _previous_generations(path: Path, modality: str) -> dict[tuple[int, str], str]:
    """Generations already in a manifest for ``modality`` (without errors), by (known_id, prompt)."""
    if not path.is_file():
        return {}
    data = read_json(path, "filter manifest")
    if not isinstance(data, dict) or data.get("modality") != modality:
        return {}
    return {
        (e["known_id"], e["prompt"]): e["generated"]
        for e in data.get("entries", [])
        if isinstance(e, dict) and e.get("error") is None and isinstance(e.get("generated"), str)
    }


def _counts(entries: list[FilterEntry]) -> dict[str, int]:
    counts = {"total": len(entries), **{label: 0 for label in LABELS}, "error": 0, "kept": 0}
    for e in entries:
        counts[e.label or "error"] += 1
        counts["kept"] += e.kept
    return counts


def filter_prompts(
    records: Iterable[KnownRecord],
    generate_fn: Callable[[KnownRecord], str],
    modality: str,
    keep_all: bool = False,
    *,
    accept: Sequence[str] = ("exact",),
    out_path: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool | None = None,
    save_every: int = 25,
) -> FilterResult:
    """Generate for each record, judge it, and keep the records the model answers correctly.

    Args:
        records: Known records (e.g. a ``KnownDataset`` or ``select(...)``).
        generate_fn: ``record -> continuation`` (the model's greedy generation for the text prompt,
            or for its synthesised speech when ``modality="s2t"``). An exception or a non-str
            result on one record is recorded in that entry's ``error``; the rest continue.
        modality: ``"t2t"`` (Known-t2t) or ``"s2t"`` (Known-s2t).
        keep_all: keep every judged record (for random tiny models); judgements are still recorded.
            Records whose generation failed are never kept.
        accept: labels that count as correct.
        out_path: write the manifest here as JSON, atomically, every ``save_every`` records and at
            the end; with ``resume``, generations already in it (same modality, known_id and prompt,
            no error) are reused and only re-judged. The manifest does not record which model
            generated: use another ``out_path`` (or ``resume=False``) for another model.
        progress: tqdm bar (None: only for more than 20 records on a terminal).
    """
    if modality not in KNOWN_SUBSETS:
        raise ValueError(f"modality must be one of {', '.join(KNOWN_SUBSETS)}, got {modality!r}")
    accept = tuple(accept)
    unknown = [label for label in accept if label not in LABELS]
    if unknown:
        raise ValueError(f"accept has unknown labels {unknown}; choose from {', '.join(LABELS)}")
    if not callable(generate_fn):
        raise TypeError(f"generate_fn must be callable, got {type(generate_fn).__name__}")
    records = list(records)
    path = None if out_path is None else Path(out_path)
    previous = _previous_generations(path, modality) if path is not None and resume else {}
    result = FilterResult(modality, KNOWN_SUBSETS[modality], [], [], {}, accept, keep_all, manifest_path=path)

    def save() -> None:
        result.counts = _counts(result.entries)
        if path is not None:
            write_json_atomic(path, result.to_dict())

    show = None if progress is None and len(records) > 20 else bool(progress)
    try:
        for i, record in enumerate(tqdm(records, desc=KNOWN_SUBSETS[modality], unit="prompt", disable=None if show is None else not show)):
            base = {"known_id": record.known_id, "prompt": record.prompt, "subject": record.subject, "attribute": record.attribute}
            generated = previous.get((record.known_id, record.prompt))
            if generated is not None:
                result.reused += 1
            else:
                try:
                    generated = generate_fn(record)
                    if not isinstance(generated, str):
                        raise TypeError(f"generate_fn returned {type(generated).__name__}, expected str")
                except Exception as e:  # noqa: BLE001 - one failing prompt must not stop the filter
                    result.entries.append(FilterEntry(**base, generated=None, label=None, reason="generation failed",
                                                      kept=False, error=f"{type(e).__name__}: {e}"))
                    continue
            try:
                verdict = judge(generated, record.attribute)
            except ValueError as e:
                result.entries.append(FilterEntry(**base, generated=generated, label=None, reason="judging failed",
                                                  kept=False, error=str(e)))
                continue
            kept = keep_all or verdict.label in accept
            result.entries.append(FilterEntry(**base, generated=generated, label=verdict.label, reason=verdict.reason, kept=kept))
            if kept:
                result.kept.append(record)
            if path is not None and (i + 1) % save_every == 0:
                save()
    finally:
        save()
    return result
