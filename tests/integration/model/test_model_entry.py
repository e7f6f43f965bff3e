"""One way into the model: strings and (modality, content) pairs take SpiritLM's prompt path in every
entry point, ids are range-checked where they enter, delegated methods keep the wrapper, and the
tokenisation (SpiritLM's, or transformers' on request) is detected, recorded and logged."""

from __future__ import annotations

import json
import logging

import pytest

from helpers import FIXTURES
import torch

from spiritlens import HookedSpiritLM, trace
from spiritlens.synthetic.tiny import write_tiny_model
from spiritlens.tokens.trace_prompt import display_tokens

PROMPT = "The Space Needle is located in the city of"
FIXTURE = json.loads((FIXTURES / "tokenizer_reference.json").read_text())


def test_strings_take_spiritlm_path_in_every_entry_point(tiny_model):
    ids = tiny_model.to_tokens(PROMPT)
    strings = tiny_model.to_str_tokens(PROMPT)
    assert strings[:3] == ["<s>", "▁", "[Text]"] and len(strings) == ids.shape[1] == 13
    with torch.no_grad():
        reference = tiny_model.bridge(ids)  # the bridge on SpiritLM's ids
        logits, cache = tiny_model.run_with_cache(PROMPT)
        seen = []
        hooked = tiny_model.run_with_hooks(PROMPT, fwd_hooks=[("hook_embed", lambda a, hook: seen.append(a.shape))])
        called = tiny_model(PROMPT)
    assert cache["hook_embed"].shape[:2] == (1, len(strings))
    assert seen == [torch.Size([1, 13, tiny_model.cfg.d_model])]
    for out in (logits, hooked, called):
        assert torch.equal(out, reference)
    # The bridge's string path is SpiritLM's too; its own tokenizer (transformers 5, no marker)
    # would have given 10 positions.
    assert torch.equal(tiny_model.bridge.to_tokens(PROMPT), ids)
    assert len(tiny_model.bridge.tokenizer(PROMPT).input_ids) == 10


def test_pairs_take_spiritlm_path_and_read_the_audio(tiny_model, tiny_root, spoken_prompt_wav):
    model = HookedSpiritLM.from_pretrained(tiny_root / "spiritlm_model" / "spirit-lm-base-7b")
    prompt = [("speech", str(spoken_prompt_wav)), ("text", " is located in")]
    units = model.speech_tokenizer.encode(spoken_prompt_wav)
    strings = model.to_str_tokens(prompt)
    assert strings[3:3 + len(units.tokens)] == [f"[Hu{u}]" for u in units.tokens]
    with torch.no_grad():
        logits, cache = model.run_with_cache(prompt)
        assert torch.equal(logits, model(model.to_tokens(prompt)))
    assert logits.shape[:2] == (1, len(strings)) and cache["hook_embed"].shape[0] == 1


def test_ids_pass_through_and_are_range_checked(tiny_model):
    ids = tiny_model.to_tokens(PROMPT)
    with torch.no_grad():
        assert torch.equal(tiny_model(ids[0]), tiny_model(ids))  # [pos] is one row
        assert torch.equal(tiny_model(ids[0].tolist()), tiny_model(ids))
    assert tiny_model.to_str_tokens(ids[0].tolist()) == tiny_model.to_str_tokens(PROMPT)
    n, rows = tiny_model.n_token_ids, tiny_model.cfg.d_vocab
    assert (n, rows) == (1527, 1536)
    cases = [
        ([1, 5000], rf"token id 5000 at position 1 is beyond the embedding's {rows} rows; valid ids are 0\.\.{n - 1}"),
        ([1, 1530], r"token id 1530 at position 1 is an embedding row with no token \(the tokenizer has 1527 ids\)"),
        ([1, 7, -3], r"token id -3 at position 2 is negative; valid ids are 0\.\.1526"),
    ]
    for bad, message in cases:
        for call in (lambda: tiny_model(torch.tensor([bad])), lambda: tiny_model.run_with_cache(torch.tensor(bad)),
                     lambda: tiny_model.to_str_tokens(bad), lambda: display_tokens(tiny_model, bad),
                     lambda: trace(tiny_model, bad, subject_range=(1, 2), noise=0.1)):
            with pytest.raises(ValueError, match=message):
                call()
    with pytest.raises(ValueError, match="must be integers"):
        tiny_model(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"^target id: token id 1530 is an embedding row with no token"):
        trace(tiny_model, PROMPT, "Space Needle", noise=0.1, target=1530)


def test_generate_checks_its_options(tiny_model):
    with pytest.raises(ValueError, match=r"^generate: unknown option 'max_tokens'; TransformerLens' options are "):
        tiny_model.generate(PROMPT, max_tokens=3)
    with pytest.raises(ValueError, match=r"^generate: unknown option 'num_beams'.*go to model.generate_ids"):
        tiny_model.generate(PROMPT, num_beams=2)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1"):
        tiny_model.generate(PROMPT, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"got 'speech' \(output_modality is a keyword"):
        tiny_model.generate(PROMPT, "speech")
    with pytest.raises(ValueError, match="return_type must be 'input', 'str' or 'tokens'"):
        tiny_model.generate(PROMPT, return_type="text")
    # generate_ids keeps SpiritLM's options (transformers.GenerationConfig fields) and its checks.
    with pytest.raises(ValueError, match=r"^generate: unknown option 'max_tokens' \(did you mean max_"):
        tiny_model.generate_ids(PROMPT, max_tokens=3)
    with pytest.raises(ValueError, match=r"^generate: use_cache is set by spiritlens"):
        tiny_model.generate_ids(PROMPT, use_cache=True)
    # GenerationConfig fields are accepted, and ids are a prompt too.
    ids = tiny_model.to_tokens(PROMPT)
    assert torch.equal(tiny_model.generate_ids(PROMPT, max_new_tokens=2, repetition_penalty=1.0),
                       tiny_model.generate_ids(ids, max_new_tokens=2))


def test_bridge_string_methods_take_spiritlms_path_or_refuse_text(tiny_model):
    ids = tiny_model.to_tokens(PROMPT)
    residual, tokens, _, _ = tiny_model.input_to_embed(PROMPT)
    assert torch.equal(tokens, ids)
    _, cache = tiny_model.run_with_cache(ids)
    assert torch.equal(residual, cache["blocks.0.hook_resid_pre"])
    assert tiny_model.get_token_position("[Text]", PROMPT) == ids[0].tolist().index(tiny_model.vocab.text_marker_id)
    assert tiny_model.get_token_position(7, torch.tensor([7, 3, 7]), mode="last") == 2
    with pytest.raises(ValueError, match="HookedSpiritLM.hf_generate takes token ids here, not text"):
        tiny_model.hf_generate(PROMPT)
    assert tiny_model.to_single_token("Seattle") == tiny_model.tokenizer.convert_tokens_to_ids("▁Seattle")
    with pytest.raises(ValueError, match=r"'Mountain View' is 2 tokens \['▁Mountain', '▁View'\], not one"):
        tiny_model.to_single_token("Mountain View")
    assert tiny_model.to_string(tiny_model.to_tokens(PROMPT)[0]) == "<s>[Text]" + PROMPT


def test_methods_returning_the_bridge_return_the_model(tiny_base_dir):
    model = HookedSpiritLM.from_pretrained(tiny_base_dir)
    for moved in (model.to("cpu"), model.cpu(), model.eval(), model.train(False), model.float(),
                  model.to(torch.float32), model.requires_grad_(False)):
        assert moved is model
    half = model.half()
    assert half is model and model.dtype == torch.float16
    assert model.to_str_tokens(PROMPT)[:3] == ["<s>", "▁", "[Text]"]  # speech/prompt support kept
    model = model.float()
    with torch.no_grad():
        assert model(PROMPT).dtype == torch.float32


def test_layout_is_recorded_and_logged(tiny_base_dir, caplog):
    with caplog.at_level(logging.INFO, logger="spiritlens"):
        model = HookedSpiritLM.from_pretrained(tiny_base_dir)
    assert model.tokenization.tokenization == "spiritlm" and model.tokenization.markers == "sentencepiece"
    assert model.tokenization.legacy is True and model.tokenization.legacy_source == "tokenizer_config.json"
    logged = [r.getMessage() for r in caplog.records if r.name == "spiritlens"]
    assert any("markers and units are user-defined pieces of tokenizer.model; legacy=True" in m for m in logged)


def test_transformers_tokenization_is_an_explicit_option(tiny_base_dir):
    model = HookedSpiritLM.from_pretrained(tiny_base_dir, tokenization="transformers")
    assert model.tokenization.tokenization == "transformers"
    assert model.to_str_tokens("The capital of Italy is") == [
        "<s>", "[Text]", "▁The", "▁capital", "▁of", "▁Italy", "▁is"]  # transformers 5, as before issue 9
    with pytest.raises(ValueError, match="unknown tokenization 'slow'; use 'spiritlm'"):
        HookedSpiritLM.from_pretrained(tiny_base_dir, tokenization="slow")


@pytest.mark.parametrize("name, writer", [
    ("added-config-legacy-false", dict(tokenizer_layout="added_tokens", declare="tokenizer_config", legacy=False)),
    ("added-special-map", dict(tokenizer_layout="added_tokens", declare="special_tokens_map", legacy=True)),
])
def test_added_token_layouts_load_and_match_the_reference(tmp_path, name, writer):
    model = HookedSpiritLM.from_pretrained(write_tiny_model(tmp_path / "m", **writer))
    assert model.tokenization.markers == "added_tokens"
    reference = {case["prompt"]: case["ids"] for case in FIXTURE["layouts"][name]["cases"]}
    ids, token_map = model.encode("The capital of Italy is")
    assert ids[0].tolist() == reference["[Text]The capital of Italy is"]
    assert token_map.prompt_string == "[Text]The capital of Italy is"
    b, e = token_map.find_text("Italy")
    assert model.to_str_tokens(ids)[b:e] == ["▁Italy"]
    assert model.vocab.text_marker_id == 1024 and model.vocab.hubert_ids[0] == 1026
