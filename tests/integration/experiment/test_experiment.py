"""The Known experiment end to end: the embedded default, resuming after a kill, torchrun
sharding, and faults that must not stop the run or lose a finished result."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import assert_drawn_png, run_cli
from spiritlens.tokens.llama import SlowLlamaTokenizer
from spiritlens.traces import TraceResult

SPIRITLENS = [sys.executable, "-m", "spiritlens"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "SPIRITLM_CHECKPOINTS_DIR"}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def _run(args, **kwargs):
    return run_cli("experiment", *args, "--quiet", **kwargs)


def _tiny_args(tiny_root, known_path, tiny_ctc_dir, out, *extra):
    return ["--out", str(out), "--checkpoints", str(tiny_root), "--known", str(known_path), "--aligner",
            str(tiny_ctc_dir), "--dtype", "float32", "--keep-all", "--asr", "none", *extra]


def _results(out: Path) -> dict[str, dict]:
    return {str(p.relative_to(out / "results")): json.loads(p.read_text())
            for p in sorted((out / "results").rglob("*.json"))}


def test_random_weight_mode_writes_report_and_figures(known_path, tmp_path):
    out = tmp_path / "demo"
    done = _run(["--out", str(out), "--known", str(known_path), "--prompts", "2", "--kinds", "hidden,mlp",
                 "--samples", "3", "--random-weights"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RANDOM-WEIGHT" in done.stdout and "report:" in done.stdout
    report = (out / "report.md").read_text()
    assert "Random weights" in report and "corpus WER" in report and "Known-s2t" in report
    assert "window 1 (max(1, floor(10 * n_layers / 32 + 1/2))" in report  # 4 layers
    aie = json.loads((out / "aggregate" / "aie.json").read_text())
    assert set(aie) == {"hidden", "mlp"}
    assert aie["hidden"]["count"] == 4  # 2 prompts x (T->T, S->T), every prompt kept
    assert set(aie["hidden"]["aie"]) == {"first_subject", "middle_subject", "last_subject", "first_subsequent",
                                         "further", "last"}
    for name in ("aggregate/aie_grid_log.png", "aggregate/aie_grid_linear.png"):
        assert_drawn_png((out / name))
    figures = {p.name for p in (out / "figures").iterdir()}
    assert any(n.startswith("alignment_") for n in figures) and any(n.startswith("heatmap_s2t_") for n in figures)
    assert any(n.endswith(".html") for n in figures)
    assert len(_results(out)) == 2 * 2 * 3  # T->T, S->T and the tiny backbone's T->T (the baseline row)
    assert sum(name.startswith("backbone_t2t/") for name in _results(out)) == 2 * 2
    # the embedded default aligns with pocketsphinx's real model and records the synthesiser's word times
    prep = json.loads((out / "prepare.json").read_text())
    assert prep["aligner"] == "pocketsphinx" and not (out / "aligner").exists()
    assert sorted(prep["reference_words"]) == sorted(prep["audio"])
    assert all(w["start_s"] < w["end_s"] for words in prep["reference_words"].values() for w in words)
    s2t = [r for name, r in _results(out).items() if name.startswith("s2t/")]
    assert {(r["aligner"], r["alignment_frame_unit"]) for r in s2t} == {("pocketsphinx", "pocketsphinx frame (10 ms)")}
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert len(links) > 10
    for link in links:
        assert (out / link).is_file(), link
    wer = json.loads((out / "wer.json").read_text())
    assert wer["computed"] is True and len(wer["report"]["items"]) == 2
    # Every trace measures the first token of the generation the filter judged (issue 9, section 3).
    prepared = json.loads((out / "prepare.json").read_text())
    tokens = SlowLlamaTokenizer.from_pretrained(out / "checkpoints" / "spiritlm_model" / "spirit-lm-base-7b")
    for modality in ("t2t", "s2t"):
        judged = {e["known_id"]: e["generated"] for e in
                  json.loads((out / "filter" / f"known-{modality}.json").read_text())["entries"]}
        for name, result in _results(out).items():
            if name.startswith(modality):
                known_id = result["known_id"]
                assert result["answer_rule"] == "generated_first_token"
                assert result["answer_id"] == prepared["answers"][modality][str(known_id)]
                first = tokens.decode([result["answer_id"]], skip_special_tokens=True)
                assert judged[known_id].startswith(first), (name, first, judged[known_id])


def test_embedded_toy_run_filters_traces_and_explains(toy_root, known_path, tmp_path):
    """The embedded default on a toy (here the session's small one, via --toy): real filtering, the
    kept facts traced, a report that names the model, defines its terms and states its findings."""
    from spiritlens.synthetic.toy.cache import toy_facts

    out = tmp_path / "toy_run"
    done = _run(["--out", str(out), "--known", str(known_path), "--toy", str(toy_root), "--kinds", "hidden,mlp",
                 "--samples", "4", "--prompts", "4", "--asr", "none"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "toy SpiritLM" in done.stdout
    prep = json.loads((out / "prepare.json").read_text())
    facts = {f.known_id: f for f in toy_facts(toy_root)}
    assert prep["weights"] == "toy" and prep["config"]["keep_all"] is False
    assert set(map(int, prep["records"])) <= set(facts) and len(prep["records"]) == 4
    assert prep["window"] == 3 and prep["n_layers"] == 8  # 10 of 32 layers, scaled to 8
    for modality in ("t2t", "s2t"):
        manifest = json.loads((out / "filter" / f"known-{modality}.json").read_text())
        assert manifest["keep_all"] is False
        for entry in manifest["entries"]:  # kept exactly when the greedy answer starts with the attribute
            assert entry["kept"] == (entry["generated"].strip().startswith(facts[entry["known_id"]].attribute))
        assert manifest["kept_ids"] == prep["kept"][modality]
    kept = sum(len(ids) for ids in prep["kept"].values())
    assert kept >= 7  # the toy knows its facts
    results = _results(out)
    assert len(results) == 2 * (kept + len(prep["backbone"]["kept"]))  # with the toy's backbone (baseline row)
    assert prep["backbone"]["model_dir"] == str(toy_root / "backbone" / "llama-2-7b-hf")
    assert all(r["window"] == 3 for r in results.values())
    report = (out / "report.md").read_text()
    for text in ("The toy SpiritLM", "attention is off in its first 2 layers", "**TE** (total effect)",
                 "**IE** (indirect effect)", "**AIE** (average indirect effect)", "six token categories",
                 "### What the traces show", "## S→T alignment", "S→T alignments were flagged",
                 "window 3 (max(1, floor(10 * n_layers / 32 + 1/2))", "95% confidence interval"):
        assert text in report, text
    aie = json.loads((out / "aggregate" / "aie.json").read_text())
    t2t = re.search(r"SpiritLM T→T \((\d+) prompts?\): corrupting the subject lowers p\(answer\) from ([\d.]+) to ([\d.]+) "
                    r"on average \(ATE ([\d.]+)\)", report)
    assert t2t and int(t2t.group(1)) == len(prep["kept"]["t2t"])
    text_hidden = aie["hidden"]["by_modality"]["text"]  # the paragraph's numbers are the aggregate's
    assert float(t2t.group(2)) == pytest.approx(text_hidden["high_score_mean"], abs=5e-4)
    assert float(t2t.group(3)) == pytest.approx(text_hidden["low_score_mean"], abs=5e-4)
    assert float(t2t.group(4)) == pytest.approx(text_hidden["ate"], abs=5e-4)
    # The cross-modal analyses of every fact kept in both modalities, and their section in the report.
    shared = [k for k in prep["kept"]["t2t"] if k in prep["kept"]["s2t"]]
    summary = json.loads((out / "summary.json").read_text())
    assert shared and summary["crossmodal"]["facts"] == shared and not summary["crossmodal"]["failed"]
    assert f"cross-modal analyses: {len(shared)} facts, {len(shared)} computed" in done.stdout
    crossmodal = json.loads((out / "crossmodal" / "summary.json").read_text())
    assert crossmodal["facts"] == [str(k) for k in shared]
    section = report[report.index("## Beyond the paper"):report.index("## Sample prompts")]
    for name in ("patching.png", "geometry.png", "logit_lens_mrr.png"):
        assert f"(crossmodal/{name})" in section
        assert_drawn_png(out / "crossmodal" / name)
    assert "**Findings (computed from the numbers).**" in section and "| layer | cosine |" in section
    # The baseline row: the toy's backbone, compared on the facts it and each SpiritLM direction kept.
    comparison = json.loads((out / "aggregate" / "comparison.json").read_text())
    for direction, group in (("t2t", "text"), ("s2t", "speech")):
        both = sorted(set(prep["backbone"]["kept"]) & set(prep["kept"][direction]))
        assert comparison["pairs"][group]["known_ids"] == both
        assert comparison["pairs"][group]["kinds"]["hidden"]["grid"]["prompts"] == len(both)
    assert "## Baseline: the backbone SpiritLM was built from" in report


def test_killed_run_resumes_without_recomputing_or_duplicating(tiny_root, known_path, tiny_ctc_dir, tmp_path):
    out = tmp_path / "resume"
    args = _tiny_args(tiny_root, known_path, tiny_ctc_dir, out, "--modalities", "t2t", "--prompts", "10",
                      "--samples", "48", "--quiet")
    process = subprocess.Popen(SPIRITLENS + ["experiment", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=_env())
    results = out / "results" / "t2t"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(results.glob("*.json"))) < 4:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # a real kill, mid-prompt
    process.wait(timeout=60)
    before = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert 4 <= len(before) < 30, f"kill landed with {len(before)} of 30 results written"
    done = _run(args)
    assert done.returncode == 0, done.stderr[-3000:]
    after = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert len(after) == 30 and len(list(results.glob("*.npz"))) == 30
    assert not list(results.glob(".*"))  # no temporary files left behind
    for name, mtime in before.items():
        assert after[name] == mtime, f"{name} was recomputed"
    for path in results.glob("*.json"):
        TraceResult.load(path)
    status = json.loads((out / "status" / "rank0.json").read_text())
    assert sum(len(t["kinds"]) for t in status["traced"]) == 30 - len(before)


def test_torchrun_two_ranks_match_one_rank(tiny_root, known_path, tiny_ctc_dir, tmp_path):
    common = ["--prompts", "3", "--kinds", "hidden,attn", "--samples", "3", "--window", "3"]
    one = _run(_tiny_args(tiny_root, known_path, tiny_ctc_dir, tmp_path / "one", *common))
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "spiritlens",
         "experiment", *_tiny_args(tiny_root, known_path, tiny_ctc_dir, tmp_path / "two", *common), "--quiet"],
        capture_output=True, text=True, timeout=600, env=_env())
    assert two.returncode == 0, two.stderr[-3000:]
    single, sharded = _results(tmp_path / "one"), _results(tmp_path / "two")
    assert len(single) == 2 * 3 * 2 and set(single) == set(sharded)
    for name in single:
        assert single[name]["scores"] == sharded[name]["scores"], name
        assert single[name]["low_score"] == sharded[name]["low_score"]
    ranks = [json.loads((tmp_path / "two" / "status" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [len(r["traced"]) for r in ranks] == [3, 3]
    assert not {t["item"] for t in ranks[0]["traced"]} & {t["item"] for t in ranks[1]["traced"]}
    assert json.loads((tmp_path / "one" / "aggregate" / "aie.json").read_text()) == \
        json.loads((tmp_path / "two" / "aggregate" / "aie.json").read_text())


def test_bad_records_unwritable_results_and_corrupt_files(tiny_root, known_path, tiny_ctc_dir, tmp_path):
    records = json.loads(known_path.read_text())[:3]
    bad = [dict(records[0], known_id=9001, subject=""), dict(records[1], known_id=9002, subject="Nowhere To Be Found")]
    known = tmp_path / "known.json"
    known.write_text(json.dumps(records + bad))
    out = tmp_path / "faults"
    (out / "results").mkdir(parents=True)
    (out / "results" / "s2t").write_text("not a folder")  # every S->T result write fails
    args = _tiny_args(tiny_root, tmp_path / "unused", tiny_ctc_dir, out, "--kinds", "hidden", "--samples", "2",
                      "--asr", "whisper")
    args[args.index("--known") + 1] = str(known)
    done = _run(args)
    assert done.returncode == 1  # failures are reported in the exit status
    summary = json.loads((out / "summary.json").read_text())
    reasons = {item["known_id"]: item["reason"] for item in summary["skipped"]}
    assert "subject" in reasons[9001] and "Nowhere To Be Found" in reasons[9002]
    assert len(summary["failed"]) == 3 and all(f["item"].startswith("s2t/") for f in summary["failed"])
    assert len(list((out / "results" / "t2t").glob("*.json"))) == 3  # T->T went on
    assert "not computed" in (out / "report.md").read_text()  # whisper is not installed here
    # a corrupted finished result is recomputed; the others are left alone
    (out / "results" / "s2t").unlink()
    victim = sorted((out / "results" / "t2t").glob("*.json"))[0]
    victim.write_text("{ truncated")
    untouched = {p: p.stat().st_mtime_ns for p in (out / "results" / "t2t").glob("*.json") if p != victim}
    again = _run(args)
    assert again.returncode == 0, again.stderr[-3000:]
    TraceResult.load(victim)
    assert all(p.stat().st_mtime_ns == m for p, m in untouched.items())
    assert len(list((out / "results" / "s2t").glob("*.json"))) == 3


def test_unwritable_output_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = _run(["--out", str(blocker / "out")])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("spiritlens experiment: error: output directory")
