"""``spiritlens experiment --expressive --random-weights`` end to end on the tiny checkpoints: stream-aware traces
and prosody-control records for every kept S->T prompt and control, the report's prosody section with its
figures drawn, and a rerun that reuses every verified file."""

from __future__ import annotations

import json
import re

import pytest

from helpers import assert_drawn_png, run_cli
from spiritlens.units.controls import CONTROLS


@pytest.fixture(scope="module")
def run(known_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("prosody") / "run"
    args = ("experiment", "--out", out, "--expressive", "--random-weights", "--known", known_path, "--modalities",
            "s2t", "--kinds", "hidden", "--samples", "2", "--prompts", "2", "--asr", "none", "--no-crossmodal",
            "--sample-figures", "0", "--quiet")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    return out, args, first


def test_every_prompt_and_control_is_traced_by_stream(run):
    out, _, first = run
    summary = json.loads((out / "summary.json").read_text())
    prep = json.loads((out / "prepare.json").read_text())
    assert prep["model_dir"].endswith("spirit-lm-expressive-7b")
    kept = prep["kept"]["s2t"]
    assert len(kept) == 2
    expressive = summary["expressive"]
    assert expressive["computed"] == 2 * len(CONTROLS) and not expressive["failed"] and not expressive["skipped"]
    assert "expressive (prosody controls): 2 S→T prompts x 6 controls, 12 computed" in first.stdout
    for kid in kept:
        plain = json.loads((out / "results" / "s2t" / f"{kid}_hidden.json").read_text())
        for control in CONTROLS:
            record = json.loads((out / "expressive" / "controls" / control / f"{kid}.json").read_text())
            result = json.loads((out / "expressive" / "results" / control / f"{kid}_hidden.json").read_text())
            assert result["row_mode"] == "streams" and result["prosody_control"]["control"] == control
            assert result["noise_streams"] == ["hubert", "pitch", "style"]
            assert {s for s in result["row_streams"] if s} <= {"hubert", "pitch", "style"}
            assert record["answer_id"] == plain["answer_id"] == result["answer_id"]  # the judged answer throughout
            assert abs(record["p_answer"] - result["high_score"]) <= 1e-12
            pitch = [t for t in result["tokens"] if t.startswith("[Pi")]
            if control == "original":  # the original prompt is the plain S->T trace's prompt
                assert result["input_ids"] == plain["input_ids"]
                assert abs(result["high_score"] - plain["high_score"]) <= 1e-6
            if control == "flat_pitch":
                assert len(pitch) == 1
            if control.startswith("other"):
                assert record["donor_known_id"] == next(k for k in kept if k != kid)
            hubert = [t for t in result["tokens"] if t.startswith("[Hu")]
            assert hubert == [t for t in plain["tokens"] if t.startswith("[Hu")]


def test_report_section_and_figures(run):
    out, _, _ = run
    report = (out / "report.md").read_text()
    assert "## Does prosody carry the fact? Pitch and style tokens of SpiritLM Expressive" in report
    section = report.split("## Does prosody carry the fact?")[1].split("\n## ")[0]
    assert "**Findings (computed from the numbers).** These numbers come from tiny random-weight" in section
    assert "Noising one stream's subject tokens alone lowers p(answer) by" in section
    for label in ("pitch flattened", "pitch shuffled", "pitch of another prompt", "style set to one code",
                  "style of another prompt"):
        assert f"| {label} | 2 |" in section
    figures = re.findall(r"!\[[^\]]*\]\((expressive/[^)]+\.png)\)", section)
    assert sorted(figures) == ["expressive/aie_grid_log.png", "expressive/aie_streams_hidden.png",
                               "expressive/controls.png"]
    for name in figures:
        assert_drawn_png(out / name)
    aie = json.loads((out / "expressive" / "aie_original.json").read_text())
    assert set(aie) == {"hidden"} and "last_subject/pitch" in aie["hidden"]["effect"]


def test_rerun_reuses_every_verified_file(run):
    out, args, _ = run
    kid = json.loads((out / "prepare.json").read_text())["kept"]["s2t"][0]
    record = out / "expressive" / "controls" / "flat_pitch" / f"{kid}.json"
    data = json.loads(record.read_text())
    data["p_answer"] = 0.5  # edited: fails its checksum, so it is computed again; the rest is reused
    record.write_text(json.dumps(data))
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 computed, 11 reused" in again.stdout, again.stdout
    summary = json.loads((out / "summary.json").read_text())["expressive"]
    assert list(summary["recomputed"]) == ["content does not match its checksum (edited or damaged after it was "
                                           "written)"]
    assert json.loads(record.read_text())["p_answer"] != 0.5
