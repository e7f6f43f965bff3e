"""SAELens-written SAEs spliced into the tiny HookedSpiritLM (fixtures from scripts/make_sae_fixtures.py).

The fixtures' inputs are this tiny model's activations (seed-0 checkpoint, the manifest's prompt)
at each SAE's hook point, and ``reference/<case>.safetensors`` holds SAELens' own output for them.
Reference: that output put in at the hook point with a plain ``run_with_hooks``; the splice
(``run_with_cache_with_saes``) must give the same logits and SAELens' hook values in the cache, and
with ``use_error_term=True`` SAELens' ``output + (x - output)`` (the model's own logits up to
float32 rounding) and its error ``x - output``.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from helpers import FIXTURES
from spiritlens.model.sae import load_sae

SAE_FIXTURES = FIXTURES / "sae"
MANIFEST = json.loads((SAE_FIXTURES / "manifest.json").read_text())
PROMPT = MANIFEST["prompt"]
PARITY = sorted(n for n, c in MANIFEST["cases"].items() if "error" not in c and n != "v5_expected_average")


def reference(name):
    return load_file(str(SAE_FIXTURES / "reference" / f"{name}.safetensors"))


def max_diff(a, b):
    return float((a.double() - b.double()).abs().max())


@pytest.fixture(scope="module")
def plain(tiny_model):
    """Logits and the activations at the fixtures' hook points, nothing spliced."""
    inputs = load_file(str(SAE_FIXTURES / "inputs.safetensors"))
    with torch.no_grad():
        logits, cache = tiny_model.run_with_cache(PROMPT, names_filter=lambda name: name in inputs)
    return logits, {name: cache[name] for name in inputs}, inputs


def test_the_fixture_inputs_are_this_models_activations(plain):
    _, acts, inputs = plain
    assert set(acts) == {"blocks.1.hook_resid_post", "blocks.0.hook_mlp_out", "blocks.1.mlp.hook_post",
                         "blocks.0.attn.hook_z"}
    for name, act in acts.items():
        assert act.shape == inputs[name].shape
        assert max_diff(act, inputs[name]) <= 1e-5 * max(1.0, float(inputs[name].abs().max())), name
    assert acts["blocks.0.attn.hook_z"].shape[-2:] == (4, 16)  # [batch, pos, n_heads, d_head], as in TransformerLens


@pytest.mark.parametrize("name", PARITY)
def test_spliced_logits_equal_saelens_output_put_in_by_hand(tiny_model, plain, name):
    plain_logits, acts, _ = plain
    ref = reference(name)
    sae = load_sae(SAE_FIXTURES / name, model=tiny_model)
    hook = sae.hook_name
    with torch.no_grad():
        expected = tiny_model.run_with_hooks(PROMPT, fwd_hooks=[(hook, lambda act, hook: ref["hook_sae_output"]
                                                                 .to(act.dtype))])
        logits, cache = tiny_model.run_with_cache_with_saes(PROMPT, saes=[sae])
        kept, error_cache = tiny_model.run_with_cache_with_saes(PROMPT, saes=[sae], use_error_term=True)
    assert max_diff(logits, expected) <= 1e-5
    assert max_diff(logits, plain_logits) > 1e-3  # the reconstruction is not the activation
    scale = max(1.0, float(ref["hook_sae_output"].double().abs().max()))
    step = 2 ** -7 if sae.dtype == torch.bfloat16 else 1e-5
    for value in ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_output"):
        assert max_diff(cache[f"{hook}.{value}"], ref[value]) <= step * scale, value
    # with the error term: SAELens' output + (x - output), which is the model's own output up to float32
    # rounding at activations of up to ~300; SAELens' error x - output; the same features
    with torch.no_grad():
        by_hand = tiny_model.run_with_hooks(PROMPT, fwd_hooks=[(hook, lambda act, hook: (
            ref["hook_sae_output"] + (act - ref["hook_sae_output"])).to(act.dtype))])
    assert max_diff(kept, by_hand) <= 1e-5
    assert max_diff(kept, plain_logits) <= 1e-4
    error = acts[hook] - ref["hook_sae_output"]
    assert max_diff(error_cache[f"{hook}.hook_sae_error"], error) <= step * scale
    assert torch.equal(error_cache[f"{hook}.hook_sae_acts_post"], cache[f"{hook}.hook_sae_acts_post"])
    assert f"{hook}.hook_sae_acts_post" not in tiny_model.run_with_cache(PROMPT)[1].keys()  # splice over


def test_the_hook_width_is_checked_at_load_and_splice(tiny_model, tmp_path):
    flat = tmp_path / "flat_z"
    shutil.copytree(SAE_FIXTURES / "v6_hook_z", flat)
    cfg = json.loads((flat / "cfg.json").read_text())
    (flat / "cfg.json").write_text(json.dumps({**cfg, "reshape_activations": "none"}))
    sae = load_sae(flat)  # a flat 64-wide SAE, as SAELens reads it, at a [.., 4, 16] hook point
    message = r"^SAE at blocks\.0\.attn\.hook_z has d_in 64 but the activation there has width 16$"
    with pytest.raises(ValueError, match=message):
        load_sae(flat, model=tiny_model)
    with pytest.raises(ValueError, match=message):
        tiny_model.run_with_saes(PROMPT, saes=[sae])
    moved = tmp_path / "moved"
    shutil.copytree(SAE_FIXTURES / "v6_jumprelu_mlp_post", moved)
    cfg = json.loads((moved / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = "blocks.1.hook_resid_post"
    (moved / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"^SAE at blocks\.1\.hook_resid_post has d_in 160 but the activation "
                                         r"there has width 64$"):
        load_sae(moved, model=tiny_model)
    cfg["metadata"]["hook_name"] = "blocks.9.hook_resid_post"
    (moved / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"unknown hook name 'blocks\.9\.hook_resid_post'"):
        load_sae(moved, model=tiny_model)
    twice = [load_sae(SAE_FIXTURES / "v6_standard"), load_sae(SAE_FIXTURES / "v5_standard")]
    with pytest.raises(ValueError, match=r"two SAEs at one hook point: blocks\.1\.hook_resid_post"):
        tiny_model.run_with_saes(PROMPT, saes=twice)


def test_the_error_term_is_detached_as_in_saelens(tiny_model, plain):
    """With ``use_error_term`` SAELens adds the error under ``no_grad``: the output equals the
    model's, yet gradients flow through the SAE (here into ``W_dec``), as attribution with SAEs needs."""
    sae = load_sae(SAE_FIXTURES / "v6_standard")
    logits = tiny_model.run_with_saes(PROMPT, saes=[sae], use_error_term=True)
    assert max_diff(logits.detach(), plain[0]) <= 1e-4
    (grad,) = torch.autograd.grad(logits[0, -1].max(), [sae.W_dec])
    assert float(grad.abs().sum()) > 0
