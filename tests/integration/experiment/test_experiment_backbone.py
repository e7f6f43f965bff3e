"""The experiment's baseline row end to end on tiny checkpoints: ``--random-weights`` writes a tiny backbone
whose text ids are the tiny SpiritLM's; the backbone is filtered and traced T->T under its own run key (a
rerun with another backbone recomputes exactly its results, and they equal a fresh run's); the grid has
three rows; the report has the comparison; and a backbone trace equals ROME's plain per-cell loop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_drawn_png, run_cli
from reference_tracing import reference_trace

from spiritlens.synthetic.tiny_llama import write_tiny_llama

ARGS = ["--prompts", "2", "--kinds", "hidden", "--samples", "3", "--asr", "none", "--random-weights", "--no-crossmodal",
        "--sample-figures", "0", "--quiet"]


def _experiment(out: Path, known_path: Path, *extra: str):
    done = run_cli("experiment", "--out", str(out), "--known", str(known_path), *ARGS, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _backbone_results(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "results" / "backbone_t2t").glob("*.json"))}


@pytest.fixture(scope="module")
def runs(known_path, tmp_path_factory):
    """A first run (both directions, the default tiny backbone), a rerun with another backbone (T->T only),
    and a fresh run with that other backbone."""
    root = tmp_path_factory.mktemp("backbone_runs")
    other = write_tiny_llama(root / "other-backbone", seed=1)
    first = _experiment(root / "run", known_path)
    before = _backbone_results(root / "run")
    prep = json.loads((root / "run" / "prepare.json").read_text())
    shutil.copytree(root / "run", root / "rerun")  # the first run stays as it was; the copy resumes
    rerun = _experiment(root / "rerun", known_path, "--modalities", "t2t", "--backbone", str(other))
    fresh = _experiment(root / "fresh", known_path, "--modalities", "t2t", "--backbone", str(other))
    return {"root": root, "out": root / "run", "first": first, "before": before, "prep": prep, "other": other,
            "rerun": rerun, "fresh": fresh}


def test_the_backbone_is_filtered_traced_and_compared(runs):
    out, prep = runs["out"], runs["prep"]
    backbone = prep["backbone"]
    tiny = out / "checkpoints" / "backbone" / "llama-2-tiny"
    assert backbone["model_dir"] == str(tiny) and backbone["n_layers"] == 4 and backbone["window"] == 1
    # the tiny backbone's text ids are the tiny SpiritLM's (its SentencePiece model holds the same pieces)
    import sentencepiece

    spirit = sentencepiece.SentencePieceProcessor(
        model_file=str(out / "checkpoints" / "spiritlm_model" / "spirit-lm-base-7b" / "tokenizer.model"))
    llama = sentencepiece.SentencePieceProcessor(model_file=str(tiny / "tokenizer.model"))
    for record in prep["records"].values():
        assert llama.encode(record["prompt"]) == spirit.encode(record["prompt"])
    # filtered by its own greedy answers (every prompt kept: random weights), with its own sigma
    manifest = json.loads((out / "filter" / "known-backbone-t2t.json").read_text())
    assert manifest["kept_ids"] == backbone["kept"] == prep["kept"]["t2t"]
    assert backbone["sigma"] > 0 and backbone["sigma"] != prep["sigma"]["text"]
    results = runs["before"]
    assert sorted(results) == sorted(f"{k}_hidden.json" for k in backbone["kept"])
    from spiritlens.runkey import folder_digest

    for name, result in results.items():
        assert result["model_role"] == "backbone" and result["experiment_modality"] == "backbone_t2t"
        assert result["run_key"]["weights"] == folder_digest(tiny)
        assert result["answer_id"] == backbone["answers"][str(result["known_id"])]
        assert result["sigma"] == backbone["sigma"] and result["noise"] == pytest.approx(3 * backbone["sigma"])
        prompt = prep["records"][str(result["known_id"])]["prompt"]
        assert result["input_ids"] == [1] + llama.encode(prompt)  # Llama-2's prompt: <s> and the text, no [Text]
    # aie.json's backbone entry, the comparison, the summary and the report
    aie = json.loads((out / "aggregate" / "aie.json").read_text())
    assert set(aie["hidden"]["by_modality"]) == {"backbone", "text", "speech"}
    assert aie["hidden"]["count"] == 4 and aie["hidden"]["by_modality"]["backbone"]["count"] == 2
    comparison = json.loads((out / "aggregate" / "comparison.json").read_text())
    assert set(comparison["pairs"]) == {"text", "speech"}
    entry = comparison["pairs"]["text"]["kinds"]["hidden"]["grid"]
    assert entry["prompts"] == 2 and -1 <= entry["r"] <= 1
    assert f"backbone vs SpiritLM T→T, hidden: r = {entry['r']:.2f}" in runs["first"].stdout
    report = (out / "report.md").read_text()
    section = report[report.index("## Baseline: the backbone SpiritLM was built from"):]
    assert "### How much of the backbone's pattern SpiritLM keeps" in section
    assert f"| SpiritLM T→T | hidden | 2 | {entry['r']:.3f} |" in section
    assert "**Findings (computed from the numbers).** On the facts kept by both the backbone and SpiritLM T→T (2)" in section
    assert "(aggregate/comparison.json)" in section


def test_the_grid_has_three_rows(runs):
    from spiritlens.aggregates import aggregate_by_modality, load_results
    from spiritlens.figures import aie_grid_figure

    out = runs["out"]
    assert_drawn_png(out / "aggregate" / "aie_grid_log.png", min_height=500)
    results = load_results(sorted((out / "results").rglob("*_hidden.json")))
    # what write_aggregate_outputs drew: this run's results, grouped as it groups them
    fig = aie_grid_figure(aggregate_by_modality([r for r in results if r["known_id"] in runs["prep"]["kept"]["t2t"]]))
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    rows = sorted({ax.get_subplotspec().rowspan.start for ax in panels})
    assert rows == [0, 1, 2] and len(panels) == 3
    titles = [ax.get_title() for ax in sorted(panels, key=lambda a: a.get_subplotspec().rowspan.start)]
    assert [t.split(":")[0] for t in titles] == ["backbone T→T", "SpiritLM T→T", "SpiritLM S→T"]
    assert "(n = 2)" in titles[0]


def test_another_backbone_recomputes_its_results_and_only_those(runs):
    before = runs["before"]
    after = _backbone_results(runs["root"] / "rerun")
    fresh = _backbone_results(runs["root"] / "fresh")
    assert sorted(after) == sorted(before) == sorted(fresh)
    summary = json.loads((runs["root"] / "rerun" / "summary.json").read_text())
    # the backbone's two results, under their key's changes; SpiritLM's two T->T prompts reused
    ((reason, count),) = summary["recomputed"]["traces"].items()
    assert count == 2 and reason.startswith("model weights changed; sigma ")
    assert summary["already_done"] == 2 and summary["traced"] == 2
    from spiritlens.runkey import folder_digest

    for name in before:
        assert after[name]["run_key"]["weights"] == folder_digest(runs["other"])
        assert not np.allclose(after[name]["scores"], before[name]["scores"])  # other weights, other numbers
        assert after[name]["scores"] == fresh[name]["scores"]  # ... the numbers of a fresh run
        assert after[name]["run_key"] == fresh[name]["run_key"]


def test_a_backbone_trace_equals_romes_plain_loop(runs):
    """The backbone's hidden-state trace of one kept prompt against tests/reference_tracing.py's per-cell loop
    (its own sigma, seed and judged answer)."""
    from spiritlens import HookedSpeechLM

    out = runs["root"] / "fresh"
    prep = json.loads((out / "prepare.json").read_text())
    model = HookedSpeechLM.from_pretrained(runs["other"], family="llama")
    known_id = prep["backbone"]["kept"][0]
    result = json.loads((out / "results" / "backbone_t2t" / f"{known_id}_hidden.json").read_text())
    b, e = result["subject_range"]
    table, low, high, answer = reference_trace(model, result["input_ids"], b, e, "hidden", samples=3,
                                               nu=3 * prep["backbone"]["sigma"], seed=1, answer=result["answer_id"])
    assert answer == prep["backbone"]["answers"][str(known_id)]
    assert abs(result["high_score"] - high) <= 1e-6 and abs(result["low_score"] - low) <= 1e-6
    assert np.abs(np.asarray(result["scores"]) - table).max() <= 1e-6
    assert np.abs(table - low).max() > 1e-4  # the trace has effects to compare
