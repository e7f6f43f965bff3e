"""SpiritLM's prompt rules (``Spiritlm._build_prompt``): markers between segments of different modalities.

A ``[Text]`` marker goes before a text segment unless the previous segment was text, a ``[Speech]``
marker before a speech segment unless the previous one was speech (SpiritLM's code since commit
3e74a02, 2024-10-20, "Fix the typo in prompt building"; the release-day code, 537486b, compared
against ``"a"`` and wrote ``[Speech]`` before every speech segment); speech is written as its units'
``[Hu<unit>]`` strings (Expressive: ``[St…][Pi…][Hu…]`` interleaved by SpiritLM's merge); and the
output-modality marker goes at the end when the last segment is of the other modality. The string is
then tokenised in one call with BOS by SpiritLM's tokenizer (:func:`spiritlens.tokens.prompt.encode_segments`)::

    T->T   [Text]The capital of Italy is   ->  <s> ▁ [Text] T he ▁capital ▁of ▁Italy ▁is
    S->T   [Speech][Hu99][Hu49]…[Text]     ->  <s> ▁ [Speech] [Hu99] [Hu49] … [Text]

(shown for markers that are SentencePiece pieces, as in the tiny checkpoints; with markers declared as
added tokens, ``<s> [Text] ▁The ▁capital …``).
"""

from __future__ import annotations

from typing import Sequence

from spiritlens.models.spiritlm.vocab import SPEECH_MARKER, TEXT_MARKER
from spiritlens.tokens.prompt import check_output_modality


def build_prompt_string(segments: Sequence, segment_text, output_modality: str = "text"
                        ) -> tuple[str, list[int], list[tuple[int, int]]]:
    """SpiritLM's prompt string, the start offset of each segment's content in it, and the
    character spans of the markers placed (SpiritLM's ``_build_prompt`` rules; module docstring).
    ``segment_text(segment)``: a segment as the string holds it (speech as its unit strings)."""
    check_output_modality(output_modality)
    parts: list[str] = []
    offsets: list[int] = []
    markers: list[tuple[int, int]] = []
    length = 0
    previous = None

    def add_marker(marker: str) -> None:
        nonlocal length
        parts.append(marker)
        markers.append((length, length + len(marker)))
        length += len(marker)

    for segment in segments:
        if segment.modality != previous:
            add_marker(TEXT_MARKER if segment.modality == "text" else SPEECH_MARKER)
        offsets.append(length)
        content = segment_text(segment)
        parts.append(content)
        length += len(content)
        previous = segment.modality
    if output_modality == "text" and previous != "text":
        add_marker(TEXT_MARKER)
    elif output_modality == "speech" and previous != "speech":
        add_marker(SPEECH_MARKER)
    return "".join(parts), offsets, markers
