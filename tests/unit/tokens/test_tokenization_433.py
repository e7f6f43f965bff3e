"""SpeechGPT's tokenisation (transformers 4.33's slow ``LlamaTokenizer``, ``rules="4.33"``) against two
independent references: the ids transformers 4.33.1 itself gave on the same files
(``tests/fixtures/speechgpt/reference.json``, written by ``scripts/make_speechgpt_fixtures.py`` in a separate
environment), and the 4.33 rule written out brute force below (split on the added tokens, strip the
whitespace around every one that is not an AddedToken special token, SentencePiece on each stretch, BOS).
SpiritLM's default rules are left as they were (they differ on these prompts)."""

from __future__ import annotations

import json

import pytest
import sentencepiece

from helpers import FIXTURES, brute_force_433

from spiritlens.models import get_family
from spiritlens.synthetic.tiny_speechgpt import write_speechgpt_tokenizer_files
from spiritlens.tokens.layout import file_hashes
from spiritlens.tokens.llama import SlowLlamaTokenizer
from spiritlens.tokens.prompt import Segment

REFERENCE = json.loads((FIXTURES / "speechgpt" / "reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    directory = write_speechgpt_tokenizer_files(tmp_path_factory.mktemp("speechgpt") / "tokenizer")
    if file_hashes(directory) != REFERENCE["tokenizer_files"]:
        pytest.fail("spiritlens' writer no longer produces the tokenizer files transformers 4.33.1 tokenised "
                    f"(sentencepiece {sentencepiece.__version__} now, {REFERENCE['sentencepiece_writer']} then): "
                    "rerun scripts/make_speechgpt_fixtures.py and review the diff")
    return directory


@pytest.fixture(scope="module")
def tokenizer(folder):
    return SlowLlamaTokenizer.from_pretrained(folder, rules="4.33")


def test_the_fixture_comes_from_transformers_433_and_covers_the_prompt_shapes():
    assert REFERENCE["transformers"] == "4.33.1" and REFERENCE["legacy"] is True and REFERENCE["len"] == 1024 + 1006
    shapes = {case["shape"] for case in REFERENCE["cases"]}
    assert {"t2t", "s2t", "asr", "tts", "interleaved", "raw text", "raw speech", "spaces", "glued", "digits",
            "byte fallback", "not a token", "literal special"} <= shapes
    assert any(case["template"] for case in REFERENCE["cases"]) and not all(case["template"] for case in REFERENCE["cases"])


@pytest.mark.parametrize("index", range(len(REFERENCE["cases"])))
def test_ids_equal_transformers_433_and_the_brute_force_rule(folder, tokenizer, index):
    case = REFERENCE["cases"][index]
    ids = tokenizer(case["prompt"])["input_ids"]
    assert ids == case["ids"], (case["shape"], tokenizer.convert_ids_to_tokens(ids), case["tokens"])
    assert ids == brute_force_433(folder, case["prompt"])
    assert tokenizer.convert_ids_to_tokens(ids) == case["tokens"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == case["decoded"]  # cli_infer.py's batch_decode


def test_the_familys_prompt_strings_are_cli_infers(tokenizer):
    """SpeechGPT's prompt rules write the string cli_infer.py writes (its question with units in place)."""
    family = get_family("speechgpt")
    for case in REFERENCE["cases"]:
        if not case["template"] or "<sosp>" in case["text"]:
            continue
        string, offsets = family.prompt_string([Segment("text", case["text"])])
        assert string == case["prompt"] and string[offsets[0]:].startswith(case["text"])

    class Units:
        tokens, spans = [12, 7, 7, 999, 0], [(0, 1), (1, 2), (2, 3), (3, 5), (5, 6)]

    string, offsets = family.prompt_string([Segment("speech", Units())])
    s2t = next(c for c in REFERENCE["cases"] if c["text"] == "<sosp><12><7><7><999><0><eosp>")
    assert string == s2t["prompt"] and string[offsets[0]:].startswith("<12><7>")


def test_spiritlms_rules_are_unchanged_and_differ_here(folder, tokenizer):
    default = SlowLlamaTokenizer.from_pretrained(folder)
    assert default.rules == "4.57" and tokenizer.rules == "4.33"
    templated = [case for case in REFERENCE["cases"] if case["template"]]
    differ = [case["shape"] for case in templated if default(case["prompt"])["input_ids"] != case["ids"]]
    assert len(differ) == len(templated)  # 4.57 keeps a ▁ around the added tokens that 4.33 strips
    text = "Hi <eoh>. [SpeechGPT]: "  # 4.57 keeps the spaces before the added tokens as lone ▁ pieces
    assert default.tokenize(text) == ["▁H", "i", "▁", "<eoh>", "▁", ".", "▁", "[SpeechGPT]", "▁", "<0x3A>", "▁"]
    assert tokenizer.tokenize(text) == ["▁H", "i", "<eoh>", "▁", ".", "[SpeechGPT]", "▁", "<0x3A>", "▁"]


def test_offsets_cover_the_characters_left_after_stripping(tokenizer):
    text = "ab  <sosp> <1>\n<eosp>  cd"
    encoding = tokenizer(text, return_offsets_mapping=True)
    pieces = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
    spans = dict(zip(pieces, encoding["offset_mapping"]))
    assert [text[slice(*spans[p])] for p in ("<sosp>", "<1>", "<eosp>")] == ["<sosp>", "<1>", "<eosp>"]
    assert text[slice(*spans[pieces[-1]])].strip() in ("cd", "d")


def test_files_433_could_not_read_are_refused(folder, tmp_path):
    import shutil

    def copy(name):
        target = tmp_path / name
        shutil.copytree(folder, target)
        return target

    decoder = copy("decoder")
    config = json.loads((decoder / "tokenizer_config.json").read_text())
    (decoder / "tokenizer_config.json").write_text(json.dumps({**config, "added_tokens_decoder": {}}))
    with pytest.raises(ValueError, match=r"tokenizer_config.json has added_tokens_decoder, which transformers 4.33"):
        SlowLlamaTokenizer.from_pretrained(decoder, rules="4.33")
    legacy = copy("legacy")
    (legacy / "tokenizer_config.json").write_text(json.dumps({**config, "legacy": False}))
    with pytest.raises(ValueError, match="sets legacy=false: tokenizer rules '4.33' reproduce the legacy path only"):
        SlowLlamaTokenizer.from_pretrained(legacy, rules="4.33")
    gap = copy("gap")
    added = json.loads((gap / "added_tokens.json").read_text())
    added["<eos>"] += 1
    (gap / "added_tokens.json").write_text(json.dumps(added))
    with pytest.raises(ValueError, match=r"added_tokens.json: ids must follow tokenizer.model's 1024 pieces without "
                                         r"gaps.*id 2030 should be 2029"):
        SlowLlamaTokenizer.from_pretrained(gap, rules="4.33")
    with pytest.raises(ValueError, match="unknown tokenizer rules '4.40'"):
        SlowLlamaTokenizer.from_pretrained(folder, rules="4.40")
