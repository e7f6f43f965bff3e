"""Readable labels for SentencePiece pieces (``▁`` as a space, byte-fallback pieces as the character they spell)."""

from __future__ import annotations

from typing import Sequence
from spiritlens.tokens.llama import SPIECE_UNDERLINE, _BYTE_PIECE


def readable_pieces(pieces: Sequence[str]) -> list[str]:
    """One readable label per piece, for row labels of traces and figures.

    A piece's ``▁`` is shown as the space it stands for (``▁capital`` -> `` capital``), a lone
    ``▁`` as ``␣`` (a visible space); byte-fallback pieces as the character their bytes spell, with
    the byte's number when the character takes several (``<0xE6> <0x97> <0xA5>`` -> ``日(1/3)``
    ``日(2/3)`` ``日(3/3)``; ``<0x58>`` -> ``X``); bytes that spell no character keep their piece;
    anything else (``<s>``, ``[Text]``, ``[Hu12]``) as it is.
    """
    labels = list(pieces)
    i = 0
    while i < len(pieces):
        match = _BYTE_PIECE.match(pieces[i])
        if not match:
            labels[i] = "␣" if pieces[i] == SPIECE_UNDERLINE else pieces[i].replace(SPIECE_UNDERLINE, " ")
            i += 1
            continue
        lead = int(match.group(1), 16)
        width = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 0
        run = [_BYTE_PIECE.match(p) for p in pieces[i:i + width]] if width else []
        try:
            if len(run) != width or not all(run):
                raise ValueError
            char = bytes(int(m.group(1), 16) for m in run).decode("utf-8")
        except ValueError:
            i += 1  # a stray byte: keep its piece
            continue
        for k in range(width):
            labels[i + k] = char if width == 1 else f"{char}({k + 1}/{width})"
        i += width
    return labels
