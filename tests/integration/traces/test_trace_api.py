"""Tracing API: noise rules, sigma, results on disk, the CLI, and every bad input."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO_ROOT, assert_drawn_png
import torch

from spiritlens import TraceResult, trace
from spiritlens.traces import embedding_std, layer_window, parse_noise, subject_sigma

PROMPT = "The Space Needle is located in the city of"


@pytest.mark.parametrize("text, kind, factor", [
    (0.13, "absolute", 0.13), ("0.13", "absolute", 0.13), (3, "absolute", 3.0),
    ("3s", "sigma", 3.0), ("s3", "sigma", 3.0), ("s", "sigma", 1.0), ("2.5s", "sigma", 2.5),
    ("3v", "embedding_std", 3.0), ("u0.1", "uniform", 0.1),
])
def test_parse_noise(text, kind, factor):
    spec = parse_noise(text)
    assert (spec.kind, spec.factor) == (kind, factor)


@pytest.mark.parametrize("bad", [-0.1, "-3s", "3x", "", True, float("nan")])
def test_parse_noise_rejects(bad):
    with pytest.raises(ValueError, match="noise"):
        parse_noise(bad)


def test_layer_window_is_truncated_not_shifted():
    assert list(layer_window(0, 10, 32)) == [0, 1, 2, 3, 4]
    assert list(layer_window(15, 10, 32)) == list(range(10, 20))
    assert list(layer_window(31, 10, 32)) == list(range(26, 32))
    assert list(layer_window(5, 3, 32)) == [4, 5, 6]
    assert list(layer_window(2, 1, 4)) == [2]


def test_sigma_is_romes_std_over_subject_embeddings(tiny_model, known_path, tmp_path):
    subjects = [record["subject"] for record in json.loads(known_path.read_text())]
    assert len(subjects) == 1209
    sigma = subject_sigma(tiny_model, subjects, cache_dir=tmp_path)
    with torch.no_grad():
        rows = torch.cat([tiny_model.hf_model.get_input_embeddings().weight[
            tiny_model.tokenizer.encode(s, add_special_tokens=False)] for s in subjects])
    assert sigma == pytest.approx(float(rows.std()), rel=1e-6)
    assert rows.shape[0] > 1209  # multi-token subjects, no BOS rows
    assert bos_free(tiny_model, subjects[:20])
    cached = list(tmp_path.glob("sigma_*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["subjects"] == 1209
    # 3s then means 3 * sigma
    result = trace(tiny_model, PROMPT, "Space Needle", samples=2, noise="3s", sigma=sigma)
    assert result.noise == pytest.approx(3 * sigma) and result.sigma == sigma and result.noise_rule == "3s"
    speech = embedding_std(tiny_model, "speech")
    weight = tiny_model.hf_model.get_input_embeddings().weight[list(tiny_model.vocab.hubert_ids)].detach()
    assert speech == pytest.approx(float(weight.std()), rel=1e-6)


def bos_free(model, subjects):
    return all(model.vocab.bos_id not in model.tokenizer.encode(s, add_special_tokens=False) for s in subjects)


def test_result_round_trip_and_contract_fields(tiny_model, tmp_path):
    result = trace(tiny_model, PROMPT, "Space Needle", kind="mlp", samples=3, noise=1.0, window=3,
                   attribute="Seattle")
    path = result.save(tmp_path / "r.json")
    data = json.loads(path.read_text())
    for key in ("input_ids", "tokens", "subject_range", "answer_id", "answer", "high_score", "low_score",
                "kind", "window", "noise", "samples", "seed", "scores", "correct_prediction"):
        assert key in data, key
    assert data["subject_range"] == list(tiny_model.encode(PROMPT)[1].find_text("Space Needle"))
    assert data["tokens"][data["subject_range"][0]] == " Space"
    assert data["kind"] == "mlp" and data["window"] == 3
    assert data["correct_prediction"] is False
    assert np.array_equal(np.load(tmp_path / "r.npz")["scores"], result.scores)
    loaded = TraceResult.load(path)
    assert np.array_equal(loaded.scores, result.scores) and loaded.answer == result.answer
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(subject="Eiffel Tower"), "subject 'Eiffel Tower' does not occur"),
    (dict(subject=""), "subject is empty"),
    (dict(subject="Space", samples=0), "samples must be an integer >= 1"),
    (dict(subject="Space", noise=-1.0), "noise must be a non-negative number"),
    (dict(subject="Space", window=0), "window must be an integer >= 1"),
    (dict(subject="Space", kind="resid"), "unknown kind 'resid'"),
    (dict(subject="Space", target="   "), "target '   ' tokenises to nothing"),
    (dict(subject="Space", noise="3s"), "noise '3s' needs sigma"),
    (dict(subject_range=(0, 2)), r"subject range \[0, 2\) is not inside"),
    (dict(subject_range=(3, 40)), r"subject range \[3, 40\) is not inside"),
    (dict(subject="Space", row_mode="groups"), "needs a prompt with position groups"),
])
def test_bad_trace_inputs(tiny_model, kwargs, message):
    kwargs = {"noise": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        trace(tiny_model, PROMPT, **kwargs)


def test_prompt_longer_than_the_context(tiny_model, monkeypatch):
    monkeypatch.setattr(tiny_model.cfg, "n_ctx", 6)
    with pytest.raises(ValueError, match="more than the model's context of 6"):
        trace(tiny_model, PROMPT, "Space Needle", noise=1.0)


def test_cli_trace_writes_contract_json_and_png(tiny_base_dir, known_path, tmp_path):
    out = tmp_path / "space.json"
    command = [sys.executable, "-m", "spiritlens", "trace", "--model", str(tiny_base_dir), "--prompt", PROMPT,
               "--subject", "Space Needle", "--kind", "attn", "--samples", "3", "--noise", "0.8", "--seed", "2",
               "--window", "3", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["kind"] == "attn" and data["samples"] == 3 and data["seed"] == 2 and data["noise"] == 0.8
    # <s> ▁ [Text] T he ▁Space ▁Needle ▁is ▁located ▁in ▁the ▁city ▁of (SpiritLM's tokenisation)
    assert len(data["scores"]) == len(data["tokens"]) == len(data["input_ids"]) == 13
    assert all(len(row) == 4 for row in data["scores"])
    assert_drawn_png(out.with_suffix(".png"))
    bad = subprocess.run(command[:-2] + ["--json", str(tmp_path / "x.json"), "--subject", "Eiffel"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("spiritlens trace: error: subject 'Eiffel' does not occur")
    assert not (tmp_path / "x.json").exists()
    with_known = subprocess.run(command[:-2] + ["--json", str(tmp_path / "k.json"), "--noise", "3s", "--known",
                                                 str(known_path)], capture_output=True, text=True, timeout=300)
    assert with_known.returncode == 0, with_known.stderr
    recorded = json.loads((tmp_path / "k.json").read_text())
    assert recorded["noise_rule"] == "3s" and recorded["sigma_modality"] == "text"
    assert recorded["noise"] == pytest.approx(3 * recorded["sigma"])
    assert f"sigma {recorded['sigma']:.5g} (subjects of " in with_known.stdout  # where sigma came from, said
    assert f"wrote {tmp_path / 'k.json'} (with its arrays, {tmp_path / 'k.npz'})" in with_known.stdout
    assert "layer/s" in with_known.stderr  # progress bars by default
    quiet = subprocess.run(command[:-2] + ["--json", str(tmp_path / "q.json"), "--quiet"], capture_output=True,
                           text=True, timeout=300)
    assert quiet.returncode == 0 and "layer/s" not in quiet.stderr and "it/s" not in quiet.stderr, quiet.stderr


def test_cli_known_lookup_targets_and_errors(tiny_base_dir, tmp_path, monkeypatch, capsys):
    """In-process CLI runs: Known found by the experiment's rule, target options, one-line errors."""
    from spiritlens.cli import main

    if not (REPO_ROOT.parent / "shared" / "data" / "known_1000.json").is_file():
        pytest.skip("the lookup rule under test finds Known in ../shared/data beside the checkout; it is absent")
    base = ["trace", "--model", str(tiny_base_dir), "--prompt", PROMPT, "--subject", "Space Needle", "--samples",
            "2", "--window", "3", "--noise", "3s"]
    monkeypatch.delenv("SPIRITLENS_KNOWN_PATH", raising=False)
    out = tmp_path / "l.json"
    assert main(base + ["--json", str(out), "--target", "Mountain View", "--target-rule", "first_token"]) == 0
    printed = capsys.readouterr().out
    found = json.loads(out.read_text())
    assert found["sigma_source"].endswith("known_1000.json") and found["sigma_modality"] == "text"
    assert found["answer_rule"] == "target_first_token" and found["target_tokens"] == ["▁Mountain", "▁View"]
    assert "(target_first_token)" in printed and "tokenizer: markers and units are" in printed
    assert found["tokenization"]["markers"] == "sentencepiece" and found["tokenization"]["tokenization"] == "spiritlm"
    whole = tmp_path / "w.json"
    assert main(base + ["--json", str(whole), "--target", " Mountain View", "--target-rule", "sequence"]) == 0
    printed = capsys.readouterr().out
    recorded = json.loads(whole.read_text())
    assert recorded["answer_rule"] == "target_sequence" and recorded["target"] == " Mountain View"
    assert recorded["target_tokens"] == ["▁Mountain", "▁View"] and recorded["target_ids"] == found["target_ids"]
    assert recorded["answer"] == "Mountain View" and "'Mountain View' (target_sequence)" in printed
    assert len(recorded["tokens"]) == len(found["tokens"]) == len(recorded["scores"])  # the prompt's rows
    assert recorded["high_score"] < found["high_score"]  # both pieces' probability, below the first's
    monkeypatch.setenv("SPIRITLENS_KNOWN_PATH", str(tmp_path / "missing.json"))
    assert main(base + ["--json", str(tmp_path / "y.json")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the weight-loading progress bar
    assert error.startswith("spiritlens trace: error: --noise 3s needs sigma: pass --sigma, or --known")
    assert "Known was not found: Known dataset not found:" in error
    for extra, message in ((["--target", "Mountain View"], "is 2 tokens ['▁Mountain', '▁View'] after the prompt"),
                           (["--target", "x", "--target-id", "5"], "give --target or --target-id, not both")):
        assert main(base + ["--sigma", "0.1", "--json", str(tmp_path / "z.json")] + extra) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("spiritlens trace: error:") and message in error
    assert not (tmp_path / "y.json").exists() and not (tmp_path / "z.json").exists()
    import torch

    if not torch.cuda.is_available():  # a CUDA device on a machine without one: one line, before loading
        assert main(base + ["--sigma", "0.1", "--device", "cuda", "--json", str(tmp_path / "c.json")]) == 2
        assert capsys.readouterr().err.strip() == "spiritlens trace: error: device 'cuda': CUDA is not available here"
    assert main(base + ["--sigma", "0.1", "--device", "gpu0", "--json", str(tmp_path / "c.json")]) == 2
    assert capsys.readouterr().err.strip().startswith("spiritlens trace: error: device 'gpu0': ")


def test_cli_version_and_help_show_defaults(capsys):
    from spiritlens import __version__
    from spiritlens.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"spiritlens {__version__}"
    with pytest.raises(SystemExit):
        main(["trace", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 3s)", "(default: auto)", "(default: ROME's 10 of 32 layers scaled to the model's depth",
                    "(default: hidden)", "(default: 1)",
                    "(default: spiritlm)", "(default: $SPIRITLENS_KNOWN_PATH, the cache ~/.cache/spiritlens, "
                    "../shared/data next to a source checkout, or a download)"):
        assert default in text, default
    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--variant VARIANT (default: spirit-lm-base-7b)" in text and "(default: auto)" in text
    from spiritlens.experiment import ExperimentConfig
    from spiritlens.traces.tracer import trace_kinds

    assert ExperimentConfig(out="x").row_mode == "auto"  # one row-mode default: API, CLI, experiment
    assert inspect.signature(trace_kinds).parameters["row_mode"].default == "auto"


def test_default_window_is_romes_10_of_32_layers_scaled_to_the_depth(tiny_model):
    from spiritlens.traces import default_window

    L = tiny_model.cfg.n_layers
    result = trace(tiny_model, PROMPT, "Space Needle", kind="mlp", samples=2, noise=1.0)
    assert result.window == default_window(L) == max(1, int(10 * L / 32 + 0.5))
    assert default_window(32) == 10  # SpiritLM itself: ROME's and the paper's window
    given = trace(tiny_model, PROMPT, "Space Needle", kind="mlp", samples=2, noise=1.0, window=3)
    assert given.window == 3 and not np.allclose(given.scores, result.scores)


def test_sigma_cache_file_is_written_even_when_the_value_is_in_memory(tiny_model, tmp_path):
    subjects = ["Space Needle", "Eiffel Tower", "Big Ben"]
    first = subject_sigma(tiny_model, subjects)  # computed, held in memory only
    again = subject_sigma(tiny_model, subjects, cache_dir=tmp_path)
    cached = list(tmp_path.glob("sigma_*.json"))
    assert again == first and len(cached) == 1
    record = json.loads(cached[0].read_text())
    assert record["sigma"] == first and record["subjects"] == 3 and record["tokens"] >= 6
