"""SAEs in SAELens' on-disk format: trained here on the tiny model's residual stream, saved as
SAELens writes them (cfg.json + sae_weights.safetensors), read back without sae_lens, spliced.

References: the SAE formula written out in this file (``relu((x - b_dec) @ W_enc + b_enc) @ W_dec
+ b_dec``; JumpReLU with its threshold), a plain ``run_with_hooks`` loop that swaps that
reconstruction in, the model's own logits (with the error term the output must not change), and
ROME's plain tracing loop under the same splice.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spiritlens import trace
from spiritlens.model.sae import SAE, load_sae

from reference_tracing import reference_trace

HOOK = "blocks.1.hook_resid_post"
PROMPTS = ["The Space Needle is located in the city of", "Paris is the capital of", "The Eiffel Tower is in",
           "Michael Jordan plays the sport of", "The mother tongue of Danielle Darrieux is"]


def reference_features(x, W_enc, b_enc, b_dec, threshold=None):
    x, W_enc, b_enc, b_dec = (t.detach() for t in (x, W_enc, b_enc, b_dec))
    pre = (x.double() - b_dec.double()) @ W_enc.double() + b_enc.double()
    if threshold is None:
        return pre.clamp(min=0)
    return pre * (pre > threshold.double())


@pytest.fixture(scope="module")
def activations(tiny_model):
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(PROMPTS, names_filter=HOOK)
    mask = tiny_model.encode_batch(PROMPTS).attention_mask.bool()
    return cache[HOOK][mask]  # [real positions, d_model]


@pytest.fixture(scope="module")
def trained(activations, tmp_path_factory):
    """A ReLU SAE (d_sae = 2 d_model) trained for 400 Adam steps, saved in SAELens' format."""
    torch.manual_seed(0)
    d_in, d_sae = activations.shape[1], 2 * activations.shape[1]
    W_dec = torch.randn(d_sae, d_in) / d_in ** 0.5
    sae = SAE(W_dec.T.clone(), torch.zeros(d_sae), W_dec, activations.mean(0).clone(), hook_name=HOOK)
    optimizer = torch.optim.Adam(sae.parameters(), lr=3e-3)
    for _ in range(400):
        acts = sae.encode(activations)
        loss = (sae.decode(acts) - activations).pow(2).sum(-1).mean() + 1e-3 * acts.abs().sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return sae.save(tmp_path_factory.mktemp("sae") / "blocks.1.hook_resid_post")


def test_the_saved_folder_is_saelens_format_and_reads_back(trained):
    cfg = json.loads((trained / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == HOOK and cfg["architecture"] == "standard"
    assert (cfg["d_in"], cfg["d_sae"]) == (64, 128) and cfg["apply_b_dec_to_input"] is True
    from safetensors.torch import load_file

    weights = load_file(str(trained / "sae_weights.safetensors"))
    assert {k: tuple(v.shape) for k, v in weights.items()} == {
        "W_enc": (64, 128), "b_enc": (128,), "W_dec": (128, 64), "b_dec": (64,)}
    sae = load_sae(trained)
    for name, tensor in weights.items():
        assert torch.equal(getattr(sae, name).detach(), tensor)
    assert sae.hook_name == HOOK and sae.d_sae == 128


def test_the_trained_sae_reconstructs_the_residual_stream(trained, activations):
    sae = load_sae(trained)
    with torch.no_grad():
        features = reference_features(activations, sae.W_enc, sae.b_enc, sae.b_dec)
        recons = features @ sae.W_dec.double() + sae.b_dec.double()
    explained = 1 - (recons - activations.double()).pow(2).sum() / (activations - activations.mean(0)).double().pow(2).sum()
    l0 = float((features > 0).float().sum(-1).mean())
    assert explained > 0.8, f"variance explained {float(explained):.3f}"
    assert l0 < sae.d_sae / 2, f"L0 {l0:.1f}"


def test_splicing_swaps_in_the_reconstruction(tiny_model, trained):
    sae = load_sae(trained)
    prompt = PROMPTS[0]
    with torch.no_grad():
        def swap(act, hook):
            features = reference_features(act, sae.W_enc, sae.b_enc, sae.b_dec)
            return (features @ sae.W_dec.double() + sae.b_dec.double()).to(act.dtype)

        expected = tiny_model.run_with_hooks(prompt, fwd_hooks=[(HOOK, swap)])
        plain = tiny_model(prompt)
        with tiny_model.saes(sae):
            spliced, cache = tiny_model.run_with_cache(prompt)
        assert float((spliced - expected).abs().max()) <= 1e-4
        assert float((spliced - plain).abs().max()) > 1e-3  # the reconstruction is not the activation
        # with the error term the output is the model's own, and the features are read
        logits, cache = tiny_model.run_with_cache_with_saes(prompt, saes=[sae], use_error_term=True)
        _, clean = tiny_model.run_with_cache(prompt, names_filter=HOOK)
    assert float((logits - plain).abs().max()) <= 1e-5
    x = clean[HOOK]
    features = reference_features(x, sae.W_enc, sae.b_enc, sae.b_dec)
    assert float((cache[f"{HOOK}.hook_sae_acts_post"].double() - features).abs().max()) <= 1e-4
    recons = features @ sae.W_dec.detach().double() + sae.b_dec.detach().double()
    assert float((cache[f"{HOOK}.hook_sae_error"].double() - (x.double() - recons)).abs().max()) <= 1e-4
    assert torch.equal(cache[f"{HOOK}.hook_sae_input"], x)
    assert f"{HOOK}.hook_sae_acts_post" not in tiny_model.run_with_cache(prompt)[1].keys()  # splice over


def test_older_saelens_configs_and_jumprelu(tmp_path, tiny_model):
    """A SAELens 5-style cfg (top-level hook_name, activation_fn_str) with a JumpReLU threshold."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    d, n = tiny_model.cfg.d_model, 32
    weights = {"W_enc": torch.randn(d, n) / 8, "b_enc": torch.randn(n) / 4, "W_dec": torch.randn(n, d) / 8,
               "b_dec": torch.randn(d) / 4, "threshold": torch.rand(n) / 2}
    save_file(weights, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({
        "d_in": d, "d_sae": n, "hook_name": "blocks.0.hook_resid_post", "hook_layer": 0, "architecture": "jumprelu",
        "activation_fn_str": "relu", "apply_b_dec_to_input": False, "normalize_activations": "none",
        "sae_lens_training_version": "5.3.0"}))
    sae = load_sae(tmp_path)
    assert sae.architecture == "jumprelu" and not sae.apply_b_dec_to_input
    x = torch.randn(3, 5, d)
    with torch.no_grad():
        pre = x.double() @ weights["W_enc"].double() + weights["b_enc"].double()  # b_dec not subtracted
        expected = pre * (pre > weights["threshold"].double())
        assert float((sae.encode(x).double() - expected).abs().max()) <= 1e-5
        assert float((expected > 0).sum()) > 0 and float((expected == 0).sum()) > 0


def test_tracing_with_an_sae_spliced_matches_the_plain_loop(tiny_model, trained):
    sae = load_sae(trained)
    prompt = PROMPTS[0]
    ids, token_map = tiny_model.encode(prompt)
    b, e = token_map.find_text("Space Needle")
    with tiny_model.saes(sae):
        result = trace(tiny_model, prompt, "Space Needle", kind="hidden", samples=3, noise=1.2, seed=3)
        table, low, high, _ = reference_trace(tiny_model, ids[0].tolist(), b, e, "hidden", samples=3, nu=1.2, seed=3,
                                              answer=result.answer_id)
    assert abs(result.low_score - low) <= 1e-6 and abs(result.high_score - high) <= 1e-6
    assert np.abs(result.scores - table).max() <= 1e-6


def test_bad_saes_are_one_line(tmp_path, tiny_model, trained):
    with pytest.raises(FileNotFoundError, match=r"cfg.json not found: a SAELens SAE folder has"):
        load_sae(tmp_path)
    sae = load_sae(trained)
    wrong = SAE(sae.W_enc.detach(), sae.b_enc.detach(), sae.W_dec.detach(), sae.b_dec.detach(),
                hook_name="blocks.0.hook_nothing")
    with pytest.raises(ValueError, match=r"unknown hook name 'blocks.0.hook_nothing'"):
        with tiny_model.saes(wrong):
            pass
    narrow = SAE(sae.W_enc.detach()[:32], sae.b_enc.detach(), sae.W_dec.detach()[:, :32], sae.b_dec.detach()[:32],
                 hook_name=HOOK)
    with pytest.raises(ValueError, match=r"^SAE at blocks.1.hook_resid_post has d_in 32 but the activation there has "
                                         r"width 64$"):
        tiny_model.run_with_saes(PROMPTS[0], saes=narrow)
    cfg = json.loads((trained / "cfg.json").read_text())
    cfg["normalize_activations"] = "expected_average_only_in"
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "sae_weights.safetensors").write_bytes((trained / "sae_weights.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"normalize_activations 'expected_average_only_in' needs the dataset statistics"):
        load_sae(tmp_path)
