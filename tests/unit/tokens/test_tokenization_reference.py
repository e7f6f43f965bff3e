"""spiritlens' tokenizer against SpiritLM's own call under transformers 4.x, for every tokenizer layout.

The reference ids come from ``scripts/make_tokenizer_fixtures.py``, which ran
``LlamaTokenizer.from_pretrained(path, add_bos_token=True, add_eos_token=False)(prompt)`` with
transformers 4.57 in a separate environment on tiny tokenizer files written by spiritlens' own
writer. The files are rewritten here and must hash the same, or the comparison means nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import FIXTURES

from spiritlens.synthetic.tiny import write_tokenizer_files
from spiritlens.tokens.llama import SlowLlamaTokenizer
from spiritlens.models.spiritlm.vocab import TEXT_MARKER
from spiritlens.tokens.layout import TokenizerLayout, detect_layout, file_hashes

FIXTURE = FIXTURES / "tokenizer_reference.json"
REFERENCE = json.loads(FIXTURE.read_text(encoding="utf-8"))
LAYOUTS = REFERENCE["layouts"]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    return {name: write_tokenizer_files(root / name, **layout["writer"]) for name, layout in LAYOUTS.items()}


def _loaded(written, name: str) -> SlowLlamaTokenizer:
    directory = written[name]
    got = file_hashes(directory)
    if got != LAYOUTS[name]["files"]:
        import sentencepiece

        changed = sorted(k for k in set(got) | set(LAYOUTS[name]["files"]) if got.get(k) != LAYOUTS[name]["files"].get(k))
        pytest.fail(
            f"layout {name!r}: spiritlens' writer no longer produces the tokenizer files the reference ids were "
            f"made from ({', '.join(changed)} differ; sentencepiece {sentencepiece.__version__} now, "
            f"{REFERENCE['sentencepiece_writer']} then). Rerun scripts/make_tokenizer_fixtures.py and review the diff.")
    return SlowLlamaTokenizer.from_pretrained(directory, add_bos_token=True, add_eos_token=False)


def test_fixture_covers_both_layouts_and_four_prompt_shapes():
    markers = {layout["writer"]["layout"] for layout in LAYOUTS.values()}
    legacy = {layout["writer"].get("legacy") for layout in LAYOUTS.values()}
    declared = {layout["writer"].get("declare") for layout in LAYOUTS.values() if layout["writer"]["layout"] == "added_tokens"}
    shapes = {case["shape"] for layout in LAYOUTS.values() for case in layout["cases"]}
    assert markers == {"sentencepiece", "added_tokens"}
    assert legacy == {True, False, None}
    assert declared == {"tokenizer_config", "special_tokens_map", "added_tokens_json"}
    assert {"text", "speech", "speech->text", "interleaved", "digits", "lone ▁", "byte fallback", "spaces",
            "after marker"} <= shapes
    assert REFERENCE["transformers"].startswith("4.")


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_ids_equal_spiritlm_reference(written, name):
    tokenizer = _loaded(written, name)
    layout = LAYOUTS[name]
    assert len(tokenizer) == layout["length"]
    assert tokenizer.legacy == layout["legacy"]
    assert tokenizer.all_special_tokens == layout["all_special_tokens"]
    vocab = tokenizer.get_vocab()
    assert {t: vocab.get(t) for t in layout["ids"]} == layout["ids"]
    for case in layout["cases"]:
        prompt, ids = case["prompt"], case["ids"]
        got = tokenizer(prompt).input_ids
        assert got == ids, f"{name}: {prompt!r}\n got {tokenizer.convert_ids_to_tokens(got)}\n want {case['tokens']}"
        assert tokenizer.convert_ids_to_tokens(ids) == case["tokens"]
        assert tokenizer(prompt, add_special_tokens=False).input_ids == case["ids_no_special"]
        # SpiritLM's decode call, on the whole sequence and on a tail, and a plain decode.
        assert tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == case["decoded"]
        assert tokenizer.decode(ids[3:], skip_special_tokens=True,
                                clean_up_tokenization_spaces=False) == case["decoded_tail"]
        assert tokenizer.decode(ids) == case["decoded_raw"]


def _surface(piece: str) -> str:
    return piece.replace("▁", " ")


@pytest.mark.parametrize("name", ["sentencepiece", "sentencepiece-legacy-false", "added-config",
                                  "added-config-special-legacy-false", "added-tokens-json"])
def test_offsets_cover_what_each_piece_spells(written, name):
    """Brute force from the pieces themselves: a piece's span holds its text (with or without the
    space its ▁ stands for), byte pieces sit on the character whose UTF-8 bytes they are, and the
    spans of the non-empty tokens tile the prompt left to right without overlap."""
    tokenizer = _loaded(written, name)
    for case in LAYOUTS[name]["cases"]:
        prompt = case["prompt"]
        encoding = tokenizer(prompt, return_offsets_mapping=True)
        assert encoding.input_ids == case["ids"]
        spans = encoding.offset_mapping
        assert spans[0] == (0, 0)  # BOS
        previous_end, previous = 0, None
        for piece, (start, end) in zip(case["tokens"][1:], spans[1:]):
            text = prompt[start:end]
            # No overlap, except the bytes of one character, which share its span.
            assert start >= previous_end or start == end or (start, end) == previous, (prompt, piece, (start, end))
            if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
                assert end == start + 1 and int(piece[3:5], 16) in text.encode("utf-8"), (prompt, piece, text)
            elif start == end:
                assert piece == "▁", (prompt, piece)  # only SentencePiece's own prefix covers nothing
            else:
                surface = _surface(piece) if piece not in tokenizer.added_tokens_encoder else piece
                assert _surface(text) in (surface, surface[1:]), (prompt, piece, text)  # a typed ▁ is a space too
            previous_end, previous = max(previous_end, end), (start, end)
        covered = {k for s, e in spans for k in range(s, e)}
        # Every character is covered, except spaces an added token's rstrip/lstrip ate (none here).
        assert covered == set(range(len(prompt))), (prompt, sorted(set(range(len(prompt))) - covered))


@pytest.mark.parametrize("name, markers, legacy, source", [
    ("sentencepiece", "sentencepiece", True, "tokenizer_config.json"),
    ("sentencepiece-legacy-absent", "sentencepiece", True, "default"),
    ("added-config-legacy-false", "added_tokens", False, "tokenizer_config.json"),
    ("added-special-map", "added_tokens", True, "tokenizer_config.json"),
    ("added-tokens-json", "added_tokens", True, "tokenizer_config.json"),
])
def test_layout_is_detected(written, name, markers, legacy, source):
    tokenizer = _loaded(written, name)
    layout = detect_layout(tokenizer, written[name], marker=TEXT_MARKER)
    assert isinstance(layout, TokenizerLayout)
    assert (layout.markers, layout.legacy, layout.legacy_source) == (markers, legacy, source)
    assert layout.files == LAYOUTS[name]["files"]
    line = layout.describe()
    assert ("user-defined pieces of tokenizer.model" in line) == (markers == "sentencepiece")
    assert f"legacy={legacy}" in line and "SpiritLM's path" in line
    if name == "added-special-map":
        assert layout.declared_in == ("special_tokens_map.json additional_special_tokens",)
        assert layout.markers_special
    if name == "added-tokens-json":
        assert layout.declared_in == ("added_tokens.json",) and not layout.markers_special


def test_prompt_string_inverts_the_encoding(written):
    for name in ("sentencepiece", "sentencepiece-legacy-false", "added-config", "added-config-special-legacy-false"):
        tokenizer = _loaded(written, name)
        for case in LAYOUTS[name]["cases"]:
            text = tokenizer.prompt_string(case["ids"])
            assert tokenizer(text).input_ids == case["ids"], (name, case["prompt"], text)
    with pytest.raises(ValueError, match="not this tokenizer's encoding of any string"):
        _loaded(written, "sentencepiece").prompt_string([1, 978, 260, 978])  # "T he T": SentencePiece writes "The T"


@pytest.mark.parametrize("ids, message", [
    ([1, 5000], r"token id 5000 has no piece in this tokenizer \(valid ids 0\.\.1526\)"),
    ([-1], r"token id -1 has no piece"),
])
def test_unknown_ids_are_a_clear_error(written, ids, message):
    tokenizer = _loaded(written, "sentencepiece")
    with pytest.raises(ValueError, match=message):
        tokenizer.convert_ids_to_tokens(ids)
    with pytest.raises(ValueError, match=message):
        tokenizer.decode(ids)


def test_bad_tokenizer_files(tmp_path, written):
    with pytest.raises(FileNotFoundError, match="has no tokenizer.model"):
        SlowLlamaTokenizer.from_pretrained(tmp_path)
    directory = tmp_path / "broken"
    directory.mkdir()
    (directory / "tokenizer.model").write_bytes((written["sentencepiece"] / "tokenizer.model").read_bytes())
    (directory / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer_config.json is not valid JSON"):
        SlowLlamaTokenizer.from_pretrained(directory)
    (directory / "tokenizer_config.json").write_text(json.dumps({"sp_model_kwargs": {"enable_sampling": True}}))
    with pytest.raises(ValueError, match="sampled tokenisation is not supported"):
        SlowLlamaTokenizer.from_pretrained(directory)
