"""TransformerLens habits on HookedSpiritLM: each works as on a TransformerLens model, against an
independent reference, or ends in one line saying why not."""

from __future__ import annotations

import warnings

import pytest
import torch

from spiritlens.model.bridge_paths import PromptRuleWarning

PROMPT = "The capital of Italy is"


def test_strings_given_to_the_bridge_take_spiritlms_path(tiny_model):
    ids = tiny_model.to_tokens(PROMPT)
    assert tiny_model.to_str_tokens(PROMPT)[:3] == ["<s>", "▁", "[Text]"]
    assert torch.equal(tiny_model.bridge.to_tokens(PROMPT), ids)
    assert torch.equal(tiny_model.bridge(PROMPT), tiny_model(ids))
    logits, _ = tiny_model.bridge.run_with_cache(PROMPT)
    assert torch.equal(logits, tiny_model(ids))
    assert tiny_model.bridge.to_str_tokens(PROMPT) == tiny_model.to_str_tokens(PROMPT)
    assert tiny_model.bridge.to_single_token("[Text]") == tiny_model.vocab.text_marker_id


def test_the_tokenizer_called_on_bare_text_says_so(tiny_model):
    with pytest.warns(PromptRuleWarning, match=r"without SpiritLM's \[Text\] marker.*model.to_tokens"):
        bare = tiny_model.tokenizer(PROMPT).input_ids
    assert bare != tiny_model.to_tokens(PROMPT)[0].tolist()  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        marked = tiny_model.tokenizer("[Text]" + PROMPT).input_ids  # SpiritLM's own prompt string: silent
        tiny_model.tokenizer.encode("Paris", add_special_tokens=False)  # a piece without BOS: no prompt rule
    assert marked == tiny_model.to_tokens(PROMPT)[0].tolist()
    with pytest.warns(PromptRuleWarning, match=r"model.tokenizer.encode\('The capital"):
        tiny_model.tokenizer.encode(PROMPT)
    assert len(tiny_model.tokenizer) == tiny_model.n_token_ids


def test_test_prompt_runs_and_reports_the_models_own_rank(tiny_model, capsys):
    from transformer_lens.utilities import test_prompt

    test_prompt(PROMPT, "Paris", tiny_model, top_k=3)
    out = capsys.readouterr().out
    logits = tiny_model(PROMPT)[0, -1]
    paris = tiny_model.to_single_token(" Paris")
    rank = int((logits > logits[paris]).sum())  # 0-based, TransformerLens' convention
    assert f"Rank: {rank}" in out and "Tokenized answer: ['▁Paris']" in out


def test_start_at_layer_resumes_from_a_cached_residual(tiny_model):
    logits, cache = tiny_model.run_with_cache(PROMPT)
    for layer in (1, tiny_model.cfg.n_layers - 1):
        resumed = tiny_model(cache[f"blocks.{layer}.hook_resid_pre"], start_at_layer=layer)
        assert float((resumed - logits).abs().max()) <= 1e-5
    with pytest.raises(ValueError, match="start_at_layer requires a residual-stream tensor"):  # the bridge's words
        tiny_model(PROMPT, start_at_layer=1)
    with pytest.raises(ValueError, match="out of range"):
        tiny_model(cache["blocks.0.hook_resid_pre"], start_at_layer=tiny_model.cfg.n_layers)


def test_cuda_without_cuda_is_one_line(tiny_model):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=r"^model.to\('cuda'\): 'cuda': CUDA is not available here$"):
        tiny_model.to("cuda")
    with pytest.raises(ValueError, match=r"^model.cuda\('cuda'\): 'cuda': CUDA is not available here$"):
        tiny_model.cuda()
    assert tiny_model.device.type == "cpu"


def test_cfg_dtype_follows_the_weights(tiny_base_dir):
    from spiritlens import HookedSpiritLM

    model = HookedSpiritLM.from_pretrained(tiny_base_dir)
    assert model.cfg.dtype == torch.float32
    assert model.half() is model and model.cfg.dtype == torch.float16 == model.dtype
    assert model.to(torch.bfloat16).cfg.dtype == torch.bfloat16 == model.dtype
    assert model.float().cfg.dtype == torch.float32


def test_to_single_token_takes_markers_and_units(tiny_model):
    vocab = tiny_model.vocab
    assert tiny_model.to_single_token("[Text]") == vocab.text_marker_id
    assert tiny_model.to_single_token("[Speech]") == vocab.speech_marker_id
    assert tiny_model.to_single_token("[Hu12]") == vocab.hubert_ids[12]
    assert tiny_model.to_single_token("</s>") == vocab.eos_id
    # each id reads back as its own piece
    for name in ("[Text]", "[Hu12]", "[Hu500]"):
        assert tiny_model.to_str_tokens([tiny_model.to_single_token(name)]) == [name]
    # TransformerLens' string paths through to_single_token take SpiritLM's pieces too
    paris = tiny_model.to_single_token(" Paris")
    assert torch.equal(tiny_model.tokens_to_residual_directions(" Paris"), tiny_model.W_U[:, paris])
    with pytest.raises(ValueError, match=r"'The capital' is 2 tokens"):
        tiny_model.to_single_token("The capital")


def test_hook_functions_see_the_names_they_were_registered_under(tiny_model):
    names = ["hook_embed", "blocks.0.hook_resid_pre", "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out",
             "blocks.0.hook_resid_post"]
    seen = []
    tiny_model.run_with_hooks(PROMPT, fwd_hooks=[(n, lambda act, hook: seen.append(hook.name)) for n in names])
    assert seen == names
    # the bridge's own name stays reachable, and the hook point still works as one
    kept = []
    tiny_model.run_with_hooks(PROMPT, fwd_hooks=[("blocks.0.hook_resid_post",
                                                  lambda act, hook: kept.append(hook.point.name))])
    assert kept == ["blocks.0.hook_out"]
    with tiny_model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", lambda act, hook: seen.append(hook.name))]):
        tiny_model(PROMPT)
    assert seen[-1] == "blocks.1.hook_resid_post"
