#!/usr/bin/env python
"""Reference SAEs from SAELens' own code: ``tests/fixtures/sae/``.

Run by hand (not by CI), from the repository root, with the project's environment::

    PYTHONPATH=src .venv/bin/python scripts/make_sae_fixtures.py [--venv6 DIR] [--venv5 DIR]

SAELens needs TransformerLens < 4, so it cannot live beside spiritlens; this script
1. writes the tiny SpiritLM checkpoint (``spiritlens.synthetic.tiny.make_tiny_checkpoints``, seed 0),
   runs the prompt ``PROMPT`` through it and keeps the activations at the hook points the SAEs
   sit at (``inputs.safetensors``: ``[1, pos, d]``, ``[1, pos, n_heads, d_head]`` for ``hook_z``);
2. creates (once) two virtual environments outside the repository, each with the project's torch
   and one SAELens: ``python -m venv DIR`` then ``pip install torch==<the project's torch version>
   sae-lens==6.54.12`` (default ``/tmp/spiritlens-saelens6``) and ``... sae-lens==5.11.0 "pyarrow<18"``
   (``/tmp/spiritlens-saelens5``; sae-lens 5 pins numpy < 2, with which pyarrow >= 18 does not import).
   pip resolves the rest (transformer-lens 3.x / 2.x, transformers). torch must resolve to a CPU
   build, or pip downloads CUDA's: pip takes the ``+cpu`` wheel where its configuration offers one
   (the fixtures were made where a ``find-links`` folder held ``torch-2.13.0+cpu``; elsewhere create
   the venv by hand first, with ``--extra-index-url https://download.pytorch.org/whl/cpu``);
3. runs there, per case, SAELens' own classes: builds the SAE (``StandardSAE``, ``TopKTrainingSAE``,
   SAELens 5's ``SAE(SAEConfig(...))``, ...), fills its parameters with seeded random values,
   saves it with SAELens' own ``save_model`` / ``save_inference_model`` (plus, for the dataset
   normalisations, ``ActivationScaler.save``, as SAELens' trainer writes it beside a checkpoint),
   reads the folder back with ``SAE.load_from_disk`` (for ``expected_average_only_in`` and
   ``covariance_whitening`` it then folds the stored statistics in with SAELens'
   ``fold_activation_norm_scaling_factor`` / ``fold_activation_whitening``, as its trainer does at the
   end of training), and runs ``sae.run_with_cache(x)`` on the hook's activations: the hook values
   ``hook_sae_input``, ``hook_sae_acts_pre``, ``hook_sae_acts_post`` (the features),
   ``hook_sae_recons`` and ``hook_sae_output`` (the reconstruction, reshaped back for ``hook_z``) go to
   ``reference/<case>.safetensors``; a case SAELens refuses to load records its error instead;
4. reads SAELens 5's folders with SAELens 6 too and records how far its features and output are
   from SAELens 5's (``read_by_sae_lens_6``: 0 except for ``tanh-relu``, which SAELens 6 runs as ReLU);
5. writes ``manifest.json``: the prompt, the versions, what each case is, and the SHA-256 of every
   fixture file (the tests check them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "sae"
PROMPT = "The Space Needle is located in the city of"
SAELENS = {"6": "sae-lens==6.54.12", "5": "sae-lens==5.11.0"}
EXTRA_REQUIREMENTS = {"6": [], "5": ["pyarrow<18"]}
HOOKS = ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out", "blocks.1.mlp.hook_post", "blocks.0.attn.hook_z"]
RESID, MLP_OUT, MLP_POST, HOOK_Z = HOOKS

# name -> what SAELens builds and how it saves it. Keys: version, cls, hook, save, and options.
CASES = {
    # SAELens 6
    "v6_standard": dict(version="6", cls="StandardSAE", hook=RESID),
    "v6_standard_no_b_dec_in": dict(version="6", cls="StandardSAE", hook=RESID, apply_b_dec_to_input=False),
    "v6_standard_training": dict(version="6", cls="StandardTrainingSAE", hook=RESID),
    "v6_standard_bf16": dict(version="6", cls="StandardSAE", hook=RESID, dtype="bfloat16"),
    "v6_standard_float64": dict(version="6", cls="StandardSAE", hook=RESID, dtype="float64"),
    "v6_jumprelu": dict(version="6", cls="JumpReLUSAE", hook=MLP_OUT),
    "v6_jumprelu_training_bf16": dict(version="6", cls="JumpReLUTrainingSAE", hook=MLP_OUT, dtype="bfloat16"),
    "v6_jumprelu_mlp_post": dict(version="6", cls="JumpReLUSAE", hook=MLP_POST),
    "v6_batchtopk_inference": dict(version="6", cls="BatchTopKTrainingSAE", hook=RESID, k=6,
                                   save="save_inference_model"),
    "v6_batchtopk_training": dict(version="6", cls="BatchTopKTrainingSAE", hook=RESID, k=6),
    "v6_topk": dict(version="6", cls="TopKSAE", hook=RESID, k=6),
    "v6_topk_rescale_training": dict(version="6", cls="TopKTrainingSAE", hook=RESID, k=6),
    "v6_topk_rescale_inference": dict(version="6", cls="TopKTrainingSAE", hook=RESID, k=6,
                                      save="save_inference_model"),
    "v6_topk_no_rescale_training": dict(version="6", cls="TopKTrainingSAE", hook=RESID, k=6,
                                        rescale_acts_by_decoder_norm=False),
    "v6_gated": dict(version="6", cls="GatedSAE", hook=RESID),
    "v6_gated_no_b_dec_in": dict(version="6", cls="GatedSAE", hook=MLP_OUT, apply_b_dec_to_input=False),
    "v6_constant_norm_rescale": dict(version="6", cls="StandardSAE", hook=RESID,
                                     normalize_activations="constant_norm_rescale"),
    "v6_layer_norm": dict(version="6", cls="TopKSAE", hook=RESID, k=6, normalize_activations="layer_norm"),
    "v6_expected_average": dict(version="6", cls="StandardTrainingSAE", hook=RESID,
                                normalize_activations="expected_average_only_in"),
    "v6_whitening_topk_rescale": dict(version="6", cls="TopKTrainingSAE", hook=RESID, k=6,
                                      normalize_activations="covariance_whitening"),
    "v6_whitening_no_b_dec_in": dict(version="6", cls="StandardTrainingSAE", hook=MLP_OUT,
                                     apply_b_dec_to_input=False, normalize_activations="covariance_whitening"),
    "v6_whitening_gated_no_b_dec_in": dict(version="6", cls="GatedTrainingSAE", hook=RESID,
                                           apply_b_dec_to_input=False,
                                           normalize_activations="covariance_whitening"),
    "v6_hook_z": dict(version="6", cls="StandardSAE", hook=HOOK_Z, reshape_activations="hook_z"),
    "v6_hook_z_topk_rescale": dict(version="6", cls="TopKTrainingSAE", hook=HOOK_Z, k=5,
                                   reshape_activations="hook_z"),
    # SAELens 5
    "v5_standard": dict(version="5", cls="SAE", hook=RESID, architecture="standard"),
    "v5_standard_no_b_dec_in": dict(version="5", cls="SAE", hook=RESID, architecture="standard",
                                    apply_b_dec_to_input=False),
    "v5_tanh_relu": dict(version="5", cls="SAE", hook=RESID, architecture="standard", activation_fn="tanh-relu"),
    "v5_jumprelu": dict(version="5", cls="SAE", hook=MLP_OUT, architecture="jumprelu"),
    "v5_jumprelu_training": dict(version="5", cls="TrainingSAE", hook=MLP_OUT, architecture="jumprelu"),
    "v5_topk": dict(version="5", cls="SAE", hook=RESID, architecture="topk", activation_fn="topk", k=6),
    "v5_standard_topk": dict(version="5", cls="SAE", hook=RESID, architecture="standard", activation_fn="topk",
                             k=6),
    "v5_gated": dict(version="5", cls="SAE", hook=RESID, architecture="gated"),
    "v5_gated_tanh_relu": dict(version="5", cls="SAE", hook=MLP_OUT, architecture="gated",
                               activation_fn="tanh-relu"),
    "v5_hook_z": dict(version="5", cls="SAE", hook=HOOK_Z, architecture="standard"),
    "v5_layer_norm": dict(version="5", cls="SAE", hook=RESID, architecture="jumprelu",
                          normalize_activations="layer_norm"),
    "v5_constant_norm_rescale": dict(version="5", cls="SAE", hook=MLP_OUT, architecture="standard",
                                     normalize_activations="constant_norm_rescale"),
    "v5_bf16": dict(version="5", cls="SAE", hook=RESID, architecture="topk", activation_fn="topk", k=6,
                    dtype="bfloat16"),
    "v5_expected_average": dict(version="5", cls="SAE", hook=RESID, architecture="standard",
                                normalize_activations="expected_average_only_in"),
}
D_SAE = 32

REFERENCE = r'''
import json, math, sys, traceback
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

request = json.loads(Path(sys.argv[1]).read_text())
out_dir = Path(request["out"])
inputs = load_file(request["inputs"])
version = request["version"]
import sae_lens

results = {"sae_lens": sae_lens.__version__, "torch": torch.__version__, "cases": {}}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def random_weights(sae, case, x, seed):
    """Seeded random values for every parameter (SAELens' own initialisation leaves biases at 0)."""
    g = torch.Generator().manual_seed(seed)
    flat = x.reshape(-1, case["d_in"]).double()
    scale = float(flat.std())
    d_in, d_sae = case["d_in"], case["d_sae"]
    values = {
        "W_enc": torch.randn(d_in, d_sae, generator=g, dtype=torch.float64) / (scale * math.sqrt(d_in)),
        "b_enc": 0.3 * torch.randn(d_sae, generator=g, dtype=torch.float64),
        "W_dec": torch.randn(d_sae, d_in, generator=g, dtype=torch.float64) * scale / math.sqrt(d_sae)
                 * (0.2 + 2.8 * torch.rand(d_sae, 1, generator=g, dtype=torch.float64)),  # uneven decoder norms
        "b_dec": 0.2 * scale * torch.randn(d_in, generator=g, dtype=torch.float64),
        "threshold": -0.6 + 1.4 * torch.rand(d_sae, generator=g, dtype=torch.float64),  # some below 0
        "b_gate": 0.5 * torch.randn(d_sae, generator=g, dtype=torch.float64),
        "b_mag": 0.3 * torch.randn(d_sae, generator=g, dtype=torch.float64),
        "r_mag": 0.3 * torch.randn(d_sae, generator=g, dtype=torch.float64),
    }
    if case.get("normalize_activations", "none") != "none":  # these SAEs see unit-scale inputs
        values["W_enc"] *= scale
        values["W_dec"] /= scale
        values["b_dec"] /= scale
    if case["cls"] == "TrainingSAE":  # SAELens 5 trains log(threshold): positive thresholds only
        values["log_threshold"] = torch.log(0.05 + 0.5 * torch.rand(d_sae, generator=g, dtype=torch.float64))
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(values[name].to(param.dtype))
        if case["cls"] == "BatchTopKTrainingSAE":
            sae.topk_threshold = torch.tensor(0.4, dtype=torch.double)


def build_6(case):
    from sae_lens import saes
    from sae_lens.saes.sae import SAEMetadata

    cls = getattr(saes, case["cls"])
    config_cls = getattr(saes, case["cls"] + "Config")
    options = {k: case[k] for k in ("apply_b_dec_to_input", "normalize_activations", "reshape_activations", "k",
                                    "rescale_acts_by_decoder_norm") if k in case}
    cfg = config_cls(d_in=case["d_in"], d_sae=case["d_sae"], dtype=case.get("dtype", "float32"), device="cpu",
                     metadata=SAEMetadata(hook_name=case["hook"], model_name="tiny-spiritlm"), **options)
    return cls(cfg)


def build_5(case):
    from sae_lens import SAE, SAEConfig
    from sae_lens.training.training_sae import TrainingSAE, TrainingSAEConfig

    fields = dict(architecture=case["architecture"], d_in=case["d_in"], d_sae=case["d_sae"],
                  activation_fn_str=case.get("activation_fn", "relu"),
                  activation_fn_kwargs={"k": case["k"]} if "k" in case else {},
                  apply_b_dec_to_input=case.get("apply_b_dec_to_input", True), finetuning_scaling_factor=False,
                  context_size=16, model_name="tiny-spiritlm", hook_name=case["hook"],
                  hook_layer=int(case["hook"].split(".")[1]), hook_head_index=None, prepend_bos=True,
                  dataset_path="none", dataset_trust_remote_code=False,
                  normalize_activations=case.get("normalize_activations", "none"),
                  dtype=case.get("dtype", "float32"), device="cpu", sae_lens_training_version=sae_lens.__version__)
    if case["cls"] == "TrainingSAE":
        training = dict(l1_coefficient=1.0, lp_norm=1.0, use_ghost_grads=False, normalize_sae_decoder=False,
                        noise_scale=0.0, decoder_orthogonal_init=False, mse_loss_normalization=None,
                        jumprelu_init_threshold=0.001, jumprelu_bandwidth=0.001, decoder_heuristic_init=False,
                        decoder_heuristic_init_norm=0.1, init_encoder_as_decoder_transpose=False,
                        scale_sparsity_penalty_by_decoder_norm=False)
        return TrainingSAE(TrainingSAEConfig(**fields, **training))
    return SAE(SAEConfig(**fields))


def write_statistics(case, folder, x, seed):
    """What SAELens' trainer writes beside a checkpoint: activation_scaler.json (+ the whitening)."""
    from sae_lens.training.activation_scaler import ActivationScaler

    scaler = ActivationScaler()
    flat = x.reshape(-1, case["d_in"]).float()
    if case["normalize_activations"] == "expected_average_only_in":
        scaler.estimate_scaling_factor(case["d_in"], iter([flat] * 2), n_batches_for_norm_estimate=2)
    else:
        g = torch.Generator().manual_seed(seed + 1)
        mixing = torch.eye(case["d_in"]) + 0.3 * torch.randn(case["d_in"], case["d_in"], generator=g)
        rows = torch.randint(flat.shape[0], (512,), generator=g)  # the activations, jittered
        batch = flat[rows] + 0.5 * flat.std() * torch.randn(512, case["d_in"], generator=g) @ mixing
        scaler.estimate_whitening(case["d_in"], iter([batch] * 2), n_batches_for_norm_estimate=2)
    scaler.save(str(folder / "activation_scaler.json"))
    return scaler


for index, (name, case) in enumerate(request["cases"].items()):
    folder = out_dir / name
    x = inputs[case["hook"]]
    seed = 1000 + index
    record = {}
    try:
        sae = build_6(case) if version == "6" else build_5(case)
        random_weights(sae, case, x, seed)
        getattr(sae, case.get("save", "save_model"))(str(folder))
        scaler = None
        if version == "6" and case.get("normalize_activations") in ("expected_average_only_in",
                                                                     "covariance_whitening"):
            scaler = write_statistics(case, folder, x, seed)
        record["class"] = type(sae).__name__
    except Exception:  # building or saving failed: a bug in this script
        traceback.print_exc()
        raise
    from sae_lens import SAE

    try:
        loaded = SAE.load_from_disk(str(folder))
    except Exception as error:  # SAELens refuses this folder: the case records why
        record["error"] = f"{type(error).__name__}: {' '.join(str(error).split())}"
        results["cases"][name] = record
        continue
    if scaler is not None and scaler.scaling_factor is not None:
        loaded.fold_activation_norm_scaling_factor(scaler.scaling_factor)
    if scaler is not None and scaler.whitening is not None:
        w = scaler.whitening
        loaded.fold_activation_whitening(mean=w.mean, whitening_matrix=w.matrix, unwhitening_matrix=w.inverse_matrix)
    with torch.no_grad():
        output, cache = loaded.run_with_cache(x)
    reference = {"x": x.clone()}
    for hook in ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_output"):
        reference[hook] = cache[hook].clone()
    assert torch.equal(reference["hook_sae_output"], output)
    save_file(reference, str(Path(request["reference"]) / f"{name}.safetensors"))
    record["loaded_class"] = type(loaded).__name__
    record["features_nonzero"] = int((reference["hook_sae_acts_post"] != 0).sum())
    record["features"] = int(reference["hook_sae_acts_post"].numel())
    results["cases"][name] = record

Path(request["result"]).write_text(json.dumps(results, indent=1))
'''


# SAELens 6 reading SAELens 5's folders: how far its values are from SAELens 5's own.
CROSS_READ = r'''
import json, sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from sae_lens import SAE

request = json.loads(Path(sys.argv[1]).read_text())
out = {}
for name in request["cases"]:
    ref = load_file(str(Path(request["reference"]) / f"{name}.safetensors"))
    try:
        with torch.no_grad():
            output, cache = SAE.load_from_disk(str(Path(request["out"]) / name)).run_with_cache(ref["x"])
    except Exception as error:
        out[name] = {"error": f"{type(error).__name__}: {' '.join(str(error).split())}"}
        continue
    out[name] = {"features": float((cache["hook_sae_acts_post"].double() - ref["hook_sae_acts_post"].double()).abs().max()),
                 "output": float((output.double() - ref["hook_sae_output"].double()).abs().max())}
Path(request["result"]).write_text(json.dumps(out))
'''


def activations(work: Path) -> dict:
    """The tiny model's activations at ``HOOKS`` for ``PROMPT`` (``[1, pos, ...]`` float32)."""
    import torch

    from spiritlens.model.hooked import HookedSpiritLM
    from spiritlens.synthetic.tiny import make_tiny_checkpoints

    root = make_tiny_checkpoints(work / "checkpoints", seed=0)
    model = HookedSpiritLM.from_pretrained(root / "spiritlm_model" / "spirit-lm-base-7b", dtype="float32")
    with torch.no_grad():
        _, cache = model.run_with_cache(PROMPT, names_filter=lambda name: name in HOOKS)
    return {hook: cache[hook].contiguous() for hook in HOOKS}


def reference_python(venv: Path, version: str) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        import torch

        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        torch_spec = "torch==" + torch.__version__.split("+")[0]
        subprocess.run([str(python), "-m", "pip", "install", "-q", torch_spec, SAELENS[version],
                        *EXTRA_REQUIREMENTS[version]], check=True)
    return python


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv6", type=Path, default=Path(tempfile.gettempdir()) / "spiritlens-saelens6")
    parser.add_argument("--venv5", type=Path, default=Path(tempfile.gettempdir()) / "spiritlens-saelens5")
    args = parser.parse_args()
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        acts = activations(work)
        if FIXTURES.exists():
            shutil.rmtree(FIXTURES)
        (FIXTURES / "reference").mkdir(parents=True)
        save_file(acts, str(FIXTURES / "inputs.safetensors"))
        widths = {hook: acts[hook].shape[-1] * (acts[hook].shape[-2] if hook.endswith("hook_z") else 1)
                  for hook in HOOKS}
        cases = {name: {**case, "d_in": widths[case["hook"]], "d_sae": D_SAE} for name, case in CASES.items()}
        results, versions = {}, {}
        for version, venv in (("6", args.venv6), ("5", args.venv5)):
            request = {"out": str(FIXTURES), "reference": str(FIXTURES / "reference"),
                       "inputs": str(FIXTURES / "inputs.safetensors"), "version": version,
                       "result": str(work / f"result{version}.json"),
                       "cases": {n: c for n, c in cases.items() if c["version"] == version}}
            (work / "request.json").write_text(json.dumps(request))
            (work / "reference.py").write_text(REFERENCE)
            subprocess.run([str(reference_python(venv, version)), str(work / "reference.py"),
                            str(work / "request.json")], check=True, cwd=work)
            result = json.loads((work / f"result{version}.json").read_text())
            versions[f"sae_lens_{version}"] = result["sae_lens"]
            versions["torch"] = result["torch"]
            results.update(result["cases"])
        # SAELens 6 on SAELens 5's folders: max |Δ| of its features and output from SAELens 5's
        read = [n for n, c in cases.items() if c["version"] == "5" and "error" not in results[n]
                and (FIXTURES / "reference" / f"{n}.safetensors").exists()]
        request = {"out": str(FIXTURES), "reference": str(FIXTURES / "reference"), "cases": read,
                   "result": str(work / "cross.json")}
        (work / "cross_request.json").write_text(json.dumps(request))
        (work / "cross_read.py").write_text(CROSS_READ)
        subprocess.run([str(reference_python(args.venv6, "6")), str(work / "cross_read.py"),
                        str(work / "cross_request.json")], check=True, cwd=work)
        for name, record in json.loads((work / "cross.json").read_text()).items():
            results[name]["read_by_sae_lens_6"] = record
    manifest = {
        "made_by": "scripts/make_sae_fixtures.py",
        "reference_call": "SAE.load_from_disk(folder) [+ fold_activation_norm_scaling_factor / "
                          "fold_activation_whitening with activation_scaler.json], then sae.run_with_cache(x)",
        "prompt": PROMPT,
        "tiny_checkpoint_seed": 0,
        "versions": versions,
        "cases": {name: {**{k: v for k, v in cases[name].items()}, **results[name]} for name in CASES},
        "files": {str(p.relative_to(FIXTURES)): sha256(p) for p in sorted(FIXTURES.rglob("*"))
                  if p.is_file() and p.name != "manifest.json"},
    }
    (FIXTURES / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    size = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    print(f"wrote {len(manifest['files'])} files ({size / 1e6:.2f} MB) to {FIXTURES.relative_to(REPO)}")
    for name, record in manifest["cases"].items():
        print(f"  {name}: {record.get('error') or record['loaded_class']}")


if __name__ == "__main__":
    main()
