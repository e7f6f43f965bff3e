"""One run key for every cache and resume: a rerun into the same ``--out`` with other weights (same
path, same variant name) or another ``--dtype`` recomputes sigma, the filter, the traces and the
cross-modal results, and its numbers equal a fresh run into a new folder; a file edited after it was
written is recomputed (never reported), and a speech-manifest path leading out of ``--out`` is never read.

The reference for every number is a fresh, independent run of the same settings into another folder
(the untouched copy of the first run for the tampering cases), never the rerun's own cached output.
Tiny random checkpoints, two Known prompts, one kind and two noise samples keep each run to seconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spiritlens.traces import TraceResult


def _run(out: Path, root: Path, known: Path, aligner: Path, **settings) -> dict:
    from spiritlens.experiment import Experiment, ExperimentConfig

    config = ExperimentConfig(out=out, checkpoints=root, known=known, aligner=aligner, keep_all=True, asr="none",
                              n_prompts=2, kinds=("hidden",), samples=2, sample_figures=0, **settings)
    return Experiment(config, progress=False, log=lambda message: None).run()


def _traces(out: Path) -> dict[str, TraceResult]:
    return {str(p.relative_to(out / "results")): TraceResult.load(p) for p in sorted((out / "results").rglob("*.json"))}


def _crossmodal(out: Path) -> dict[str, dict]:
    """Every cross-modal result's numbers (without run key and checksum, which name the run)."""
    files = sorted((out / "crossmodal" / "facts").rglob("*.json")) + [out / "crossmodal" / "summary.json"]
    return {str(p.relative_to(out)): {k: v for k, v in json.loads(p.read_text()).items()
                                       if k not in ("run_key", "checksum")} for p in files}


def _prepare(out: Path) -> dict:
    return json.loads((out / "prepare.json").read_text())


def _generations(out: Path) -> dict:
    return {m: json.loads((out / "filter" / f"known-{m}.json").read_text())["generations"] for m in ("t2t", "s2t")}


@pytest.fixture(scope="module")
def setup(tiny_root, known_path, tiny_ctc_dir, tmp_path_factory):
    """A checkpoint tree of its own (its weights are rewritten in place by one test) and a first run on it."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (the setup command installs it)")
    base = tmp_path_factory.mktemp("runkey")
    root = base / "checkpoints"
    shutil.copytree(tiny_root, root)
    first = base / "first"
    summary = _run(first, root, known_path, tiny_ctc_dir)
    assert summary["crossmodal"]["facts"] and not summary["crossmodal"]["failed"] and not summary["failed"]
    return {"base": base, "root": root, "first": first, "known": known_path, "aligner": tiny_ctc_dir}


def _copy(setup, name: str) -> Path:
    out = setup["base"] / name
    shutil.copytree(setup["first"], out)
    return out


def _assert_same_and_different(rerun: Path, fresh: Path, first: Path) -> None:
    """The rerun's sigma, generations, traces and cross-modal numbers equal the fresh run's and differ from the first's."""
    assert _prepare(rerun)["sigma"] == _prepare(fresh)["sigma"]
    assert all(_prepare(rerun)["sigma"][m] != _prepare(first)["sigma"][m] for m in ("text", "speech"))
    assert _generations(rerun) == _generations(fresh)
    again, reference, old = _traces(rerun), _traces(fresh), _traces(first)
    assert sorted(again) == sorted(reference) == sorted(old) and len(again) == 4
    for name in reference:
        assert np.array_equal(again[name].scores, reference[name].scores), name
        assert (again[name].low_score, again[name].high_score) == (reference[name].low_score,
                                                                   reference[name].high_score)
        assert not np.allclose(again[name].scores, old[name].scores), name
    assert _crossmodal(rerun) == _crossmodal(fresh)
    assert _crossmodal(rerun)["crossmodal/summary.json"] != _crossmodal(first)["crossmodal/summary.json"]
    for name, numbers in _crossmodal(fresh).items():
        if name.endswith("patching.json"):
            assert numbers["curves"] != _crossmodal(first)[name]["curves"], name
    assert json.loads((rerun / "aggregate" / "aie.json").read_text()) == \
        json.loads((fresh / "aggregate" / "aie.json").read_text())


def test_other_weights_under_the_same_path_are_recomputed_like_a_fresh_run(setup):
    root, first = setup["root"], setup["first"]
    weights = root / "spiritlm_model" / "spirit-lm-base-7b" / "pytorch_model.bin"
    original = weights.read_bytes()
    rerun, fresh = _copy(setup, "weights_rerun"), setup["base"] / "weights_fresh"
    try:
        state = torch.load(weights, weights_only=True)
        name = next(k for k in state if k.endswith("embed_tokens.weight"))
        state[name] = state[name] * 2  # the same variant, the same path, the same file size
        torch.save(state, weights)
        assert weights.stat().st_size == len(original)
        summary = _run(rerun, root, setup["known"], setup["aligner"])
        _run(fresh, root, setup["known"], setup["aligner"])
    finally:
        weights.write_bytes(original)
    # ROME's sigma of the doubled embeddings is twice the first run's (0.4913 -> 0.9825 in the issue)
    for modality in ("text", "speech"):
        assert _prepare(rerun)["sigma"][modality] == pytest.approx(2 * _prepare(first)["sigma"][modality], rel=1e-6)
    _assert_same_and_different(rerun, fresh, first)
    recomputed = summary["recomputed"]
    assert "sigma (text) recomputed, record" in " ".join(recomputed["prepare"])
    assert all("model weights changed" in line for line in recomputed["prepare"])
    assert sum(recomputed["traces"].values()) == 4 and all("model weights changed" in r for r in recomputed["traces"])
    assert sum(recomputed["crossmodal"].values()) == 3 * len(summary["crossmodal"]["facts"])
    assert summary["crossmodal"]["reused"] == [] and summary["already_done"] == 0
    report = (rerun / "report.md").read_text()
    assert "2 trace results recomputed\\: model weights changed\\; sigma" in report


def test_another_dtype_is_recomputed_like_a_fresh_run(setup):
    first = setup["first"]
    assert _prepare(first)["dtype"] == "float32"  # auto on the tiny checkpoints
    rerun, fresh = _copy(setup, "dtype_rerun"), setup["base"] / "dtype_fresh"
    summary = _run(rerun, setup["root"], setup["known"], setup["aligner"], dtype="bfloat16")
    _run(fresh, setup["root"], setup["known"], setup["aligner"], dtype="bfloat16")
    assert _prepare(rerun)["dtype"] == "bfloat16"
    _assert_same_and_different(rerun, fresh, first)
    assert all(reason.startswith("dtype float32 → bfloat16") for reason in summary["recomputed"]["traces"])
    assert all(reason.startswith("dtype float32 → bfloat16") for reason in summary["recomputed"]["crossmodal"])


def _restamp(document: dict) -> dict:
    """What a careful hand-editor does: the checksum recomputed (the rule, written out here)."""
    body = {k: v for k, v in document.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {**body, "checksum": hashlib.sha256(text.encode("utf-8")).hexdigest()}


@pytest.fixture(scope="module")
def tampered_traces(setup):
    """A copy of the first run with one result's score edited (checksum recomputed; its .npz still holds the true
    scores), one result's checksum deleted and a killed save's temporaries; the aggregate command before a rerun,
    then the rerun (no cross-modal stage)."""
    import contextlib
    import io

    from spiritlens.cli import main

    out = _copy(setup, "tampered_traces")
    edited, unstamped = sorted((out / "results" / "t2t").glob("*.json"))[:2]
    data = json.loads(edited.read_text())
    data["scores"][-1][-1] = 0.987654321
    edited.write_text(json.dumps(_restamp(data)))
    data = json.loads(unstamped.read_text())
    del data["checksum"]
    unstamped.write_text(json.dumps(data))
    # a save killed after writing its temporary arrays file (os.replace never ran)
    victim = sorted((out / "results" / "s2t").glob("*.json"))[0]
    killed = subprocess.run([sys.executable, "-c", (
        "import os, sys\nfrom spiritlens.traces import TraceResult\nr = TraceResult.load(sys.argv[1])\n"
        "os.replace = lambda *a: os._exit(9)\nr.save(sys.argv[1])\n"), str(victim)], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    leftovers = [p for p in victim.parent.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{victim.with_suffix('.npz').name}.")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["aggregate", str(out / "results"), "--out", str(out / "aggregate_before")])
    aggregated = json.loads((out / "aggregate_before" / "aie.json").read_text())
    summary = _run(out, setup["root"], setup["known"], setup["aligner"], crossmodal=False)
    return {"out": out, "edited": edited, "unstamped": unstamped, "leftovers": leftovers, "aggregate_code": code,
            "aggregate_stderr": stderr.getvalue(), "aggregated": aggregated, "summary": summary}


def _shown(number: str, text: str) -> bool:
    """Whether ``number`` appears in a report, raw or as md_text writes it (punctuation escaped)."""
    return number in text or number.replace(".", "\\.") in text


def test_an_edited_score_with_a_recomputed_checksum_is_refused_and_recomputed(tampered_traces, setup):
    case = tampered_traces
    edited = case["edited"]
    assert case["aggregate_code"] == 0 and case["aggregated"]["hidden"]["count"] == 2  # the two S->T results
    assert f"spiritlens aggregate: skipped {edited}: its scores or input_ids differ from its arrays file " \
           f"{edited.with_suffix('.npz').name} (edited after it was written)\n" in case["aggregate_stderr"]
    recomputed = case["summary"]["recomputed"]["traces"]
    assert recomputed["its scores or input_ids differ from its arrays file "
                      f"{edited.with_suffix('.npz').name} (edited after it was written)"] == 1
    reference = TraceResult.load(setup["first"] / "results" / "t2t" / edited.name)
    assert np.array_equal(TraceResult.load(edited).scores, reference.scores)
    assert "0.987654321" not in edited.read_text() and not _shown("0.9877", (case["out"] / "report.md").read_text())
    assert json.loads((case["out"] / "aggregate" / "aie.json").read_text()) == \
        json.loads((setup["first"] / "aggregate" / "aie.json").read_text())


def test_a_result_without_its_checksum_is_listed_by_aggregate_and_recomputed(tampered_traces, setup):
    case = tampered_traces
    unstamped = case["unstamped"]
    assert f"spiritlens aggregate: skipped {unstamped}: no checksum recorded (written before checksums, or " \
           "edited)\n" in case["aggregate_stderr"]
    assert case["summary"]["recomputed"]["traces"]["no checksum recorded (written before checksums, or edited)"] == 1
    assert json.loads(unstamped.read_text())["checksum"]
    assert np.array_equal(TraceResult.load(unstamped).scores,
                          TraceResult.load(setup["first"] / "results" / "t2t" / unstamped.name).scores)


def test_a_killed_saves_temporaries_are_swept(tampered_traces):
    assert not any(p.exists() for p in tampered_traces["leftovers"])
    assert not [p for p in tampered_traces["out"].rglob(".*") if p.is_file()]


@pytest.fixture(scope="module")
def tampered_prepare(setup):
    """A copy of the first run with the sigma cache, a filter manifest and a speech-manifest entry edited
    (the last leading out of --out, to a file whose SHA-256 it records, its checksum recomputed); then a rerun."""
    out = _copy(setup, "tampered_prepare")
    sigma = next((out / "sigma").glob("sigma_text_*.json"))
    data = json.loads(sigma.read_text())
    data["sigma"] = 0.05
    sigma.write_text(json.dumps(data))
    manifest = out / "filter" / "known-t2t.json"
    data = json.loads(manifest.read_text())
    kid = str(data["kept_ids"][0])
    record = next(e for e in data["entries"] if str(e["known_id"]) == kid)
    data["generations"][kid]["generated"] = " " + record["attribute"] + " and more"  # now judged exact
    data["generations"][kid]["answer_id"] = 3
    manifest.write_text(json.dumps(data))
    speech = out / "speech" / "manifest.json"
    data = json.loads(speech.read_text())
    entry = next(e for e in data["entries"] if e["item_id"].endswith("_prompt"))
    victim = setup["base"] / "victim.wav"
    shutil.copy(out / "speech" / entry["path"], victim)
    (out / "speech" / entry["path"]).unlink()
    entry["path"] = str(Path("..") / ".." / victim.name)
    entry["sha256"] = hashlib.sha256(victim.read_bytes()).hexdigest()
    speech.write_text(json.dumps(_restamp(data)))
    summary = _run(out, setup["root"], setup["known"], setup["aligner"], crossmodal=False)
    return {"out": out, "summary": summary, "entry": entry, "victim": victim, "sigma": sigma}


def test_an_edited_sigma_cache_is_not_used(tampered_prepare, setup):
    out, summary = tampered_prepare["out"], tampered_prepare["summary"]
    assert _prepare(out)["sigma"] == _prepare(setup["first"])["sigma"]
    assert any(line.startswith("sigma (text) recomputed, record ") and "does not match its checksum" in line
               for line in summary["recomputed"]["prepare"])
    assert json.loads(tampered_prepare["sigma"].read_text())["sigma"] == _prepare(setup["first"])["sigma"]["text"]
    assert not _shown("0.05", (out / "report.md").read_text())


def test_an_edited_filter_manifest_is_regenerated(tampered_prepare, setup):
    out, summary = tampered_prepare["out"], tampered_prepare["summary"]
    assert summary["filter"] == json.loads((setup["first"] / "summary.json").read_text())["filter"]
    assert _generations(out) == _generations(setup["first"]) and _prepare(out)["answers"] == _prepare(setup["first"])["answers"]
    assert "filter known-t2t.json: 2 generation(s) recomputed: content does not match its checksum (edited or " \
           "damaged after it was written)" in summary["recomputed"]["prepare"]
    for name, result in _traces(out).items():  # the traces measured the true answers, not the edited one
        assert np.array_equal(result.scores, _traces(setup["first"])[name].scores), name


def test_a_speech_manifest_path_out_of_the_folder_is_never_read(tampered_prepare, setup):
    out, summary, entry = tampered_prepare["out"], tampered_prepare["summary"], tampered_prepare["entry"]
    audio = _prepare(out)["audio"]
    assert all(Path(path).resolve().parent == (out / "speech").resolve() for path in audio.values())
    entries = {e["item_id"]: e for e in json.loads((out / "speech" / "manifest.json").read_text())["entries"]}
    assert entries[entry["item_id"]]["path"] == f"{entry['item_id']}.wav"  # synthesised again, in the folder
    assert (f"speech/manifest.json: 1 item(s) synthesised again: path '../../victim.wav' is not a file name inside "
            f"{out / 'speech'} (never read; re-synthesised)") in summary["recomputed"]["prepare"]
    for name, result in _traces(out).items():
        assert np.array_equal(result.scores, _traces(setup["first"])[name].scores), name


def test_edited_crossmodal_results_are_recomputed(setup):
    out = _copy(setup, "tampered_crossmodal")
    facts = json.loads((out / "summary.json").read_text())["crossmodal"]["facts"]
    folder = out / "crossmodal" / "facts" / str(facts[0])
    edits = {"patching.json": lambda d: d["curves"][0]["scores"].__setitem__(0, 0.999),
             "geometry.json": lambda d: d["cosine"][0].__setitem__(0, 0.999),
             "logit_lens.json": lambda d: d["ranks"][0][0].__setitem__(0, 1)}
    for name, edit in edits.items():
        data = json.loads((folder / name).read_text())
        edit(data)
        (folder / name).write_text(json.dumps(data))
    summary = _run(out, setup["root"], setup["known"], setup["aligner"])
    crossmodal = summary["crossmodal"]
    assert crossmodal["computed"] == [{"fact": facts[0], "analyses": ["patching", "geometry", "logit_lens"]}]
    assert crossmodal["recomputed"] == {"content does not match its checksum (edited or damaged after it was "
                                        "written)": 3}
    assert _crossmodal(out) == _crossmodal(setup["first"])
    assert not _shown("0.999", (out / "report.md").read_text())
