"""HookedSpiritLM against transformers.LlamaForCausalLM on the same tiny checkpoint."""

from __future__ import annotations

import pytest
import torch

from spiritlens.model import hook_names


def _sequences(model) -> dict[str, torch.Tensor]:
    """Text, speech-unit and interleaved token sequences, built with the real tokenizer."""
    vocab = model.vocab
    generator = torch.Generator().manual_seed(0)
    units = torch.randint(0, 500, (24,), generator=generator).tolist()
    speech_only = [vocab.bos_id, vocab.speech_marker_id, *(vocab.hubert_ids[u] for u in units), vocab.text_marker_id]
    text = model.to_tokens("The Space Needle is located in the city of")[0].tolist()
    interleaved = (text[:6] + [vocab.speech_marker_id] + [vocab.hubert_ids[u] for u in units[:9]]
                   + [vocab.text_marker_id] + text[6:] + [vocab.speech_marker_id]
                   + [vocab.hubert_ids[u] for u in units[9:]])
    return {name: torch.tensor([ids]) for name, ids in
            {"text": text, "speech": speech_only, "interleaved": interleaved}.items()}


@pytest.mark.parametrize("kind", ["text", "speech", "interleaved"])
def test_logits_match_llama_for_causal_lm(tiny_model, hf_tiny_model, kind):
    tokens = _sequences(tiny_model)[kind]
    with torch.no_grad():
        ours = tiny_model(tokens)
        theirs = hf_tiny_model(tokens).logits
    assert ours.shape == theirs.shape == (1, tokens.shape[1], tiny_model.cfg.d_vocab)
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-5, f"max |logits diff| = {diff:.3g} on {kind}"
    assert ours.std().item() > 1e-3  # a real forward, not zeros


def test_resid_post_equals_each_hf_decoder_layer_output(tiny_model, hf_tiny_model):
    tokens = _sequences(tiny_model)["interleaved"]
    n_layers = tiny_model.cfg.n_layers
    layer_outputs = {}

    def keep(index):
        def hook(module, args, output):
            layer_outputs[index] = (output[0] if isinstance(output, tuple) else output).detach()
        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(hf_tiny_model.model.layers)]
    try:
        with torch.no_grad():
            hf_out = hf_tiny_model(tokens, output_hidden_states=True)
            _, cache = tiny_model.run_with_cache(tokens)
    finally:
        for handle in handles:
            handle.remove()
    assert len(layer_outputs) == n_layers == 4
    for layer in range(n_layers):
        ours = cache[hook_names.resid_post(layer)]
        diff = (ours - layer_outputs[layer]).abs().max().item()
        assert diff <= 1e-5, f"layer {layer}: max |resid_post - HF layer output| = {diff:.3g}"
        if layer < n_layers - 1:
            assert (ours - hf_out.hidden_states[layer + 1]).abs().max().item() <= 1e-5
    # HF's last hidden_states entry has the final norm applied; resid_post does not.
    last = (cache[hook_names.resid_post(n_layers - 1)] - hf_out.hidden_states[n_layers]).abs().max().item()
    assert last > 1e-3
    # hook_embed is the embedding lookup, equal to resid_pre of block 0 for Llama.
    embed = hf_tiny_model.model.embed_tokens(tokens)
    assert torch.equal(cache[hook_names.EMBED], embed)
    assert torch.equal(cache[hook_names.resid_pre(0)], embed)


def test_mlp_and_attn_out_sum_to_the_residual_update(tiny_model):
    tokens = _sequences(tiny_model)["text"]
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(tokens)
    for layer in range(tiny_model.cfg.n_layers):
        update = cache[hook_names.resid_pre(layer)] + cache[hook_names.attn_out(layer)] + cache[hook_names.mlp_out(layer)]
        assert (update - cache[hook_names.resid_post(layer)]).abs().max().item() <= 1e-5


def test_bfloat16_load_matches_hf_bfloat16(tiny_base_dir):
    from transformers import LlamaForCausalLM

    from spiritlens import HookedSpiritLM

    model = HookedSpiritLM.from_pretrained(tiny_base_dir, dtype="bf16")
    assert model.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in model.hf_model.parameters())
    hf = LlamaForCausalLM.from_pretrained(tiny_base_dir, attn_implementation="eager", dtype=torch.bfloat16).eval()
    tokens = model.to_tokens("The capital of Italy is")
    with torch.no_grad():
        diff = (model(tokens).float() - hf(tokens).logits.float()).abs().max().item()
    assert diff == 0.0, f"bf16 logits differ by {diff}"


def test_run_with_hooks_edits_and_unknown_hook_names_raise(tiny_model):
    tokens = tiny_model.to_tokens("The capital of Italy is")
    with torch.no_grad():
        clean = tiny_model(tokens)

        def zero_last(act, hook):
            act[:, -1] = 0.0
            return act

        patched = tiny_model.run_with_hooks(tokens, fwd_hooks=[(hook_names.resid_post(3), zero_last)])
    assert not torch.allclose(clean[0, -1], patched[0, -1])
    assert torch.allclose(clean[0, :-1], patched[0, :-1])
    with pytest.raises(ValueError, match=r"unknown hook name 'blocks\.0\.hook_resid_psot'"):
        tiny_model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_psot", zero_last)])
