"""Resume trusts nothing it did not write: results carry a checksum and their run key; a rerun
recomputes any result that fails either, cleans what a killed run left, and keeps everything else.

The faults are made here: a number changed by hand in a finished result (still valid JSON), a
garbage ``.npz``, a result of other settings, a 0-byte temporary WAV and a ``.building-<pid>``
folder of processes that are gone. The reference for "recomputed right" is the uninterrupted
run's own ``aie.json``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from spiritlens.traces import TraceResult

SPIRITLENS = [sys.executable, "-m", "spiritlens"]


def _run(args):
    env = {k: v for k, v in os.environ.items() if k != "SPIRITLM_CHECKPOINTS_DIR"}
    return subprocess.run(SPIRITLENS + ["experiment", *args, "--quiet"], capture_output=True, text=True,
                          timeout=600, env={**env, "OMP_NUM_THREADS": "1"})


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def finished(tiny_root, known_path, tiny_ctc_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    args = ["--out", str(out), "--checkpoints", str(tiny_root), "--known", str(known_path), "--aligner",
            str(tiny_ctc_dir), "--dtype", "float32", "--keep-all", "--asr", "none", "--modalities", "t2t",
            "--kinds", "hidden", "--prompts", "3", "--samples", "2", "--no-crossmodal"]
    done = _run(args)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, args


def test_results_record_checksum_and_run_key(finished, tiny_root):
    import hashlib

    out, _ = finished
    model_dir = tiny_root / "spiritlm_model" / "spirit-lm-base-7b"
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())  # the digest, computed here from the files
    weights = hashlib.sha256(json.dumps([[p.relative_to(model_dir).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest()]
                                         for p in files], sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    for path in sorted((out / "results" / "t2t").glob("*.json")):
        data = json.loads(path.read_text())
        assert len(data["checksum"]) == 64 and len(data["npz_sha256"]) == 64
        key = data["run_key"]
        assert key["samples"] == 2 and key["noise"] == "3s" and key["seed"] == 1 and key["method"] == "exact"
        assert key["sigma"] == data["sigma"] and key["window"] == data["window"]
        assert (key["weights"], key["dtype"], key["device"]) == (weights, "float32", "cpu")
        assert key["rows"]["prompt"] == data["prompt"] and key["rows"]["answer"] == data["answer_id"]
        assert "speech_tokenizer" not in key and "aligner" not in key  # T->T depends on neither
        TraceResult.load(path, run_key=key)


def test_edited_garbage_and_stale_results_are_recomputed(finished):
    out, args = finished
    results = sorted((out / "results" / "t2t").glob("*.json"))
    aie = (out / "aggregate" / "aie.json").read_text()
    edited, garbage, untouched = results[0], results[1], results[2]
    truth = json.loads(edited.read_text())
    data = dict(truth, high_score=0.999)  # a plausible number, valid JSON: only the checksum can tell
    edited.write_text(json.dumps(data))
    garbage.with_suffix(".npz").write_bytes(b"PK\x03\x04 not an npz")
    with pytest.raises(ValueError, match=r"content does not match its checksum"):
        TraceResult.load(edited)
    with pytest.raises(ValueError, match=r"arrays file .*\.npz is missing or does not match npz_sha256"):
        TraceResult.load(garbage)
    kept_mtime = untouched.stat().st_mtime_ns
    done = _run(args)
    assert done.returncode == 0, done.stderr[-3000:]
    status = json.loads((out / "status" / "rank0.json").read_text())
    assert sorted(t["item"] for t in status["traced"]) == sorted(f"t2t/{p.stem.split('_')[0]}" for p in (edited, garbage))
    assert untouched.stat().st_mtime_ns == kept_mtime
    assert json.loads(edited.read_text())["high_score"] == truth["high_score"]  # recomputed, same number
    np.load(garbage.with_suffix(".npz"), allow_pickle=False)  # a real npz again
    assert (out / "aggregate" / "aie.json").read_text() == aie  # as the uninterrupted run had it


def test_other_settings_are_recomputed(finished):
    out, args = finished
    result = sorted((out / "results" / "t2t").glob("*.json"))[0]
    data = json.loads(result.read_text())
    data["run_key"]["samples"] = 3  # as if traced with other settings; checksum made consistent again
    from spiritlens.traces.result import content_checksum

    data["checksum"] = content_checksum(data)
    result.write_text(json.dumps(data))
    TraceResult.load(result)  # a valid result...
    done = _run(args)
    assert done.returncode == 0, done.stderr[-3000:]
    status = json.loads((out / "status" / "rank0.json").read_text())
    assert [t["item"] for t in status["traced"]] == [f"t2t/{result.stem.split('_')[0]}"]  # ...of other settings
    assert status["recomputed"] == ["samples 3 → 2"]
    assert json.loads(result.read_text())["run_key"]["samples"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recomputed"]["traces"] == {"samples 3 → 2": 1}
    assert "  - 1 trace result recomputed\\: samples 3 → 2" in (out / "report.md").read_text().splitlines()


def test_orphan_wavs_are_removed_and_wavs_follow_the_umask(tmp_path):
    from spiritlens.data import EspeakTTS, synthesize_corpus

    backend = EspeakTTS()
    if not backend.available():
        pytest.skip("espeak-ng is not installed")
    out = tmp_path / "speech"
    out.mkdir()
    gone, alive = dead_pid(), os.getpid()
    orphan = out / f".1_prompt.tmp-{gone}.abc123.wav"
    orphan.write_bytes(b"")  # what a kill during synthesis leaves
    busy = out / f".2_prompt.tmp-{alive}.def456.wav"  # a live writer's file is not touched
    busy.write_bytes(b"")
    old = os.umask(0o027)
    try:
        result = synthesize_corpus([("1_prompt", "The Eiffel Tower is in Paris")], backend, out, progress=False)
    finally:
        os.umask(old)
    assert not orphan.exists() and busy.exists()
    assert result.synthesized == ["1_prompt"]
    mode = stat.S_IMODE((out / "1_prompt.wav").stat().st_mode)
    assert mode == 0o640  # 0o666 & ~0o027, not mkstemp's 0600
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p != busy]


def test_killed_make_toy_leftovers_are_removed(tmp_path):
    from spiritlens.synthetic.toy import make_toy

    gone = dead_pid()
    leftover = tmp_path / f".toy.building-{gone}"
    (leftover / "spiritlm_model").mkdir(parents=True)
    (leftover / "spiritlm_model" / "half.bin").write_bytes(b"\0" * 10)
    messages = []
    with pytest.raises((FileNotFoundError, ValueError)):  # no Known file here: the build stops right after
        make_toy(tmp_path / "toy", known=tmp_path / "no-known.json", log=messages.append)
    assert not leftover.exists()
    assert messages[0] == f"[toy] removed {leftover}, left by a run that was killed"


def test_save_refuses_invalid_results_and_aggregate_reports_edited_ones(tmp_path):
    """NaN or out-of-range probabilities are never written; ``spiritlens aggregate`` (load_results)
    lists a result edited after it was written, and one without a checksum, instead of averaging them."""
    from helpers import make_result

    from spiritlens.aggregates import load_results

    settings = {"noise": 0.1, "noise_rule": "0.1", "sigma": None, "samples": 2, "seed": 1}
    good = TraceResult.from_json({**make_result(5, (1, 3), set_rows={4: [0.5, 0.8]}), **settings})
    for field, value in (("high_score", float("nan")), ("low_score", -0.1), ("scores", [[float("inf")] * 2] * 5)):
        bad = TraceResult.from_json({**make_result(5, (1, 3)), **settings, field: value})
        with pytest.raises(ValueError, match=r"not (a probability|probabilities) in \[0, 1\]"):
            bad.save(tmp_path / f"bad_{field}.json")
        assert not (tmp_path / f"bad_{field}.json").exists() and not (tmp_path / f"bad_{field}.npz").exists()
    good.save(tmp_path / "a.json")
    good.save(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps(make_result(5, (1, 3))))  # no checksum: not trusted
    data = json.loads((tmp_path / "b.json").read_text())
    data["scores"][4][1] = 0.99
    (tmp_path / "b.json").write_text(json.dumps(data))
    problems: list[str] = []
    results = load_results(tmp_path, problems)
    assert len(results) == 1  # a.json
    assert problems == [f"{tmp_path / 'b.json'}: content does not match its checksum (edited or damaged after it "
                        "was written)", f"{tmp_path / 'c.json'}: no checksum recorded (written before checksums, or edited)"]
