"""One rule for subject positions, on all 1209 Known prompts, against a brute-force rule written here.

The brute force never looks at the tokenizer's offsets: it walks the pieces along the prompt string
(a piece's ``▁`` is a space of the prompt, or SentencePiece's own prefix when the prompt has no space
there; byte pieces add up to their character), and takes as subject every token that spells at
least one character of the stripped subject. A lone ``▁`` spells a space or nothing, so it never
belongs to a subject, at the start of the prompt or in the middle.
"""

from __future__ import annotations

import json

import pytest

from spiritlens.synthetic.tiny import write_tokenizer_files
from spiritlens.tokens.llama import SlowLlamaTokenizer
from spiritlens.tokens.prompt import Segment, encode_segments, find_span
from spiritlens.models import get_family
from spiritlens.models.spiritlm.vocab import spiritlm_vocabulary


@pytest.fixture(scope="module", params=[
    dict(layout="sentencepiece", legacy=True),  # the tiny checkpoints: <s> ▁ [Text] T he …
    dict(layout="added_tokens", legacy=True),   # <s> [Text] ▁The …, a dummy-prefix ▁ after every marker
    dict(layout="added_tokens", legacy=False),
], ids=["sentencepiece", "added-legacy", "added-nonlegacy"])
def tokenizer(request, tmp_path_factory):
    directory = write_tokenizer_files(tmp_path_factory.mktemp("tok"), **request.param)
    tok = SlowLlamaTokenizer.from_pretrained(directory)
    return tok, spiritlm_vocabulary(tok)


@pytest.fixture(scope="module")
def known(known_path):
    return json.loads(known_path.read_text())


def brute_force_spans(pieces: list[str], text: str, added: set[str]) -> list[tuple[int, int]]:
    """Characters of ``text`` each piece spells, by walking the pieces along the text."""
    spans, cursor, pending = [], 0, []
    for piece in pieces:
        if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            pending.append(int(piece[3:5], 16))
            char_bytes = text[cursor].encode("utf-8")
            spans.append((cursor, cursor + 1))
            if bytes(pending) == char_bytes:
                cursor, pending = cursor + 1, []
            continue
        surface = piece if piece in added else piece.replace("▁", " ")
        typed = text[cursor:cursor + len(surface)].replace("▁", " ")
        if typed == surface:
            spans.append((cursor, cursor + len(surface)))
            cursor += len(surface)
        elif surface.startswith(" ") and text[cursor:cursor + len(surface) - 1] == surface[1:]:
            spans.append((cursor, cursor + len(surface) - 1))  # SentencePiece's own ▁ spells nothing
            cursor += len(surface) - 1
        else:
            raise AssertionError(f"piece {piece!r} does not continue {text!r} at {cursor}")
    assert cursor == len(text), (pieces, text)
    return spans


def brute_force_subject(spans, start: int, end: int) -> tuple[int, int]:
    hits = [i for i, (s, e) in enumerate(spans) if s < end and e > start and s < e]
    return hits[0], hits[-1] + 1


def test_known_subject_positions_follow_one_rule(tokenizer, known):
    tok, vocab = tokenizer
    added = set(tok.added_tokens_encoder)
    lone_before = 0
    for record in known:
        prompt, subject = record["prompt"], record["subject"]
        ids, token_map = encode_segments(tok, vocab, [Segment("text", prompt)], family=get_family("spiritlm"))
        b, e = token_map.find_text(subject, occurrence="first")
        pieces = tok.convert_ids_to_tokens(ids)
        spans = brute_force_spans(pieces[1:], token_map.prompt_string, added)
        offset = token_map.segment_offsets[0]
        start = offset + prompt.index(subject)
        bb, ee = brute_force_subject(spans, start, start + len(subject))
        assert (b, e) == (bb + 1, ee + 1), (record["known_id"], pieces[b:e], pieces[bb + 1:ee + 1])
        assert pieces[b] != "▁", (record["known_id"], pieces[b - 1:e])
        lone_before += pieces[b - 1] == "▁"
    assert len(known) == 1209
    assert lone_before >= 4  # digits and byte-fallback subjects: "▁ 2 0 0 0 ▁A us …", "▁ <0x58> a vi er"


@pytest.mark.parametrize("subject", ["2005 Australian Open", "Xbox", "Kyōto University", "Space Needle"])
def test_lone_prefix_is_never_subject_wherever_the_subject_is(tokenizer, subject):
    tok, vocab = tokenizer
    for prompt in (f"{subject} is located in", f"Where is {subject} located?", f"Facts:\n{subject} is"):
        ids, token_map = encode_segments(tok, vocab, [Segment("text", prompt)], family=get_family("spiritlm"))
        b, e = token_map.find_text(subject)
        pieces = tok.convert_ids_to_tokens(ids)
        assert pieces[b] != "▁" and pieces[e - 1] != "▁", (prompt, pieces[b:e])
        spans = [(p.char_span[0], p.char_span[1]) for p in token_map.positions[b:e]]
        text = prompt[min(s for s, _ in spans):max(t for _, t in spans)]
        assert text.strip() == subject, (prompt, pieces[b:e], text)


def test_subject_is_stripped(tokenizer):
    tok, vocab = tokenizer
    _, token_map = encode_segments(tok, vocab, [Segment("text", "The Space Needle is located in")],
                                   family=get_family("spiritlm"))
    plain = token_map.find_text("Space Needle")
    assert token_map.find_text("Space Needle ") == plain  # no ▁is
    assert token_map.find_text(" Space Needle\t") == plain
    assert find_span("a  b", " b ") == (3, 4)
    with pytest.raises(ValueError, match="subject is empty"):
        find_span("abc", "  ")
