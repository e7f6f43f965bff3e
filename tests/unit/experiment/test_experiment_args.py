"""Every bad argument of ``spiritlens experiment`` fails at once: one line naming it, exit status 2,
nothing synthesised or written; ``spiritlens aggregate --out FILE`` likewise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spiritlens.cli import main
from spiritlens.experiment.config import default_window

BAD_ARGUMENTS = [
    (["--samples", "0"], "--samples must be an integer >= 1, got 0"),
    (["--samples", "-3"], "--samples must be an integer >= 1, got -3"),
    (["--kinds", "mlpp"], "--kinds must be a comma-separated list of hidden, mlp, attn, got mlpp (unknown: mlpp)"),
    (["--kinds", "hidden,hidden"], "--kinds lists a value twice: hidden,hidden"),
    (["--window", "0"], "--window must be an integer >= 1, got 0"),
    (["--prompts", "0"], "--prompts must be an integer >= 1, got 0"),
    (["--prompts", "-2"], "--prompts must be an integer >= 1, got -2"),
    (["--subset-seed", "-1"], "--subset-seed must be an integer >= 0, got -1"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--modalities", "t2t,x2t"], "--modalities must be a comma-separated list of t2t, s2t, got t2t,x2t (unknown: x2t)"),
    (["--modalities", ","], "--modalities must be a comma-separated list of t2t, s2t, got (empty)"),
    (["--accept", "exact,maybe"], "--accept must be a comma-separated list of exact, partial, wrong"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1, got 0"),
    (["--max-batch-cells", "0"], "--max-batch-cells must be an integer >= 1, got 0"),
    (["--sample-figures", "-1"], "--sample-figures must be an integer >= 0, got -1"),
    (["--noise", "3q"], "--noise '3q': noise '3q' is not a number"),
    (["--dtype", "int8"], "--dtype: unknown dtype 'int8'"),
    (["--asr", "google"], "--asr must be one of pocketsphinx, whisper, none, got 'google'"),
    (["--tts", "bogus"], "--tts must be one of espeak, flite, melotts, got 'bogus'"),
    (["--tts", "melo"], "--tts must be one of espeak, flite, melotts, got 'melo'"),
    (["--tts", "melotts"], "--tts melotts: not available here; it needs the 'melo' Python package"),
    (["--random-weights", "--toy", "{tmp}"], "--random-weights and --toy exclude each other"),
    (["--random-weights", "--checkpoints", "{tmp}"], "--random-weights replaces real checkpoints"),
    (["--toy", "{tmp}"], "--toy: '{tmp}' is not a toy SpiritLM (no toy_manifest.json"),
    (["--aligner", "{tmp}/no-such-aligner"], "--aligner '{tmp}/no-such-aligner': no such directory"),
    (["--known", "{tmp}/no-such.json"], "--known '{tmp}/no-such.json': no such file"),
    (["--checkpoints", "{tmp}/none"], "--checkpoints '{tmp}/none': no such directory"),
    (["--checkpoints", "{tmp}", "--variant", "spirit-lm-9b"], "--variant 'spirit-lm-9b': no model at"),
    (["--out", "{tmp}/file.txt"], "--out '{tmp}/file.txt' is an existing file, not a folder"),
    (["--backbone", "{tmp}/no-such-llama"], "--backbone '{tmp}/no-such-llama': no such directory (a Hugging Face "
                                            "Llama-2 folder"),
    (["--backbone", "{tmp}"], "--backbone: model directory '{tmp}' has no config.json"),
    (["--variant", "spirit-lm-expressive-7b"], "--variant 'spirit-lm-expressive-7b': the embedded toy is "
                                               "spirit-lm-base-7b; pass --random-weights"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_bad_experiment_argument_is_one_line_and_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SPIRITLM_CHECKPOINTS_DIR", raising=False)
    (tmp_path / "file.txt").write_text("not a folder")
    out = tmp_path / "run"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    full = ["experiment", "--out", str(out), "--quiet", *argv]
    assert main(full) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("spiritlens experiment: error: " + message.replace("{tmp}", str(tmp_path))), err[0]
    assert not out.exists()  # nothing was built, synthesised or written


def test_flite_without_flite_installed_is_named(tmp_path, capsys, monkeypatch):
    import shutil

    from spiritlens.data.tts import flite as tts

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (the setup command installs it)")
    # flite is read through libflite; a machine without it fails to load the library.
    monkeypatch.setattr(tts._FLITE, "LIBRARY", "libflite_not_installed_here.so.1")
    monkeypatch.setattr(tts._FLITE, "lib", None)
    monkeypatch.setattr(tts._FLITE, "voices", {})
    assert main(["experiment", "--out", str(tmp_path / "run"), "--tts", "flite", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("spiritlens experiment: error: --tts flite: not available here; it needs libflite and its "
                   "voices (apt-get install flite)")
    assert not (tmp_path / "run").exists()


def test_device_without_cuda_is_named(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["experiment", "--out", str(tmp_path / "run"), "--device", "cuda:0"]) == 2
    assert capsys.readouterr().err.strip() == "spiritlens experiment: error: --device 'cuda:0': CUDA is not available here"


def test_real_cli_subprocess_bad_argument_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SPIRITLM_CHECKPOINTS_DIR"}
    done = subprocess.run([sys.executable, "-m", "spiritlens", "experiment", "--out", str(tmp_path / "run"),
                           "--kinds", "mlpp", "--samples", "0"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "spiritlens experiment: error: --kinds must be a comma-separated list of hidden, mlp, attn, got mlpp "
        "(unknown: mlpp)"]
    assert done.stdout == "" and not (tmp_path / "run").exists()


def test_aggregate_out_is_an_existing_file(tmp_path):
    target = tmp_path / "aie.json"
    target.write_text("{}")
    done = subprocess.run([sys.executable, "-m", "spiritlens", "aggregate", str(tmp_path), "--out", str(target)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"spiritlens aggregate: error: --out {str(target)!r} is an existing file; give a folder for aie.json and "
        "the figures"]
    assert target.read_text() == "{}"


@pytest.mark.parametrize("layers, window", [(32, 10), (48, 15), (40, 13), (24, 8), (8, 3), (6, 2), (4, 1), (1, 1)])
def test_default_window_scales_romes_10_of_32_layers(layers, window):
    assert default_window(layers) == window
    assert window == max(1, int(10 * layers / 32 + 0.5))  # the rule, written out: round half up


def test_checkpoints_variable_naming_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SPIRITLM_CHECKPOINTS_DIR", str(tmp_path / "gone"))
    assert main(["experiment", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == (f"spiritlens experiment: error: $SPIRITLM_CHECKPOINTS_DIR "
                                               f"{str(tmp_path / 'gone')!r}: no such directory")
    assert not (tmp_path / "run").exists()


def test_embedded_toy_without_espeak_and_no_cached_toy(tmp_path, capsys, monkeypatch, known_path):
    from spiritlens.spoken import espeak

    # espeak-ng is read through libespeak-ng; a machine without it fails to load the library.
    monkeypatch.setattr(espeak, "LIBRARY", "libespeak-ng-not-installed-here.so.1")
    monkeypatch.setattr(espeak, "_ENGINE", espeak._Engine())
    monkeypatch.setenv("SPIRITLENS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SPIRITLM_CHECKPOINTS_DIR", raising=False)
    assert main(["experiment", "--out", str(tmp_path / "run"), "--known", str(known_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "spiritlens experiment: error: the embedded toy SpiritLM is trained on espeak-ng speech, which is not "
        "installed (apt-get install espeak-ng); or pass --toy DIR or --random-weights")
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_a_spiritlm_folder_is_not_a_backbone(tiny_base_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SPIRITLM_CHECKPOINTS_DIR", raising=False)
    out = tmp_path / "run"
    assert main(["experiment", "--out", str(out), "--quiet", "--random-weights", "--backbone", str(tiny_base_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"spiritlens experiment: error: --backbone {str(tiny_base_dir)!r} is a SpiritLM checkpoint, not "
                   "the text-only Llama-2 backbone"]
    assert not out.exists()
