"""Hostile and contradicting SAE folders: each is one ValueError line naming the file and the field
or tensor (issues 27 and 28). The folders start as SAELens-written fixtures (tests/fixtures/sae/)
and are changed one field or tensor at a time; a change SAELens reads the same way must load and
compute the fixture's values."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import FIXTURES
from spiritlens.model.sae import load_sae

SAE_FIXTURES = FIXTURES / "sae"


def copy(name, tmp_path):
    folder = tmp_path / name
    shutil.copytree(SAE_FIXTURES / name, folder)
    return folder


def edit_cfg(folder, **changes):
    cfg = json.loads((folder / "cfg.json").read_text())
    for key, value in changes.items():
        if key.startswith("metadata."):
            cfg["metadata"][key.split(".", 1)[1]] = value
        elif value is ...:
            cfg.pop(key)
        else:
            cfg[key] = value
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def edit_weights(folder, change):
    weights = load_file(str(folder / "sae_weights.safetensors"))
    change(weights)
    save_file(weights, str(folder / "sae_weights.safetensors"))
    return folder


def refused(folder, pattern):
    with pytest.raises(ValueError, match=pattern) as error:
        load_sae(folder)
    message = str(error.value)
    assert "\n" not in message and str(folder) in message
    return message


def outputs(folder):
    x = load_file(str(SAE_FIXTURES / "reference" / f"{folder.name}.safetensors"))["x"]
    with torch.no_grad():
        return load_sae(folder).run(x)


CFG_REFUSALS = [
    ("v6_standard", {"d_in": 32}, r"cfg\.json \(standard, d_in 32, d_sae 32\): 3 mis-shaped \(W_enc \[64, 32\] in the "
                                  r"file, \[32, 32\] by the config"),
    ("v5_standard", {"d_sae": 48}, r"sae_weights\.safetensors: tensors do not match .*d_sae 48\): 3 mis-shaped"),
    ("v6_standard", {"d_in": "64"}, r"cfg\.json: d_in must be a positive integer, got '64'"),
    ("v6_standard", {"d_sae": ...}, r"cfg\.json: d_sae must be a positive integer, got None"),
    ("v6_standard", {"dtype": "int64"}, r"cfg\.json: dtype 'int64' is not supported \(supported: float32, float64"),
    ("v6_standard", {"architecture": "abstopk"}, r"cfg\.json: architecture 'abstopk' is not supported"),
    ("v6_standard", {"architecture": ...}, r"cfg\.json: architecture None is not supported"),
    ("v6_standard", {"architecture": "jumprelu_transcoder"}, r"architecture 'jumprelu_transcoder' is not supported"),
    ("v6_standard", {"metadata.hook_name_out": "blocks.1.hook_mlp_out"}, r"hook_name_out is set: a transcoder"),
    ("v6_standard", {"normalize_activations": "constant_scalar_rescale"},
     r"cfg\.json: normalize_activations 'constant_scalar_rescale' is not supported \(supported: none, null, "),
    ("v6_standard", {"normalize_activations": True},
     r"normalize_activations 'expected_average_only_in' needs the dataset statistics"),
    ("v6_standard", {"reshape_activations": "hook_z"},
     r"cfg\.json: reshape_activations 'hook_z' at hook_name 'blocks\.1\.hook_resid_post', which is not a hook_z"),
    ("v6_standard", {"reshape_activations": "heads"}, r"cfg\.json: reshape_activations 'heads' is not supported"),
    ("v6_standard", {"metadata.hook_head_index": 2}, r"cfg\.json: hook_head_index 2 is not supported"),
    ("v5_standard", {"hook_head_index": 0}, r"cfg\.json: hook_head_index 0 is not supported"),
    ("v5_standard", {"finetuning_scaling_factor": True}, r"cfg\.json: finetuning_scaling_factor True is not supported"),
    ("v6_standard", {"apply_b_dec_to_input": "yes"}, r"cfg\.json: apply_b_dec_to_input must be true or false, got 'yes'"),
    ("v6_topk", {"k": 33}, r"cfg\.json: k 33 is not an integer in 1\.\.d_sae=32"),
    ("v6_topk", {"k": 2.5}, r"cfg\.json: k 2\.5 is not an integer"),
    ("v6_topk", {"rescale_acts_by_decoder_norm": 1}, r"cfg\.json: rescale_acts_by_decoder_norm 1 is not supported"),
    ("v5_topk", {"activation_fn_str": "relu"},
     r"cfg\.json: architecture 'topk' with activation_fn_str 'relu' contradicts itself"),
    ("v5_standard", {"activation_fn_str": "gelu"}, r"cfg\.json: activation_fn_str 'gelu' is not supported"),
    ("v5_standard_topk", {"activation_fn_kwargs": {}}, r"cfg\.json: k None is not an integer in 1\.\.d_sae=32"),
    ("v6_standard", {"hook_name": "blocks.0.hook_resid_post"},
     r"cfg\.json: hook_name and metadata\.hook_name disagree: \['blocks\.0\.hook_resid_post', 'blocks\.1\.hook_resid_post'\]"),
    ("v6_standard", {"metadata.hook_name": None}, r"cfg\.json: no hook_name"),
    ("v6_standard", {"metadata.sae_lens_version": "six"}, r"cfg\.json: sae_lens_version 'six' is not a version number"),
    ("v5_standard", {"hook_name": "blocks.0.attn.hook_z_extra"},
     r"SAELens 5 and 6 disagree whether to reshape it as hook_z"),
    ("v6_hook_z", {"reshape_activations": "none"}, None),  # loads: a flat SAE at hook_z (refused at the splice)
]


@pytest.mark.parametrize("name, changes, pattern", CFG_REFUSALS,
                         ids=[f"{n}-{','.join(c)}" for n, c, _ in CFG_REFUSALS])
def test_cfg_refusals(name, changes, pattern, tmp_path):
    folder = edit_cfg(copy(name, tmp_path), **changes)
    if pattern is None:
        assert load_sae(folder).reshape_activations == "none"
    else:
        refused(folder, pattern)


def test_a_cfg_that_is_not_an_object_or_not_json(tmp_path):
    folder = copy("v6_standard", tmp_path)
    (folder / "cfg.json").write_text("[1, 2]")
    refused(folder, r"cfg\.json must hold a JSON object, got list")
    (folder / "cfg.json").write_text("{nope")
    refused(folder, r"SAE config .*cfg\.json is not valid JSON")


@pytest.mark.parametrize("name, change, pattern", [
    ("v6_standard", lambda w: w.update(W_enc=w["W_enc"].round().to(torch.int64)),
     r"sae_weights\.safetensors: weight W_enc is I64, expected floating point"),
    ("v6_jumprelu", lambda w: w.update(threshold=(w["threshold"] > 0)),
     r"sae_weights\.safetensors: weight threshold is BOOL, expected floating point"),
    ("v6_standard", lambda w: w["W_dec"].view(-1)[7:9].fill_(float("nan")),
     r"sae_weights\.safetensors: weight W_dec holds 2 NaN/inf value\(s\) of 2048"),
    ("v6_jumprelu", lambda w: w["threshold"].view(-1)[0:1].fill_(float("-inf")),
     r"sae_weights\.safetensors: weight threshold holds 1 NaN/inf"),
    ("v6_standard_bf16", lambda w: w["b_dec"].view(-1)[3:4].fill_(float("inf")),
     r"sae_weights\.safetensors: weight b_dec holds 1 NaN/inf"),
    ("v6_jumprelu", lambda w: w.pop("threshold"), r"tensors do not match .*\(jumprelu, d_in 64, d_sae 32\): 1 missing "
                                                  r"\(threshold\)"),
    ("v6_jumprelu", lambda w: w.update(log_threshold=w.pop("threshold")), r"1 missing \(threshold\), 1 unexpected "
                                                                           r"\(log_threshold\)"),
    ("v6_gated", lambda w: w.update(b_enc=w["b_gate"].clone()), r"1 unexpected \(b_enc\)"),
    ("v6_standard", lambda w: w.update(b_enc=w["b_enc"][:31]), r"1 mis-shaped \(b_enc \[31\] in the file, \[32\]"),
    ("v5_standard", lambda w: w.update(scaling_factor=torch.full((32,), 2.0)), r"1 unexpected \(scaling_factor\)"),
])
def test_weight_refusals(name, change, pattern, tmp_path):
    refused(edit_weights(copy(name, tmp_path), change), pattern)


def test_a_truncated_weight_file(tmp_path):
    folder = copy("v6_standard", tmp_path)
    data = (folder / "sae_weights.safetensors").read_bytes()
    (folder / "sae_weights.safetensors").write_bytes(data[:100])
    refused(folder, r"sae_weights\.safetensors: not a readable safetensors file")


def test_what_saelens_reads_the_same_way_loads_the_same(tmp_path):
    """normalize_activations null (SAELens' pre-6 default), an all-ones ``scaling_factor`` tensor
    (SAELens drops it), a dtype written as ``torch.float32``, and tensors stored in another float
    dtype than cfg.json's (cast to it, as SAELens does) compute the fixture's values."""
    expected = outputs(copy("v5_standard", tmp_path / "a"))
    for folder in (edit_cfg(copy("v5_standard", tmp_path / "b"), normalize_activations=None),
                   edit_cfg(copy("v5_standard", tmp_path / "c"), dtype="torch.float32"),
                   edit_weights(copy("v5_standard", tmp_path / "d"),
                                lambda w: w.update(scaling_factor=torch.ones(32)))):
        got = outputs(folder)
        assert all(torch.equal(got[k], expected[k]) for k in expected)
    # SAELens 6's JumpReLU training save keeps the threshold in float32 beside bf16 weights
    mixed = load_file(str(SAE_FIXTURES / "v6_jumprelu_training_bf16" / "sae_weights.safetensors"))
    assert mixed["threshold"].dtype == torch.float32 and mixed["W_enc"].dtype == torch.bfloat16
    assert load_sae(SAE_FIXTURES / "v6_jumprelu_training_bf16").threshold.dtype == torch.bfloat16


def test_dataset_statistics_that_are_missing_or_wrong(tmp_path):
    folder = copy("v6_expected_average", tmp_path)
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": None, "has_whitening": False}))
    refused(folder, r"activation_scaler\.json: scaling_factor None \(has_whitening False\) is not the positive number "
                    r"normalize_activations 'expected_average_only_in' in .*cfg\.json needs")
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": -2.0}))
    refused(folder, r"scaling_factor -2\.0")
    (folder / "activation_scaler.json").unlink()
    refused(folder, r"cfg\.json: normalize_activations 'expected_average_only_in' needs the dataset statistics")
    folder = copy("v6_whitening_topk_rescale", tmp_path)
    (folder / "activation_whitening.safetensors").rename(folder / "elsewhere.safetensors")
    refused(folder, r"cfg\.json: normalize_activations 'covariance_whitening' needs .*activation_whitening\.safetensors, "
                    r"not found")
    (folder / "elsewhere.safetensors").rename(folder / "activation_whitening.safetensors")
    edit_weights_path = folder / "activation_whitening.safetensors"
    whitening = load_file(str(edit_weights_path))
    save_file({**whitening, "matrix": whitening["matrix"][:, :32].contiguous()}, str(edit_weights_path))
    refused(folder, r"activation_whitening\.safetensors: tensors do not match d_in 64 in .*: 1 mis-shaped \(matrix")
    save_file({**whitening, "mean": whitening["mean"] * float("nan")}, str(edit_weights_path))
    refused(folder, r"activation_whitening\.safetensors: weight mean holds 64 NaN/inf")
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 3.0, "has_whitening": True}))
    refused(folder, r"activation_scaler\.json: has_whitening True \(scaling_factor 3\.0\) is not what")


def test_building_an_sae_by_hand_checks_the_same_things():
    from spiritlens.model.sae import SAE

    W_enc, b_enc, W_dec, b_dec = torch.zeros(8, 4), torch.zeros(4), torch.zeros(4, 8), torch.zeros(8)
    hook = "blocks.0.hook_resid_post"
    cases = [
        (dict(architecture="topk"), r"^a topk SAE needs k in 1\.\.d_sae=4, got None$"),
        (dict(architecture="topk", k=2, activation_fn="relu"), r"^a topk SAE needs activation_fn 'topk', got 'relu'$"),
        (dict(rescale_acts_by_decoder_norm=True), r"^rescale_acts_by_decoder_norm applies to topk SAEs only"),
        (dict(reshape_activations="hook_z"), r"^reshape_activations 'hook_z' needs a hook_z hook point"),
        (dict(normalize_activations="expected_average_only_in"), r"is not computed at run time"),
        (dict(architecture="jumprelu"), r"^jumprelu SAE parameters \(W_enc is \[8, 4\]\): 1 missing \(threshold\)$"),
        (dict(architecture="gated"), r"^gated SAE parameters .*3 missing \(b_gate, b_mag, r_mag\), 1 unexpected \(b_enc\)"),
        (dict(activation_fn="gelu"), r"^SAE activation_fn 'gelu' is not supported"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            SAE(W_enc, b_enc, W_dec, b_dec, hook_name=hook, **kwargs)
    with pytest.raises(ValueError, match=r"one float dtype .*got \['bfloat16', 'float32'\]"):
        SAE(W_enc.bfloat16(), b_enc, W_dec, b_dec, hook_name=hook)
    sae = SAE(W_enc, b_enc, W_dec, b_dec, hook_name=hook, normalize_activations="layer_norm")
    with pytest.raises(ValueError, match=r"decode needs the input x to undo normalize_activations 'layer_norm'"):
        sae.decode(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"^SAE at blocks\.0\.hook_resid_post has d_in 8 but the activation there "
                                         r"has width 6$"):
        sae.encode(torch.zeros(2, 6))
