"""CTC frame spans (words or LM text tokens) -> deduplicated speech-token index ranges.

Units: aligner frames (``ctc_frame_seconds``: CTC frames, 20 ms, or pocketsphinx frames, 10 ms; the
name is historical, see ``Alignment.frame_unit``), 25 Hz unit frames (``unit_frame_seconds``, 40 ms,
before deduplication), speech-token positions ``k`` within one speech segment (after deduplication;
the LM position is the ``[Speech]`` marker's position + 1 + k). All spans are half-open.

Modes:
- ``"exact"`` (default): token ``k`` covers unit frames ``unit_spans[k] = [s_k, s_{k+1})`` (as in
  ``SpeechUnits.spans``). CTC frames ``[i0, i1)`` cover unit frames ``[floor(i0 / r), ceil(i1 / r))``
  with ``r = unit_frame_seconds / ctc_frame_seconds`` (2 for 40 ms / 20 ms); the item gets the
  tokens whose spans overlap those frames, ``[min k, max k + 1)``.
- ``"paper"``: formulas (1) and (2) of Modica et al., Appendix A, computed exactly in rationals:
  ``s = floor(ratio * f) / sr`` with ``ratio = M / T`` (samples per CTC frame on this utterance),
  ``[floor(s_start * tr), ceil(s_end * tr))``. These count 25 Hz frames, not deduplicated tokens,
  so they drift late once units repeat; kept to reproduce the paper.

Rules, recorded in the result: a token overlapping two items (a word boundary inside a 40 ms
token) counts for both (``shared_tokens``); tokens overlapping no item are ``silence_tokens``;
items that get no token (``None``) are listed in ``unmapped``, never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

__all__ = [
    "SpeechTokenRange",
    "SpeechTokenMap",
    "map_frames_to_speech_tokens",
    "group_overlapping_tokens",
    "paper_seconds",
    "paper_token_range",
    "ctc_to_unit_frames",
    "map_seconds_to_speech_tokens",
    "seconds_to_unit_frames",
    "subject_speech_range",
]

from spiritlens.terms import MAPPINGS


@dataclass(frozen=True)
class SpeechTokenRange:
    """One item (word or LM token): CTC frames ``[ctc_start, ctc_end)``, and speech-token positions
    ``[token_start, token_end)`` (``None`` if it got no token or had no frames)."""

    item: int
    ctc_start: int | None
    ctc_end: int | None
    token_start: int | None
    token_end: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SpeechTokenMap:
    """Speech-token ranges for a list of CTC frame spans (see the module docstring for the rules)."""

    mode: str
    items: tuple[SpeechTokenRange, ...]
    num_tokens: int | None
    silence_tokens: tuple[int, ...]
    shared_tokens: tuple[int, ...]
    unmapped: tuple[int, ...]

    def range_of(self, items: Iterable[int]) -> tuple[int, int]:
        """Speech-token positions ``[min k, max k + 1)`` over the given items (e.g. a subject's words).

        Raises ``ValueError`` if none of them got a speech token.
        """
        items = list(items)
        got = [self.items[i] for i in items if self.items[i].token_start is not None]
        if not got:
            raise ValueError(f"items {list(items)} got no speech token (unmapped: {list(self.unmapped)})")
        return min(r.token_start for r in got), max(r.token_end for r in got)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["items"] = [r.to_dict() for r in self.items]
        return out


def paper_seconds(ctc_frame: int, num_samples: int, num_frames: int, sample_rate: int = 16000) -> Fraction:
    """Formula (1): ``floor(ratio * f) / sr`` seconds with ``ratio = num_samples / num_frames`` (exact rational)."""
    return Fraction(math.floor(Fraction(num_samples, num_frames) * ctc_frame), sample_rate)


def paper_token_range(ctc_start: int, ctc_end: int, num_samples: int, num_frames: int,
                      sample_rate: int = 16000, token_rate: float = 25.0) -> tuple[int, int]:
    """Formulas (1) + (2): CTC frames ``[f_start, f_end)`` -> ``[floor(s_start * tr), ceil(s_end * tr))``."""
    tr = Fraction(token_rate)
    s_start = paper_seconds(ctc_start, num_samples, num_frames, sample_rate)
    s_end = paper_seconds(ctc_end, num_samples, num_frames, sample_rate)
    return math.floor(s_start * tr), math.ceil(s_end * tr)


def ctc_to_unit_frames(ctc_start: int, ctc_end: int, ctc_frame_seconds: float = 0.02,
                       unit_frame_seconds: float = 0.04) -> tuple[int, int]:
    """Aligner frames ``[i0, i1)`` (CTC or pocketsphinx, ``ctc_frame_seconds`` each) -> 25 Hz unit frames
    ``[floor(i0 / r), ceil(i1 / r))``, ``r`` = frame-duration ratio (exact rationals)."""
    step = Fraction(ctc_frame_seconds).limit_denominator(10**6)
    return seconds_to_unit_frames(ctc_start * step, ctc_end * step, unit_frame_seconds)


def seconds_to_unit_frames(start_s, end_s, unit_frame_seconds: float = 0.04) -> tuple[int, int]:
    """A time span ``[start_s, end_s)`` in seconds -> 25 Hz unit frames ``[floor(start_s / d), ceil(end_s / d))``,
    ``d = unit_frame_seconds``; the rule of :func:`ctc_to_unit_frames`, for times that are not on a frame grid
    (the synthesiser's word times). Floats are read as rationals to the microsecond."""
    unit = Fraction(unit_frame_seconds).limit_denominator(10**6)
    start = Fraction(start_s).limit_denominator(10**6)
    end = Fraction(end_s).limit_denominator(10**6)
    return math.floor(start / unit), math.ceil(end / unit)


def map_seconds_to_speech_tokens(spans_s: Sequence[tuple[float, float] | None], unit_spans: Sequence[tuple[int, int]],
                                 unit_frame_seconds: float = 0.04) -> SpeechTokenMap:
    """Speech-token ranges (``"exact"`` rule) of time spans in seconds, e.g. the synthesiser's word times:
    the ground truth the aligned ranges are measured against."""
    _check_unit_spans(unit_spans)
    ranges = [None if span is None else _overlapping_tokens(seconds_to_unit_frames(*span, unit_frame_seconds), unit_spans)
              for span in spans_s]
    return _collect("exact", [None] * len(spans_s), ranges, len(unit_spans))


def map_frames_to_speech_tokens(
    ctc_spans: Sequence[tuple[int, int] | None],
    unit_spans: Sequence[tuple[int, int]] | None = None,
    *,
    mode: str = "exact",
    ctc_frame_seconds: float = 0.02,
    unit_frame_seconds: float = 0.04,
    num_samples: int | None = None,
    num_ctc_frames: int | None = None,
    sample_rate: int = 16000,
    token_rate: float = 25.0,
) -> SpeechTokenMap:
    """Speech-token ranges for items at CTC frames ``ctc_spans[i] = [start, end)`` (``None``: no frames).

    ``unit_spans``: per deduplicated speech token, its 25 Hz frames ``[first_frame, last_frame + 1)``,
    in order and non-overlapping; required for ``"exact"``, optional for ``"paper"`` (then it only
    sets ``num_tokens``: the paper's indices are clipped to it and silence is reported).
    ``num_samples``/``num_ctc_frames`` (``M``, ``T`` of formula 1) are required for ``"paper"``.
    """
    if mode not in MAPPINGS:
        raise ValueError(f"mode={mode!r}; expected one of {MAPPINGS}")
    if unit_spans is not None:
        _check_unit_spans(unit_spans)
    ranges: list[tuple[int, int] | None] = []
    if mode == "exact":
        if unit_spans is None:
            raise ValueError("mode='exact' needs unit_spans (per speech token [first_frame, last_frame + 1))")
        for span in ctc_spans:
            ranges.append(None if span is None else _overlapping_tokens(
                ctc_to_unit_frames(*span, ctc_frame_seconds, unit_frame_seconds), unit_spans))
    else:
        if num_samples is None or num_ctc_frames is None:
            raise ValueError("mode='paper' needs num_samples and num_ctc_frames (M and T of formula 1)")
        for span in ctc_spans:
            if span is None:
                ranges.append(None)
                continue
            k0, k1 = paper_token_range(*span, num_samples, num_ctc_frames, sample_rate, token_rate)
            if unit_spans is not None:
                k0, k1 = min(k0, len(unit_spans)), min(k1, len(unit_spans))
            ranges.append((k0, k1) if k1 > k0 else None)
    return _collect(mode, ctc_spans, ranges, None if unit_spans is None else len(unit_spans))


def group_overlapping_tokens(ctc_spans: Sequence[tuple[int, int] | None], token_frames: Sequence[tuple[int, int]],
                             *, ctc_frame_seconds: float = 0.02,
                             unit_frame_seconds: float = 0.04) -> list[tuple[int, ...] | None]:
    """Per item at aligner frames ``ctc_spans[i] = [start, end)`` (``None``: no frames), the indices of
    every token whose 25 Hz frame span ``token_frames[k] = [a, b)`` overlaps the item's 25 Hz frames
    (the ``"exact"`` rule, :func:`ctc_to_unit_frames`), in token order; ``None`` when none does.

    Unlike :func:`map_frames_to_speech_tokens` the token spans may overlap one another and a group need
    not be contiguous: SpiritLM Expressive interleaves HuBERT tokens (one run of 25 Hz frames each),
    pitch tokens (80 ms per code) and style tokens (one second each), so a word's group holds its
    HuBERT tokens plus every pitch and style token overlapping it, and a style token usually belongs to
    several words (a token straddling two items counts for both, as for HuBERT).
    """
    for k, (a, b) in enumerate(token_frames):
        if not b > a:
            raise ValueError(f"token_frames[{k}] = [{a}, {b}) is empty (25 Hz frames)")
    groups: list[tuple[int, ...] | None] = []
    for span in ctc_spans:
        if span is None:
            groups.append(None)
            continue
        a, b = ctc_to_unit_frames(*span, ctc_frame_seconds, unit_frame_seconds)
        hits = tuple(k for k, (s, e) in enumerate(token_frames) if s < b and e > a)
        groups.append(hits or None)
    return groups


def subject_speech_range(words: Sequence, subject_span: tuple[int, int],
                         unit_spans: Sequence[tuple[int, int]] | None = None, **kwargs) -> tuple[int, int]:
    """Speech-token positions ``[min k, max k + 1)`` of the subject.

    ``words``: aligned ``WordSpan``s (an ``Alignment``); ``subject_span``: the subject's characters
    ``[start, end)`` in the transcript; the subject's words are those overlapping it. Other
    arguments as ``map_frames_to_speech_tokens``.
    """
    a, b = subject_span
    items = [i for i, w in enumerate(words) if w.char_start < b and w.char_end > a]
    if not items:
        raise ValueError(f"subject_span [{a}, {b}) overlaps no aligned word")
    spans = [(w.start_frame, w.end_frame) for w in words]
    return map_frames_to_speech_tokens(spans, unit_spans, **kwargs).range_of(items)


def _check_unit_spans(unit_spans: Sequence[tuple[int, int]]) -> None:
    previous_end = 0
    for k, (a, b) in enumerate(unit_spans):
        if not b > a:
            raise ValueError(f"unit_spans[{k}] = [{a}, {b}) is empty (25 Hz frames)")
        if a < previous_end:
            raise ValueError(f"unit_spans[{k}] = [{a}, {b}) overlaps or precedes the previous span ending at {previous_end}")
        previous_end = b


def _overlapping_tokens(frames: tuple[int, int], unit_spans: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """Tokens whose 25 Hz spans overlap ``frames = [a, b)``, as ``[min k, max k + 1)``."""
    a, b = frames
    hits = [k for k, (s, e) in enumerate(unit_spans) if s < b and e > a]
    return (hits[0], hits[-1] + 1) if hits else None


def _collect(mode, ctc_spans, ranges, num_tokens) -> SpeechTokenMap:
    items, count = [], {}
    for i, (span, rng) in enumerate(zip(ctc_spans, ranges)):
        if rng is not None:
            for k in range(*rng):
                count[k] = count.get(k, 0) + 1
        items.append(SpeechTokenRange(i, *(span or (None, None)), *(rng or (None, None))))
    silence = tuple(k for k in range(num_tokens) if k not in count) if num_tokens is not None else ()
    shared = tuple(sorted(k for k, c in count.items() if c > 1))
    unmapped = tuple(r.item for r in items if r.token_start is None)
    return SpeechTokenMap(mode, tuple(items), num_tokens, silence, shared, unmapped)
