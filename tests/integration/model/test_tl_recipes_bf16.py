"""Every recipe of the README's "For TransformerLens users" section on a bfloat16 model, and the
cache's LayerNorm read-outs in bfloat16 against a float64 reference.

The model is a tiny SpiritLM whose RMSNorm gains are far from 1 (so a dropped gain shows), loaded in
bfloat16. References: Llama's RMSNorm written out here in float64 (``w * x / sqrt(mean(x^2) + eps)``)
on the cached bf16 residual stream, the model's own bf16 logits, and a plain hook loop. Tolerances
are bfloat16's (8 bits of mantissa: relative steps of 2^-8).
"""

from __future__ import annotations

import pytest
import torch

from helpers import write_gained_tiny_model

PROMPT = "The Space Needle is located in the city of"
BF16 = torch.bfloat16


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from spiritlens import HookedSpiritLM

    directory = write_gained_tiny_model(tmp_path_factory.mktemp("gained-bf16") / "spirit-lm-base-7b")
    return HookedSpiritLM.from_pretrained(directory, dtype="bfloat16")


@pytest.fixture(scope="module")
def run(model):
    with torch.no_grad():
        return model.run_with_cache(PROMPT)


def close(got, expected, relative=0.03):
    """Within bf16 rounding of the largest magnitude involved."""
    got, expected = got.double(), expected.double()
    return float((got - expected).abs().max()) <= relative * float(expected.abs().max()) + 1e-3


def rms_norm64(x, weight, eps):
    x = x.double()
    return weight.double() * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def test_cache_read_outs_keep_bf16_and_match_a_float64_reference(model, run):
    _, cache = run
    eps, L = model.cfg.eps, model.cfg.n_layers
    final_resid = cache[f"blocks.{L - 1}.hook_resid_post"]
    w_final = model.bridge.ln_final.original_component.weight
    assert float((w_final.float() - 1).abs().max()) > 0.5  # the gains are far from 1
    rms_final = torch.sqrt(final_resid.double().pow(2).mean(-1, keepdim=True) + eps)

    components = cache.decompose_resid(apply_ln=False)
    applied = cache.decompose_resid(apply_ln=True)
    heads = cache.stack_head_results(apply_ln=True)
    head_plain = cache.stack_head_results(apply_ln=False)
    for got in (applied, heads, cache.accumulated_resid(layer=2, apply_ln=True),
                cache.apply_ln_to_stack(final_resid[None])):
        assert got.dtype == BF16
    assert close(applied, w_final.double() * components.double() / rms_final)
    assert close(heads, w_final.double() * head_plain.double() / rms_final)
    layer = 2  # accumulated_resid(layer=k): the stack before block k, through block k's ln1
    resid_pre = cache[f"blocks.{layer}.hook_resid_pre"].double()
    w_ln1 = model.bridge.blocks[layer].ln1.original_component.weight
    expected = w_ln1.double() * cache.accumulated_resid(layer=layer).double() \
        / torch.sqrt(resid_pre.pow(2).mean(-1, keepdim=True) + eps)
    assert close(cache.accumulated_resid(layer=layer, apply_ln=True), expected)
    assert close(cache.apply_ln_to_stack(final_resid[None])[0], rms_norm64(final_resid, w_final, eps))
    neurons = cache.stack_neuron_results(1, apply_ln=True, pos_slice=-1)
    assert neurons.dtype == BF16


def test_the_readme_recipes_run_in_bf16(model, run, tmp_path):
    """The README's TransformerLens table, row by row, on the bf16 model."""
    logits, cache = run
    L = model.cfg.n_layers
    assert logits.dtype == BF16 and cache["blocks.1.hook_resid_post"].shape[-1] == model.cfg.d_model
    answer = int(logits[0, -1].argmax())

    # forward, cache, hooks: an ablation by run_with_hooks, the hooks() context and add_hook agree
    def ablate(z, hook):
        return torch.zeros_like(z)

    ablated = model.run_with_hooks(PROMPT, fwd_hooks=[("blocks.3.attn.hook_z", ablate)])
    with model.hooks(fwd_hooks=[("blocks.3.attn.hook_z", ablate)]):
        assert torch.equal(model(PROMPT), ablated)
    model.add_hook("blocks.3.attn.hook_z", ablate)
    try:
        assert torch.equal(model(PROMPT), ablated)
    finally:
        model.reset_hooks()
    assert not torch.equal(model(PROMPT), ablated)

    # logit lens: the last entry equals the logits
    lens = cache.accumulated_resid(apply_ln=True) @ model.W_U
    assert lens.dtype == BF16 and close(lens[-1], logits)
    # direct logit attribution: sums to the answer's logit; logit_attrs; per head
    dla = cache.decompose_resid(apply_ln=True) @ model.W_U[:, answer]
    assert close(dla[:, 0, -1].double().sum(), logits[0, -1, answer], relative=0.05)
    attrs = cache.logit_attrs(cache.decompose_resid(pos_slice=-1), tokens=answer, pos_slice=-1)
    assert attrs.dtype == BF16 and close(attrs.double().sum(), logits[0, -1, answer], relative=0.05)
    assert close(attrs.reshape(-1), dla[:, 0, -1], relative=0.05)
    per_head = cache.stack_head_results(pos_slice=-1)
    assert per_head.shape[0] == L * model.cfg.n_heads and per_head.dtype == BF16
    assert close(cache.apply_ln_to_stack(cache[f"blocks.{L - 1}.hook_resid_post"][None])[0] @ model.W_U, logits)

    # a batch: each row equals its prompt alone (bf16 rounding)
    prompts = [PROMPT, "The Eiffel Tower is in"]
    batch = model(prompts, padding_side="left")
    assert close(batch[0, -1], model(prompts[0])[0, -1]) and close(batch[1, -1], model(prompts[1])[0, -1])
    batch_logits, batch_cache = model.run_with_cache(prompts)
    assert batch_cache["blocks.0.hook_resid_post"].shape[0] == 2
    texts = model.generate(prompts, max_new_tokens=2, do_sample=False, verbose=False)
    assert [t[:len(p)] for t, p in zip(texts, prompts)] == prompts
    assert model.to_tokens(prompts, padding_side="right", prepend_bos=False).shape[0] == 2

    # resume from a layer, stop at one
    resumed = model(cache["blocks.2.hook_resid_pre"], start_at_layer=2)
    assert close(resumed, logits)
    stopped = model(PROMPT, stop_at_layer=2)
    assert torch.equal(stopped, cache["blocks.2.hook_resid_pre"])

    # patching and test_prompt
    from transformer_lens import patching
    from transformer_lens.utilities import test_prompt

    corrupted = model.to_tokens("The Eiffel Tower is located in the city of")
    clean = model.to_tokens(PROMPT)
    assert corrupted.shape == clean.shape

    def metric(patched_logits):
        return patched_logits[0, -1, answer]

    patched = patching.get_act_patch_resid_pre(model, corrupted, cache, metric)
    assert patched.shape == (L, clean.shape[1])
    # patching a position where both prompts hold the same tokens (up to the subject) changes nothing
    same = int((clean[0] != corrupted[0]).nonzero()[0])
    assert same >= 3
    assert close(patched[:, :same], metric(model(corrupted)).expand(L, same))
    test_prompt(PROMPT, "Seattle", model, top_k=2, print_details=False)

    # SAEs in SAELens' format
    from spiritlens.model.sae import SAE, load_sae

    torch.manual_seed(0)
    d = model.cfg.d_model
    sae = SAE(torch.randn(d, 2 * d) / d ** 0.5, torch.zeros(2 * d), torch.randn(2 * d, d) / d ** 0.5, torch.zeros(d),
              hook_name="blocks.1.hook_resid_post")
    sae = load_sae(sae.save(tmp_path / "sae"))
    sae_logits, sae_cache = model.run_with_cache_with_saes(PROMPT, saes=[sae], use_error_term=True)
    assert close(sae_logits, logits)  # the error term keeps the output
    assert sae_cache[f"{sae.hook_name}.hook_sae_acts_post"].shape[-1] == 2 * d
    with model.saes(sae):
        assert not torch.equal(model(PROMPT), logits)

    # moving and dtype
    assert model.to("cpu") is model and model.cfg.dtype == BF16
