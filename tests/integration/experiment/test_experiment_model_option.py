"""``spiritlens experiment --model DIR --speech-tokenizer DIR``: the Known pipeline on a model folder of another
family (tiny random SpeechGPT checkpoints in SpeechGPT's layout), end to end in a real process; and the
option's bad uses, each one line and exit status 2 before any work."""

from __future__ import annotations

import json

import pytest

from helpers import FIXTURES, brute_force_433, run_cli

from spiritlens.cli import main
from spiritlens.synthetic.tiny_speechgpt import write_tiny_speechgpt


# SpeechGPT's chat template around a question, as transformers 4.33.1's fixture recorded it (not spiritlens')
_CASE = next(c for c in json.loads((FIXTURES / "speechgpt" / "reference.json").read_text())["cases"] if c["template"])
HEAD, TAIL = _CASE["prompt"].split(_CASE["text"])


@pytest.fixture(scope="module")
def speechgpt(tmp_path_factory):
    return write_tiny_speechgpt(tmp_path_factory.mktemp("speechgpt"))


BAD = [
    (["--model", "{model}", "--checkpoints", "{tmp}"], "--model names the model folder itself; do not combine it with "
                                                       "--checkpoints"),
    (["--model", "{model}", "--random-weights"], "--model names the model folder itself; do not combine it with "
                                                 "--random-weights"),
    (["--model", "{model}", "--variant", "spirit-lm-expressive-7b"], "--model names the model folder itself; do not "
                                                                     "combine it with --variant"),
    (["--speech-tokenizer", "{speech}"], "--speech-tokenizer goes with --model (a SpiritLM checkpoints tree keeps its own)"),
    (["--model", "{tmp}/none"], "--model '{tmp}/none': no such directory"),
    (["--model", "{model}", "--speech-tokenizer", "{tmp}/none"], "--speech-tokenizer '{tmp}/none': no such directory"),
    (["--model", "{model}"], "--aligner is needed for S->T with --model"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_use_of_model_is_one_line_and_exit_2(speechgpt, argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SPIRITLM_CHECKPOINTS_DIR", raising=False)
    model_dir, speech_dir = speechgpt
    values = {"{model}": str(model_dir), "{speech}": str(speech_dir), "{tmp}": str(tmp_path)}

    def fill(text):
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    out = tmp_path / "run"
    assert main(["experiment", "--out", str(out), "--quiet", *map(fill, argv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spiritlens experiment: error: " + fill(message)), err
    assert not out.exists()


def test_the_known_pipeline_runs_on_speechgpt(speechgpt, known_path, tmp_path):
    model_dir, speech_dir = speechgpt
    out = tmp_path / "run"
    done = run_cli("experiment", "--out", out, "--model", model_dir, "--speech-tokenizer", speech_dir, "--known",
                   known_path, "--prompts", "1", "--kinds", "hidden", "--samples", "2", "--keep-all", "--asr", "none",
                   "--aligner", "pocketsphinx", "--dtype", "float32", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    prep = json.loads((out / "prepare.json").read_text())
    assert prep["family"] == "speechgpt" and prep["model_dir"] == str(model_dir)
    assert prep["speech_tokenizer"] == str(speech_dir) and prep["tokenization"]["declared_in"] == ["added_tokens.json"]
    report = (out / "report.md").read_text()
    assert report.startswith("# spiritlens: factual recall in SpeechGPT") and "SpeechGPT model folder" in report
    (known_id,) = prep["kept"]["t2t"]
    record = prep["records"][str(known_id)]
    t2t = json.loads((out / "results" / "t2t" / f"{known_id}_hidden.json").read_text())
    assert t2t["input_ids"] == brute_force_433(model_dir, HEAD + record["prompt"] + TAIL)  # cli_infer.py's string
    s2t = json.loads((out / "results" / "s2t" / f"{known_id}_hidden.json").read_text())
    assert 2024 in s2t["input_ids"] and 2025 in s2t["input_ids"]  # <sosp> … <eosp>: the spoken prompt's units
    b, e = s2t["subject_range"]
    assert all(1024 <= i < 2024 for i in s2t["input_ids"][b:e])  # the aligned subject is speech units
    summary = json.loads((out / "summary.json").read_text())
    assert summary["traced"] == 2 and summary["failed"] == [] and summary["skipped"] == []
    assert summary["crossmodal"]["failed"] == [] and [c["fact"] for c in summary["crossmodal"]["computed"]] == [known_id]
