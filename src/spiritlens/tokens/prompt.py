"""Prompts to token ids, with a TokenMap that says where every position came from.

A prompt is a list of segments (text, or speech units). The model family's prompt rules
(:meth:`spiritlens.models.base.ModelFamily.prompt_string`: SpiritLM's markers, a chat template, or
nothing for a text-only backbone) join them into one string, which is tokenised in ONE call with BOS
by the family's own tokenizer (never segment by segment: where SentencePiece puts its ``▁`` depends on
the whole string), and every token's character offsets are read back to fill the TokenMap: modality,
input segment, character span in that segment's text, and for speech the deduplicated unit's index,
its stream and its 25 Hz frame span.

**Subject positions** (:func:`find_span`, :meth:`TokenMap.find_text`): the subject is stripped of
surrounding whitespace and found in the segment's text; its tokens are those covering at least one
of its characters (first token ending after its start .. last token starting before its end). A
token's span includes the space its ``▁`` stands for, so ``▁Space`` belongs to "Space Needle"; a
lone ``▁`` (before digits or byte-fallback characters, ``▁ 2 0 0 5``) covers only that space, or
nothing when SentencePiece added it, so it is never a subject token, wherever the subject is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from spiritlens.tokens.vocab import Vocabulary

Modality = Literal["text", "speech"]
from spiritlens.terms import MODALITIES, OUTPUT_MODALITIES


@dataclass(frozen=True)
class Segment:
    """One input segment. ``content`` is the text, or the speech units (an object with
    ``tokens``: deduplicated unit ids and ``spans``: their 25 Hz frame spans [first, last+1))."""

    modality: Modality
    content: Any


def speech_token_streams(units: Any) -> list[tuple[str, int]]:
    """``(stream, unit)`` per speech token of ``units``: ``"hubert"``/``"pitch"``/``"style"`` (Expressive
    units carry :class:`~spiritlens.units.expressive.StreamToken` objects; Base units are all HuBERT)."""
    return [(t.stream, t.unit) if hasattr(t, "stream") else ("hubert", int(t)) for t in units.tokens]


@dataclass(frozen=True)
class TokenInfo:
    """Where one position came from.

    ``kind``: ``"bos"``, ``"marker"``, ``"text"``, ``"speech"``, ``"prefix"`` (a ``▁`` that
    SentencePiece put in front of the prompt string, before the first marker: it covers no
    character of any segment), or ``"template"`` (text a family's chat template writes around the
    segments, :attr:`~spiritlens.models.base.ModelFamily.has_template`; a piece made from the template's
    space and a segment's word, ``▁The``, is the segment's). ``segment``: index into the prompt's segments
    (None for BOS, markers, the prefix and the template). ``char_span``: [start, end) characters in the segment's text (text
    tokens; empty for a ``▁`` SentencePiece added inside a segment). ``unit_index``: index of the
    speech token within its segment (deduplicated units; for Expressive units, the index in the
    interleaved sequence of the streams), ``frame_span``: its [first, last+1) frames in the
    25 Hz HuBERT grid (a pitch token covers 2 frames per code, a style token 25), and ``stream``:
    ``"hubert"``, ``"pitch"`` or ``"style"`` (speech tokens).
    """

    position: int
    token_id: int
    kind: str
    segment: int | None = None
    char_span: tuple[int, int] | None = None
    unit_index: int | None = None
    frame_span: tuple[int, int] | None = None
    stream: str | None = None

    @property
    def modality(self) -> str | None:
        return self.kind if self.kind in MODALITIES else None


@dataclass
class TokenMap:
    """Per-position provenance of an encoded prompt (see :class:`TokenInfo`)."""

    segments: list[Segment]
    positions: list[TokenInfo]
    prompt_string: str
    output_modality: str = "text"
    segment_offsets: list[int] = field(default_factory=list)  # start of each segment in prompt_string

    def __len__(self) -> int:
        return len(self.positions)

    def segment_positions(self, segment: int) -> list[int]:
        """Positions of one segment's tokens, in order."""
        return [p.position for p in self.positions if p.segment == segment]

    def char_range_to_positions(self, segment: int, start: int, end: int) -> tuple[int, int]:
        """[b, e) positions of the tokens overlapping characters [start, end) of a text segment:
        b = first token whose span ends after ``start``, e = 1 + last token starting before ``end``."""
        if self.segments[segment].modality != "text":
            raise ValueError(f"segment {segment} is speech; character spans need a text segment")
        hits = [p.position for p in self.positions
                if p.segment == segment and p.char_span is not None
                and p.char_span[1] > start and p.char_span[0] < end]
        if not hits:
            raise ValueError(f"characters [{start}, {end}) of segment {segment} cover no token")
        return hits[0], hits[-1] + 1

    def find_text(self, needle: str, *, segment: int | None = None,
                  occurrence: Literal["unique", "first"] = "unique") -> tuple[int, int]:
        """[b, e) positions of ``needle`` in a text segment (case-sensitive; the needle is stripped
        of surrounding whitespace first; the subject rule is in the module docstring).

        With ``occurrence="unique"`` a needle found twice is an error; ``"first"`` takes the first
        occurrence (ROME's rule). ``segment`` defaults to the only, or else the last, text segment
        that contains the needle.
        """
        if not needle or not needle.strip():
            raise ValueError("subject is empty")
        needle = needle.strip()
        text_segments = [i for i, s in enumerate(self.segments) if s.modality == "text"]
        if segment is not None:
            if segment not in text_segments:
                raise ValueError(f"segment {segment} is not a text segment of this prompt")
            candidates = [segment]
        else:
            candidates = [i for i in text_segments if needle in self.segments[i].content]
        if not candidates:
            shown = " | ".join(self.segments[i].content for i in text_segments)
            raise ValueError(f"subject {needle!r} does not occur in the prompt text {shown!r}")
        index = candidates[-1]
        start, end = find_span(self.segments[index].content, needle, occurrence=occurrence)
        return self.char_range_to_positions(index, start, end)

    def to_json(self) -> list[dict]:
        out = []
        for p in self.positions:
            item = {"position": p.position, "token_id": p.token_id, "kind": p.kind, "segment": p.segment}
            if p.char_span is not None:
                item["char_span"] = list(p.char_span)
            if p.unit_index is not None:
                item["unit_index"] = p.unit_index
                item["frame_span"] = list(p.frame_span) if p.frame_span else None
            if p.stream is not None:
                item["stream"] = p.stream
            out.append(item)
        return out


def find_span(text: str, needle: str, *, occurrence: str = "unique", where: str | None = None) -> tuple[int, int]:
    """Characters [start, end) of ``needle`` in ``text`` (case-sensitive), after stripping the
    needle's surrounding whitespace (``"Space Needle "`` is ``"Space Needle"``: a trailing space
    would pull the next word's ``▁is`` into the subject, a leading one nothing).

    ``occurrence="unique"``: a needle found twice is an error; ``"first"``: the first occurrence
    (ROME's rule). A missing or empty needle is an error naming both; ``where`` describes the text
    in messages (default: the text itself).
    """
    where = where or repr(text)
    if occurrence not in ("unique", "first"):
        raise ValueError(f"occurrence must be 'unique' or 'first', got {occurrence!r}")
    if not isinstance(needle, str) or not needle.strip():
        raise ValueError("subject is empty")
    needle = needle.strip()
    start = text.find(needle)
    if start < 0:
        raise ValueError(f"subject {needle!r} does not occur in {where}")
    if occurrence == "unique" and text.find(needle, start + 1) >= 0:
        raise ValueError(
            f"subject {needle!r} occurs more than once in {where}; pass occurrence='first' "
            "(ROME's rule: the first occurrence) or give the subject range explicitly"
        )
    return start, start + len(needle)


def check_output_modality(output_modality: str) -> str:
    if output_modality not in OUTPUT_MODALITIES:
        raise ValueError(f"unknown output_modality {output_modality!r}; use one of "
                         f"{', '.join(OUTPUT_MODALITIES)}")
    return output_modality


def encode_segments(tokenizer, vocab: Vocabulary, segments: Sequence[Segment], output_modality: str = "text", *,
                    family) -> tuple[list[int], TokenMap]:
    """Token ids ``[T]`` (BOS first) and the TokenMap of a segmented prompt, by ``family``'s prompt rules
    (:class:`~spiritlens.models.base.ModelFamily`). ValueError for an empty prompt, a tokenizer that
    gives no single leading BOS, speech units that do not tokenise one token per unit, or a stream the
    vocabulary lacks."""
    if not segments:
        raise ValueError("prompt is empty: give a non-empty string or at least one (modality, content) pair")
    prompt, offsets = family.prompt_string(segments, output_modality)
    encoding = tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)
    ids: list[int] = list(encoding["input_ids"])
    spans: list[tuple[int, int]] = [tuple(s) for s in encoding["offset_mapping"]]
    if not ids or ids[0] != vocab.bos_id or ids.count(vocab.bos_id) != 1:
        raise ValueError(f"tokenizer did not produce exactly one leading BOS for prompt {prompt[:60]!r}")
    ends = [offsets[i] + len(family.segment_text(s)) for i, s in enumerate(segments)]
    speech_starts = {}  # segment -> char offsets of each speech token string inside it
    speech_streams = {}  # segment -> (stream, unit) per speech token
    for index, segment in enumerate(segments):
        if segment.modality == "speech":
            starts, cursor = [], offsets[index]
            for string in family.unit_strings(segment.content):
                starts.append(cursor)
                cursor += len(string)
            speech_starts[index] = {s: k for k, s in enumerate(starts)}
            speech_streams[index] = speech_token_streams(segment.content)
            missing = sorted({stream for stream, _ in speech_streams[index] if not vocab.stream_ids(stream)})
            if missing:
                raise ValueError(f"segment {index} has {'/'.join(missing)} tokens but this model's vocabulary has "
                                 f"none (a model without them); give HuBERT-only units or a model that reads them")

    positions: list[TokenInfo] = []
    for position, (token_id, (start, end)) in enumerate(zip(ids, spans)):
        if position == 0:
            positions.append(TokenInfo(position, token_id, "bos"))
            continue
        if token_id in vocab.marker_ids:
            positions.append(TokenInfo(position, token_id, "marker"))
            continue
        index = next((i for i in range(len(segments)) if offsets[i] <= start < ends[i]), None)
        if index is None and end > start:  # a piece made from a template's space and a segment's word (▁The)
            index = next((i for i in range(len(segments)) if offsets[i] < end <= ends[i]), None)
        if index is None and start == end and token_id not in vocab.speech_ids and not family.has_template:
            positions.append(TokenInfo(position, token_id, "prefix"))  # SentencePiece's dummy prefix
            continue
        if index is None and family.has_template and token_id not in vocab.speech_ids:
            positions.append(TokenInfo(position, token_id, "template"))
            continue
        if index is None:
            raise ValueError(f"token {token_id} at characters [{start}, {end}) of the prompt belongs to no segment")
        segment = segments[index]
        if segment.modality == "text":
            span = (max(start, offsets[index]) - offsets[index], min(end, ends[index]) - offsets[index])
            positions.append(TokenInfo(position, token_id, "text", index, char_span=span))
        else:
            k = speech_starts[index].get(start)
            stream, unit = speech_streams[index][k] if k is not None else (None, None)
            ids_of_stream = vocab.stream_ids(stream) if stream is not None else ()
            if k is None or not 0 <= unit < len(ids_of_stream) or ids_of_stream[unit] != token_id:
                raise ValueError(f"speech unit string of segment {index} did not tokenise to one token per unit")
            frame = tuple(segment.content.spans[k])
            positions.append(TokenInfo(position, token_id, "speech", index, unit_index=k, frame_span=frame,
                                       stream=stream))
    token_map = TokenMap(list(segments), positions, prompt, output_modality, list(offsets))
    return ids, token_map
