"""``spiritlens crossmodal`` in a subprocess: one fact, an experiment directory (resumable, moved),
the report section, and bad inputs (one-line errors, exit status 2)."""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from helpers import SPOKEN_PROMPT, assert_drawn_png, run_cli
from spiritlens.align import LowAlignmentConfidence
from spiritlens.crossmodal import CrossModalFact, cross_modal_patching
from spiritlens.experiment.report_crossmodal import report_section

def _run(args, cwd=None):
    return run_cli(*args, cwd=cwd)


def _fact_args(tiny_root, wav, ctc, out, *extra):
    return ["crossmodal", "fact", "--model", str(tiny_root / "spiritlm_model" / "spirit-lm-base-7b"),
            "--speech-tokenizer", str(tiny_root / "speech_tokenizer"), "--prompt", SPOKEN_PROMPT,
            "--subject", "Space Needle", "--audio", str(wav), "--aligner", str(ctc), "--noise", "0.1",
            "--samples", "2", "--out", str(out), *extra]


def _one_line_error(done, text: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("spiritlens crossmodal: error:") and text in last, last


def test_one_fact_writes_every_analysis_and_agrees_with_the_api(tiny_root, tiny_model, spoken_prompt_wav,
                                                                tiny_ctc_dir, tmp_path):
    out = tmp_path / "fact"
    done = _run(_fact_args(tiny_root, spoken_prompt_wav, tiny_ctc_dir, out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Cross-modal patching, text state → noised spoken run" in done.stdout and "Logit lens" in done.stdout
    assert "alignment confidence" in done.stderr  # the random CTC model's low confidence is reported
    for name in ("patching.png", "geometry.png", "logit_lens.png"):
        assert_drawn_png((out / name))
    patching = json.loads((out / "patching.json").read_text())
    assert patching["settings"]["sigma_source"] == {} and patching["settings"]["noise_rule"] == "0.1"
    assert {c["direction"] + "/" + c["mode"] for c in patching["curves"]} == {
        "text_to_speech/last", "text_to_speech/groups", "speech_to_text/last", "speech_to_text/groups"}
    assert json.loads((out / "geometry.json").read_text())["words"] == SPOKEN_PROMPT.split()
    assert json.loads((out / "summary.json").read_text())["facts"] == [patching["name"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowAlignmentConfidence)
        fact = CrossModalFact.from_audio(tiny_model, spoken_prompt_wav, prompt=SPOKEN_PROMPT, subject="Space Needle",
                                         aligner=tiny_ctc_dir)
    api = cross_modal_patching(tiny_model, fact, noise=0.1, samples=2)
    for curve in patching["curves"]:
        expected = api.curve(curve["direction"], curve["mode"])
        assert np.allclose(curve["scores"], expected.scores, atol=1e-7)
        assert np.allclose(curve["self_scores"], expected.self_scores, atol=1e-7)


@pytest.fixture(scope="module")
def experiment_dir(tiny_root, known_path, tmp_path_factory):
    """A small experiment run (in process), written with a relative --out and then moved; aligned
    with pocketsphinx (a backend name in prepare.json, which the move must leave alone)."""
    from spiritlens.experiment import ExperimentConfig, run_experiment

    work = tmp_path_factory.mktemp("experiment")
    config = ExperimentConfig(out=Path("run"), checkpoints=tiny_root, known=known_path, aligner="pocketsphinx",
                              keep_all=True, asr="none", n_prompts=2, kinds=("hidden",), samples=2,
                              crossmodal=False)  # the command below runs them
    here = Path.cwd()
    os.chdir(work)
    try:
        run_experiment(config, progress=False)
    finally:
        os.chdir(here)
    moved = work / "moved"
    shutil.move(str(work / "run"), moved)  # prepare.json still names run/speech/...: read from the new place
    return moved


def _main(args, capsys) -> tuple[int, str, str]:
    """``spiritlens`` in process (the CLI's own entry point and error handling)."""
    from spiritlens.cli import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_experiment_directory_is_analysed_resumed_and_reported(experiment_dir, capsys):
    prep = json.loads((experiment_dir / "prepare.json").read_text())
    facts = [k for k in prep["kept"]["t2t"] if k in prep["kept"]["s2t"]]
    assert len(facts) == 2 and not Path(prep["audio"][str(facts[0])]).is_absolute()
    done = _run(["crossmodal", "experiment", str(experiment_dir), "--quiet"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 facts: 2 computed, 0 reused, 0 failed" in done.stdout
    out = experiment_dir / "crossmodal"
    status = json.loads((out / "status.json").read_text())
    assert status["facts"] == facts and len(status["computed"]) == 2 and not status["failed"]
    results = sorted(out.glob("facts/*/*.json"))
    assert len(results) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["facts"] == [str(k) for k in facts] and summary["patching"]["text_to_speech/last"]["cross"]["n"] == 2
    sigma = prep["sigma"]
    first = json.loads((out / "facts" / str(facts[0]) / "patching.json").read_text())
    assert first["settings"]["sigma"] == sigma and first["settings"]["samples"] == 2
    assert first["receivers"]["speech"]["noise"] == pytest.approx(3 * sigma["speech"])
    assert first["receivers"]["text"]["noise"] == pytest.approx(3 * sigma["text"])

    # a rerun reuses everything; a corrupted and a missing result are recomputed, nothing else
    times = {p: p.stat().st_mtime_ns for p in results}
    code, stdout, _ = _main(["crossmodal", "experiment", str(experiment_dir), "--quiet"], capsys)
    assert code == 0 and "0 computed, 2 reused" in stdout
    assert all(p.stat().st_mtime_ns == t for p, t in times.items())
    victim, missing = out / "facts" / str(facts[0]) / "geometry.json", out / "facts" / str(facts[1]) / "logit_lens.json"
    victim.write_text("{ truncated")
    missing.unlink()
    code, _, stderr = _main(["crossmodal", "experiment", str(experiment_dir), "--quiet"], capsys)
    assert code == 0, stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert status["computed"] == [{"fact": facts[0], "analyses": ["geometry"]},
                                  {"fact": facts[1], "analyses": ["logit_lens"]}]
    assert all(p.stat().st_mtime_ns == t for p, t in times.items() if p not in (victim, missing))
    assert json.loads(victim.read_text())["analysis"] == "geometry"

    lines = report_section(experiment_dir)
    text = "\n".join(lines)
    assert lines[0].startswith("## Beyond the paper") and "Findings (computed from the numbers)" in text
    assert "| layer | T→S last: cross |" in text and "| layer | cosine |" in text
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert {"crossmodal/patching.png", "crossmodal/geometry.png", "crossmodal/logit_lens_mrr.png",
            f"crossmodal/logit_lens_{facts[0]}.png", "crossmodal/summary.json"} <= set(links)
    for link in links:
        assert (experiment_dir / link).is_file(), link

    # changed patching settings recompute the patching results only
    code, _, stderr = _main(["crossmodal", "experiment", str(experiment_dir), "--quiet", "--modes", "last"], capsys)
    assert code == 0, stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert [c["analyses"] for c in status["computed"]] == [["patching"], ["patching"]]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["patching"]) == {"text_to_speech/last", "speech_to_text/last"}

    # one analysis asked for: nothing to compute, and the summary still covers every finished analysis
    code, stdout, stderr = _main(["crossmodal", "experiment", str(experiment_dir), "--quiet", "--analyses", "geometry",
                                  "--modes", "last"], capsys)
    assert code == 0 and "0 computed, 2 reused" in stdout, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patching"] and summary["geometry"] and summary["logit_lens"]


def test_an_experiment_passes_its_loaded_model(experiment_dir, tiny_model):
    from spiritlens.experiment import ExperimentConfig
    from spiritlens.experiment.crossmodal import run_experiment_dir
    from spiritlens.experiment.prepared import PreparedRun
    from spiritlens.experiment.runner import Experiment

    prep = PreparedRun.load(experiment_dir)
    experiment = Experiment(ExperimentConfig(out=experiment_dir), progress=False)
    models = experiment.models(prep)
    models._model = tiny_model  # what the experiment's stages hold after loading it
    first = prep.kept["t2t"][0]
    (experiment_dir / "crossmodal" / "facts" / str(first) / "geometry.json").unlink(missing_ok=True)
    status = run_experiment_dir(experiment_dir, analyses=["geometry"], progress=False, models=models)
    assert {"fact": first, "analyses": ["geometry"]} in status["computed"]
    assert models._model is tiny_model and models._aligner is not None  # used, not rebuilt


def test_report_section_without_a_run_says_how_to_run_it(tmp_path):
    lines = report_section(tmp_path)
    assert "not run: `spiritlens crossmodal experiment" in "\n".join(lines)


def _in_process_error(result, text: str) -> None:
    code, _, stderr = result
    assert code == 2 and "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("spiritlens crossmodal: error:") and text in last, last


def test_a_bad_input_is_one_line_and_exit_2_in_a_subprocess(tmp_path):
    done = _run(["crossmodal", "experiment", str(tmp_path / "nowhere")])
    _one_line_error(done, "no prepare.json")
    assert len(done.stderr.strip().splitlines()) == 1


def test_bad_experiment_inputs(experiment_dir, tmp_path, capsys):
    _in_process_error(_main(["crossmodal", "experiment", str(experiment_dir), "--modes", "lastt"], capsys),
                      "--modes 'lastt' is not a comma-separated list of last, groups")
    _in_process_error(_main(["crossmodal", "experiment", str(experiment_dir), "--analyses", ""], capsys), "--analyses")
    _in_process_error(_main(["crossmodal", "experiment", str(experiment_dir), "--max-batch-rows", "0"], capsys),
                      "--max-batch-rows must be >= 1")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    prep = json.loads((experiment_dir / "prepare.json").read_text())
    prep["kept"]["s2t"] = []
    (lonely / "prepare.json").write_text(json.dumps(prep))
    _in_process_error(_main(["crossmodal", "experiment", str(lonely)], capsys), "nothing to compare")
    (lonely / "prepare.json").write_text(json.dumps({"config": {}}))
    _in_process_error(_main(["crossmodal", "experiment", str(lonely)], capsys), "not a prepare.json")


@pytest.mark.parametrize("change, message", [
    ({"--subject": "Eiffel Tower"}, "subject 'Eiffel Tower' does not occur"),
    ({"--noise": "3s", "--known": "/nonexistent/known_1000.json"}, "needs sigma: pass --sigma, or --known"),
    ({"--transcript": SPOKEN_PROMPT.replace("city", "town")}, "tokenise differently"),
    ({"--samples": "0"}, "--samples must be >= 1"),
    ({"--speech-sigma": "loud", "--sigma": "0.5", "--noise": "3s"}, "--speech-sigma 'loud' must be a number"),
    ({"--directions": "up"}, "--directions 'up' is not a comma-separated list"),
])
def test_bad_fact_inputs(tiny_root, spoken_prompt_wav, tiny_ctc_dir, tmp_path, capsys, change, message):
    args = _fact_args(tiny_root, spoken_prompt_wav, tiny_ctc_dir, tmp_path / "out")
    for option, value in change.items():
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowAlignmentConfidence)
        _in_process_error(_main(args, capsys), message)
    assert not (tmp_path / "out").exists()


def test_a_run_written_with_out_dot_keeps_backend_names_and_rebases_paths(tmp_path):
    """prepare.json of ``spiritlens experiment --out .``: its relative paths are read from the run's
    folder, but the aligner backend name 'pocketsphinx' is not a path and stays as it is."""
    from spiritlens.experiment.prepared import PreparedRun

    prep = {"config": {"out": "."}, "model_dir": "checkpoints/model", "speech_tokenizer": None,
            "aligner": "pocketsphinx", "audio": {"1": "speech/1_prompt.wav"}, "kept": {}, "records": {},
            "sigma": {}}
    (tmp_path / "prepare.json").write_text(json.dumps(prep))
    read = PreparedRun.load(tmp_path)
    assert read.aligner == "pocketsphinx"
    assert read.model_dir == str(tmp_path / "checkpoints" / "model")
    assert read.audio == {"1": str(tmp_path / "speech" / "1_prompt.wav")}


def test_fact_sigma_finds_known_by_the_trace_rule(tiny_model, known_path, monkeypatch):
    """`crossmodal fact --noise 3s` without --sigma or --known finds Known as `spiritlens trace` does."""
    import argparse

    from spiritlens.cli.crossmodal import _sigmas
    from spiritlens.data import load_known
    from spiritlens.traces import subject_sigma

    monkeypatch.setenv("SPIRITLENS_KNOWN_PATH", str(known_path))
    args = argparse.Namespace(sigma=None, known=None, noise="3s", speech_sigma="text")
    sigma, sources = _sigmas(tiny_model, args, needs_sigma=True)
    expected = subject_sigma(tiny_model, [r.subject for r in load_known(known_path)], modality="text")
    assert sigma == {"text": expected, "speech": expected}
    assert sources["text"] == f"subjects of {known_path}"
