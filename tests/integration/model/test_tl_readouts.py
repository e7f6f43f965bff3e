"""TransformerLens' read-outs (logit lens, direct logit attribution) give the model's true numbers.

The checkpoint is a tiny random SpiritLM whose RMSNorm gains are drawn far from 1 (as in real
Llama-2), written to disk and loaded twice: by HookedSpiritLM and by ``LlamaForCausalLM`` (the
independent reference). The references are computed from LlamaForCausalLM's own modules (forward
hooks on its attention, MLP and norms), in float64, with Llama's formula written out here:
``norm(x) = w * x / sqrt(mean(x^2) + eps)``, ``logits = norm(x) @ lm_head.weight.T``.
"""

from __future__ import annotations

import pytest
import torch

from helpers import write_gained_tiny_model

PROMPT = "The Space Needle is located in the city of"


@pytest.fixture(scope="module")
def gained_dir(tmp_path_factory):
    return write_gained_tiny_model(tmp_path_factory.mktemp("gained") / "spirit-lm-base-7b")


@pytest.fixture(scope="module")
def model(gained_dir):
    from spiritlens import HookedSpiritLM

    return HookedSpiritLM.from_pretrained(gained_dir)


@pytest.fixture(scope="module")
def reference(gained_dir, model):
    """LlamaForCausalLM's logits, each block's attention and MLP outputs and norm outputs (float64)."""
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(gained_dir, attn_implementation="eager", dtype=torch.float32).eval()
    assert float((hf.model.norm.weight.detach() - 1).abs().max()) > 0.5  # the gains are far from 1
    ids = model.to_tokens(PROMPT)
    seen = {}

    def keep(name):
        def hook(module, args, output):
            seen[name] = (output[0] if isinstance(output, tuple) else output).detach().double()
            if name.endswith("in"):
                seen[name + "put"] = args[0].detach().double()
        return hook

    handles = []
    for l, layer in enumerate(hf.model.layers):
        handles += [layer.self_attn.register_forward_hook(keep(f"attn{l}")),
                    layer.mlp.register_forward_hook(keep(f"mlp{l}")),
                    layer.input_layernorm.register_forward_hook(keep(f"ln1_{l}")),
                    layer.post_attention_layernorm.register_forward_hook(keep(f"ln2_{l}"))]
    handles.append(hf.model.norm.register_forward_hook(keep("final_in")))
    with torch.no_grad():
        logits = hf(ids).logits.double()
    for handle in handles:
        handle.remove()
    return dict(hf=hf, ids=ids, logits=logits, **seen)


def llama_norm(x, weight, eps):
    x = x.double()
    return weight.double() * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def test_model_logits_are_llama_logits(model, reference):
    logits = model(reference["ids"]).double()
    assert float((logits - reference["logits"]).abs().max()) <= 1e-4


def test_final_norm_readouts_equal_the_logits(model, reference):
    logits_ref = reference["logits"][0]
    _, cache = model.run_with_cache(reference["ids"])
    L = model.cfg.n_layers
    W_U = model.W_U.double()
    final = cache[f"blocks.{L - 1}.hook_resid_post"]
    # apply_ln_to_stack on the final residual: the norm with its gain
    lens = cache.apply_ln_to_stack(final[None], layer=-1)[0, 0].double() @ W_U
    assert float((lens - logits_ref).abs().max()) <= 1e-4
    # the logit lens at the last layer (recomputed final norm) is the model's output
    accumulated = cache.accumulated_resid(apply_ln=True)
    assert accumulated.shape[0] == L + 1
    assert float((accumulated[-1, 0].double() @ W_U - logits_ref).abs().max()) <= 1e-4
    # TransformerLens 4's one-call logit lens (last position by default): its last entry is the output
    one_call = cache.logit_lens()
    assert one_call.labels[-1] == "final_post"
    assert float((one_call.readout.values[-1, 0].double() - logits_ref[-1]).abs().max()) <= 1e-4
    # direct logit attribution: the components add up to the logits
    components, labels = cache.decompose_resid(apply_ln=True, return_labels=True)
    assert labels[0] == "embed" and len(labels) == 1 + 2 * L
    total = (components[:, 0].double() @ W_U).sum(0)
    assert float((total - logits_ref).abs().max()) <= 1e-4


def test_logit_lens_at_every_layer_matches_llamas_own_norm(model, reference):
    """Each layer's lens (final norm recomputed on that state) against Llama's norm on HF's states."""
    hf = reference["hf"]
    with torch.no_grad():
        states = hf(reference["ids"], output_hidden_states=True).hidden_states  # [L + 1] (last one normed)
    _, cache = model.run_with_cache(reference["ids"])
    lens = cache.accumulated_resid(apply_ln=True).double() @ model.W_U.double()  # [L + 1, 1, T, V]
    eps = hf.config.rms_norm_eps
    head = hf.lm_head.weight.double()
    for layer in range(model.cfg.n_layers):
        expected = llama_norm(states[layer][0], hf.model.norm.weight, eps) @ head.T
        assert float((lens[layer, 0] - expected).abs().max()) <= 1e-4, layer


def test_logit_attrs_are_each_components_true_share(model, reference):
    """Per component: w * c / rms(final residual) @ W_U[:, answer], from LlamaForCausalLM's module outputs."""
    hf, ids = reference["hf"], reference["ids"]
    L = model.cfg.n_layers
    answer = int(reference["logits"][0, -1].argmax())
    _, cache = model.run_with_cache(ids)
    stack = cache.decompose_resid(apply_ln=False, pos_slice=-1)  # [components, 1, d]: the last position
    attrs = cache.logit_attrs(stack, tokens=answer, pos_slice=-1).double().reshape(-1)
    embed = hf.model.embed_tokens(ids).detach().double()[0, -1]
    pieces = [embed] + [reference[f"{kind}{l}"][0, -1] for l in range(L) for kind in ("attn", "mlp")]
    final = reference["final_input"][0, -1]
    assert float((torch.stack(pieces).sum(0) - final).abs().max()) <= 1e-4
    rms = torch.sqrt(final.pow(2).mean() + hf.config.rms_norm_eps)
    direction = hf.model.norm.weight.double() * hf.lm_head.weight.double()[answer]
    expected = torch.stack([piece @ direction / rms for piece in pieces])
    assert attrs.shape == expected.shape == (1 + 2 * L,)
    assert float((attrs - expected).abs().max()) <= 1e-4
    assert abs(float(attrs.sum()) - float(reference["logits"][0, -1, answer])) <= 1e-4
    # TransformerLens' DLA tool on HookedSpiritLM (it refuses a plain bridge without compatibility mode,
    # whose read-outs would drop the gains): the same true shares
    from transformer_lens.tools.analysis import direct_logit_attribution

    dla = direct_logit_attribution(model, ids, answer_tokens=answer)
    assert float((dla.attribution.double().reshape(-1) - expected).abs().max()) <= 1e-4


def test_block_norm_readouts_equal_llamas_norm_outputs(model, reference):
    """apply_ln_to_stack at a block's ln1/ln2 gives what that norm outputs (the attention's and MLP's input)."""
    _, cache = model.run_with_cache(reference["ids"])
    for layer in range(model.cfg.n_layers):
        ln1 = cache.apply_ln_to_stack(cache.decompose_resid(layer=layer), layer=layer).sum(0)
        ln2 = cache.apply_ln_to_stack(cache.decompose_resid(layer=layer, mlp_input=True), layer=layer,
                                      mlp_input=True).sum(0)
        assert float((ln1.double() - reference[f"ln1_{layer}"]).abs().max()) <= 1e-4, layer
        assert float((ln2.double() - reference[f"ln2_{layer}"]).abs().max()) <= 1e-4, layer


def test_neuron_and_head_decomposition_adds_up_to_the_logit(model, reference):
    answer = int(reference["logits"][0, -1].argmax())
    _, cache = model.run_with_cache(reference["ids"])
    direction = model.W_U[:, answer]
    projected = cache.get_full_resid_decomposition(apply_ln=True, project_output_onto=direction, expand_neurons=True)
    unprojected = cache.get_full_resid_decomposition(apply_ln=True, expand_neurons=False)
    logit = float(reference["logits"][0, -1, answer])
    assert abs(float(projected[:, 0, -1].double().sum()) - logit) <= 1e-3
    assert abs(float((unprojected[:, 0, -1].double() @ direction.double()).sum()) - logit) <= 1e-3


def test_the_bridges_own_cache_is_corrected_too(model, reference):
    logits, cache = model.bridge.run_with_cache(reference["ids"])
    final = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    lens = cache.apply_ln_to_stack(final[None], layer=-1)[0, 0].double() @ model.W_U.double()
    assert float((lens - reference["logits"][0]).abs().max()) <= 1e-4


def test_processed_weights_give_the_same_distribution_and_readouts(gained_dir, reference):
    """process_weights=True (TransformerLens' folding: gains in W_U, centred unembedding): softmax
    equals Llama's, and the same read-outs add up to its own logits."""
    from spiritlens import HookedSpiritLM

    folded = HookedSpiritLM.from_pretrained(gained_dir, process_weights=True)
    logits, cache = folded.run_with_cache(reference["ids"])
    assert float((torch.softmax(logits[0].double(), -1) - torch.softmax(reference["logits"][0], -1)).abs().max()) <= 1e-5
    total = (cache.decompose_resid(apply_ln=True)[:, 0].double() @ folded.W_U.double()).sum(0) + folded.b_U.double()
    assert float((total - logits[0].double()).abs().max()) <= 1e-4
