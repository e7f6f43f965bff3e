"""SpiritLM's prompt-marker rules and the TokenMap, on the tiny checkpoint's real tokenizer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from spiritlens.models.spiritlm.prompt import build_prompt_string


def units(*tokens):
    """Deduplicated units with frame spans of two frames each."""
    return SimpleNamespace(tokens=list(tokens), spans=[(2 * i, 2 * i + 2) for i in range(len(tokens))])


# (segments, output modality, the prompt string SpiritLM's _build_prompt writes)
MARKER_CASES = [
    ([("text", "The capital of Italy is")], "text", "[Text]The capital of Italy is"),
    ([("speech", units(5, 9, 5))], "text", "[Speech][Hu5][Hu9][Hu5][Text]"),
    ([("speech", units(5, 9))], "speech", "[Speech][Hu5][Hu9]"),
    ([("speech", units(5, 9))], "arbitrary", "[Speech][Hu5][Hu9]"),
    ([("text", "The capital of Italy is")], "speech", "[Text]The capital of Italy is[Speech]"),
    ([("text", "Paris is in")], "arbitrary", "[Text]Paris is in"),
    ([("text", "The capital"), ("speech", units(7)), ("text", " of Italy")], "text",
     "[Text]The capital[Speech][Hu7][Text] of Italy"),
    ([("speech", units(1, 2)), ("text", " and"), ("speech", units(3)), ("text", " then"), ("speech", units(499))],
     "text", "[Speech][Hu1][Hu2][Text] and[Speech][Hu3][Text] then[Speech][Hu499][Text]"),
    # Adjacent speech segments share one [Speech]: SpiritLM's _build_prompt since commit 3e74a02
    # ("Fix the typo in prompt building"; the release-day code compared with "a" and wrote one each).
    ([("text", "a"), ("text", "b"), ("speech", units(4)), ("speech", units(6))], "text",
     "[Text]ab[Speech][Hu4][Hu6][Text]"),
]


@pytest.mark.parametrize("segments, output, expected", MARKER_CASES)
def test_prompt_string_and_ids_follow_spiritlm_markers(tiny_model, segments, output, expected):
    ids, token_map = tiny_model.encode(segments, output)
    prompt, _, _ = build_prompt_string(tiny_model.segments(segments), tiny_model.family.segment_text, output)
    assert prompt == expected
    assert token_map.prompt_string == expected
    # SpiritLM tokenises the whole prompt string in one call, with BOS.
    assert ids[0].tolist() == tiny_model.tokenizer(expected).input_ids
    assert ids[0, 0].item() == tiny_model.vocab.bos_id
    assert ids[0].tolist().count(tiny_model.vocab.bos_id) == 1
    # Every [HuN] became exactly its unit token, in order, and markers sit where the string has them.
    vocab = tiny_model.vocab
    expected_units = [u for modality, content in segments if modality == "speech" for u in content.tokens]
    got_units = [vocab.unit_of(i) for i in ids[0].tolist() if vocab.unit_of(i) is not None]
    assert got_units == expected_units
    markers = ["[Text]" if i == vocab.text_marker_id else "[Speech]" for i in ids[0].tolist() if i in vocab.marker_ids]
    assert markers == _markers_in(expected)


def _markers_in(prompt: str) -> list[str]:
    out, i = [], 0
    while i < len(prompt):
        for marker in ("[Text]", "[Speech]"):
            if prompt.startswith(marker, i):
                out.append(marker)
                i += len(marker) - 1
                break
        i += 1
    return out


def test_issue_table_tokens_follow_spiritlm_not_transformers5(tiny_model):
    # Issue 9's table: SpiritLM's path (transformers 4.x slow LlamaTokenizer) on the tiny
    # checkpoint, whose markers are SentencePiece user-defined pieces.
    assert tiny_model.to_str_tokens("The capital of Italy is") == [
        "<s>", "▁", "[Text]", "T", "he", "▁capital", "▁of", "▁Italy", "▁is"]
    units12 = units(12, 7, 8)
    assert tiny_model.to_str_tokens([("speech", units12), ("text", " is located in")]) == [
        "<s>", "▁", "[Speech]", "[Hu12]", "[Hu7]", "[Hu8]", "[Text]", "▁is", "▁located", "▁in"]
    assert tiny_model.to_tokens("The capital of Italy is")[0, :3].tolist() == [
        1, tiny_model.tokenizer.convert_tokens_to_ids("▁"), tiny_model.vocab.text_marker_id]
    assert tiny_model.tokenization.markers == "sentencepiece" and tiny_model.tokenization.legacy


def test_token_map_records_modality_segment_and_spans(tiny_model):
    ids, token_map = tiny_model.encode([("text", "The capital"), ("speech", units(7, 8)), ("text", " of Italy")])
    # <s> ▁ [Text] T he ▁capital [Speech] [Hu7] [Hu8] [Text] ▁of ▁Italy
    kinds = [p.kind for p in token_map.positions]
    assert kinds == ["bos", "prefix", "marker", "text", "text", "text", "marker", "speech", "speech", "marker",
                     "text", "text"]
    assert [p.segment for p in token_map.positions] == [None, None, None, 0, 0, 0, None, 1, 1, None, 2, 2]
    assert [p.char_span for p in token_map.positions[3:6]] == [(0, 1), (1, 3), (3, 11)]  # "▁capital" -> " capital"
    assert [p.frame_span for p in token_map.positions[7:9]] == [(0, 2), (2, 4)]
    assert [p.unit_index for p in token_map.positions[7:9]] == [0, 1]
    assert token_map.find_text("Italy") == (11, 12)
    assert token_map.find_text("The capital") == (3, 6)
    assert token_map.find_text("of It") == (10, 12)


def test_find_text_errors(tiny_model):
    _, token_map = tiny_model.encode("Paris is in France, and Paris is old")
    with pytest.raises(ValueError, match="subject 'Rome' does not occur in the prompt text"):
        token_map.find_text("Rome")
    with pytest.raises(ValueError, match="occurs more than once"):
        token_map.find_text("Paris")
    assert token_map.find_text("Paris", occurrence="first") == (3, 5)  # "P" "aris" after the marker
    with pytest.raises(ValueError, match="subject is empty"):
        token_map.find_text("  ")


@pytest.mark.parametrize("prompt, message", [
    ("", "prompt is empty"),
    ([], "prompt is empty"),
    ([("video", "x")], "unknown modality 'video'"),
    ([("text", "")], "text content must be a non-empty string"),
    ([("text", "a"), "b"], "prompt item 1 must be a \\(modality, content\\) pair"),  # ["a", "b"] is a batch
    (42, "prompt must be a string or a sequence"),
])
def test_bad_prompts(tiny_model, prompt, message):
    with pytest.raises(ValueError, match=message):
        tiny_model.to_tokens(prompt)


def test_unknown_output_modality(tiny_model):
    with pytest.raises(ValueError, match="unknown output_modality 'video'"):
        tiny_model.to_tokens("hi", output_modality="video")


def test_prompt_longer_than_context(tiny_model, monkeypatch):
    whole = tiny_model.to_tokens("The capital of Italy is")
    monkeypatch.setattr(tiny_model.cfg, "n_ctx", 5)
    with pytest.raises(ValueError, match="prompt has 9 tokens, more than the model's context of 5"):
        tiny_model.encode("The capital of Italy is")
    # to_tokens keeps TransformerLens' contract: truncate=True cuts to the context, and says so.
    with pytest.warns(UserWarning, match=r"prompt 0 has 9 tokens; kept the first 5"):
        cut = tiny_model.to_tokens("The capital of Italy is")
    assert torch.equal(cut, whole[:, :5])
    assert torch.equal(tiny_model.to_tokens("The capital of Italy is", truncate=False), whole)
