"""SAEs written by SAELens 5 and 6 compute here as in SAELens (fixtures from scripts/make_sae_fixtures.py).

Every folder under ``tests/fixtures/sae/`` was built with SAELens' own classes (random weights),
saved with its own ``save_model`` / ``save_inference_model`` (and, for the dataset normalisations,
``ActivationScaler.save``), read back by its ``SAE.load_from_disk`` (plus its statistics folds) and
run on the tiny model's activations with ``sae.run_with_cache``: ``reference/<case>.safetensors``
holds the input and SAELens' hook values. Here ``load_sae`` reads the same folder without sae_lens
and must give the same values: ``|Δ| ≤ 1e-5 · max(1, max|SAELens' value|)`` in float32 / float64
(the activations reach ~300), a bfloat16 step in bfloat16 (equal to the bit on the machine that
made the fixtures). Two folders SAELens itself cannot or does not compute right are refused.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from helpers import FIXTURES
from spiritlens.model.sae import load_sae

SAE_FIXTURES = FIXTURES / "sae"
MANIFEST = json.loads((SAE_FIXTURES / "manifest.json").read_text())
CASES = MANIFEST["cases"]
REFUSED = {  # case -> the one line load_sae gives (SAELens: KeyError; silently no scaling)
    "v6_batchtopk_training": r"cfg\.json: architecture 'batchtopk' is not supported \(supported: standard, gated, "
                             r"jumprelu, topk\) \(a BatchTopK SAE is read once saved with SAELens' save_inference_model",
    "v5_expected_average": r"cfg\.json: normalize_activations 'expected_average_only_in' needs the dataset statistics "
                           r"SAELens 6 writes beside a training checkpoint \(activation_scaler\.json\), and there are none",
}
PARITY = sorted(name for name in CASES if name not in REFUSED)
HOOK_VALUES = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_output")


def reference(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(SAE_FIXTURES / "reference" / f"{name}.safetensors"))


def assert_close(got: torch.Tensor, expected: torch.Tensor, what: str) -> float:
    """Max |got - expected| within the tolerance of the module docstring; returns it."""
    assert got.dtype == expected.dtype and got.shape == expected.shape, (what, got.dtype, got.shape, expected.shape)
    scale = max(1.0, float(expected.double().abs().max()))
    step = 2 ** -7 if expected.dtype == torch.bfloat16 else 1e-5
    diff = float((got.double() - expected.double()).abs().max())
    assert diff <= step * scale, f"{what}: max |Δ| {diff:.3g} > {step * scale:.3g}"
    return diff


def test_fixture_files_are_the_recorded_ones():
    files = {str(p.relative_to(SAE_FIXTURES)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(SAE_FIXTURES.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    assert files == MANIFEST["files"]
    assert sum((SAE_FIXTURES / f).stat().st_size for f in files) < 2e6


def test_the_cases_cover_what_saelens_5_and_6_write():
    versions = MANIFEST["versions"]
    assert versions["sae_lens_5"].startswith("5.") and versions["sae_lens_6"].startswith("6.")
    cfgs = {name: json.loads((SAE_FIXTURES / name / "cfg.json").read_text()) for name in CASES}
    for version in "56":
        built = {cfgs[n].get("architecture") for n in CASES if CASES[n]["version"] == version}
        assert {"standard", "jumprelu", "topk", "gated"} <= built
        normalisations = {cfgs[n]["normalize_activations"] for n in CASES if CASES[n]["version"] == version}
        assert {"none", "constant_norm_rescale", "layer_norm", "expected_average_only_in"} <= normalisations
        assert any(CASES[n]["hook"].endswith("attn.hook_z") for n in PARITY if CASES[n]["version"] == version)
        assert {cfgs[n]["dtype"] for n in PARITY if CASES[n]["version"] == version} >= {"float32", "bfloat16"}
        assert any(not cfgs[n]["apply_b_dec_to_input"] for n in PARITY if CASES[n]["version"] == version)
    assert {"covariance_whitening", "expected_average_only_in"} <= {cfgs[n]["normalize_activations"] for n in PARITY}
    assert {cfgs[n].get("activation_fn_str") for n in CASES} >= {"relu", "tanh-relu", "topk"}
    assert cfgs["v5_standard_topk"]["architecture"] == "standard"  # SAELens 5 wrote TopK SAEs so too
    assert {CASES[n].get("save", "save_model") for n in PARITY} == {"save_model", "save_inference_model"}
    rescaled = [n for n in PARITY if cfgs[n].get("rescale_acts_by_decoder_norm")]
    assert "v6_topk_rescale_training" in rescaled and "v6_hook_z_topk_rescale" in rescaled
    assert CASES["v6_batchtopk_training"]["error"] == "KeyError: 'batchtopk'"  # SAELens cannot load it either
    assert all("error" not in CASES[n] for n in PARITY)
    # SAELens 6 reads SAELens 5's folders as SAELens 5 computes them, except tanh-relu (run as ReLU)
    cross = {n: CASES[n]["read_by_sae_lens_6"] for n in CASES if CASES[n]["version"] == "5"}
    assert len(cross) == 14
    for name, record in cross.items():
        differs = record["features"] > 1 and record["output"] > 10
        assert differs == (cfgs[name].get("activation_fn_str") == "tanh-relu"), name
        assert differs or record == {"features": 0.0, "output": 0.0}, name


def test_the_fixtures_exercise_what_was_wrong():
    """JumpReLU thresholds below 0 with pre-activations between them and 0 (ReLU first matters);
    decoder-norm rescaling that changes which k features win; tanh-relu saturating below 1."""
    for name in ("v6_jumprelu", "v5_jumprelu"):
        ref = reference(name)
        threshold = load_file(str(SAE_FIXTURES / name / "sae_weights.safetensors"))["threshold"]
        pre = ref["hook_sae_acts_pre"]
        assert bool(((pre > threshold) & (pre < 0)).any()), name
    for name in ("v6_topk_rescale_training", "v6_hook_z_topk_rescale"):
        ref = reference(name)
        k = CASES[name]["k"]
        plain = torch.zeros_like(ref["hook_sae_acts_pre"]).scatter(-1, ref["hook_sae_acts_pre"].topk(k).indices, 1)
        assert not torch.equal(plain.bool(), ref["hook_sae_acts_post"] != 0), name
    assert float(reference("v5_tanh_relu")["hook_sae_acts_post"].max()) < 1


@pytest.mark.parametrize("name", PARITY)
def test_hook_values_equal_saelens(name):
    ref = reference(name)
    sae = load_sae(SAE_FIXTURES / name)
    assert sae.hook_name == CASES[name]["hook"]
    with torch.no_grad():
        got = sae.run(ref["x"])
        for hook in HOOK_VALUES:
            assert_close(got[hook], ref[hook], f"{name} {hook}")
        assert_close(sae.encode(ref["x"]), ref["hook_sae_acts_post"], f"{name} encode")
        assert_close(sae.decode(ref["hook_sae_acts_post"], ref["x"]), ref["hook_sae_output"], f"{name} decode")
        assert torch.equal(sae(ref["x"]), ref["hook_sae_output"].to(ref["x"].dtype))
    acts = ref["hook_sae_acts_post"]
    assert 0 < int((acts != 0).sum()) < acts.numel()


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_saelens_cannot_compute_is_refused_in_one_line(name):
    with pytest.raises(ValueError, match=REFUSED[name]) as error:
        load_sae(SAE_FIXTURES / name)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["v6_topk_rescale_training", "v6_gated_no_b_dec_in", "v6_hook_z",
                                  "v5_tanh_relu", "v5_layer_norm", "v6_whitening_topk_rescale",
                                  "v6_jumprelu_training_bf16", "v5_standard_topk"])
def test_save_writes_what_load_reads_back(name, tmp_path):
    """spiritlens' own save (SAELens' pre-6 layout, statistics folded in) reads back to the same SAE."""
    sae = load_sae(SAE_FIXTURES / name)
    again = load_sae(sae.save(tmp_path / "sae"))
    x = reference(name)["x"]
    with torch.no_grad():
        first, second = sae.run(x), again.run(x)
    for hook in HOOK_VALUES:
        assert torch.equal(first[hook], second[hook]), hook
    assert (again.architecture, again.activation_fn, again.k, again.reshape_activations) == (
        sae.architecture, sae.activation_fn, sae.k, sae.reshape_activations)
