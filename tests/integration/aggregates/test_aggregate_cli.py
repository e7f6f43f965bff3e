"""``spiritlens aggregate`` end to end in a real subprocess, on hand-made result files."""

from __future__ import annotations

import json

import pytest
from helpers import assert_drawn_png, band_pixel_columns, make_result, run_cli, write_result


def spiritlens(*args: str):
    return run_cli(*args, timeout=120)


@pytest.fixture()
def results_dir(tmp_path):
    folder = tmp_path / "results"
    (folder / "hidden").mkdir(parents=True)
    # Two kept hidden prompts; "last" rows (4 and 5) hold 0.5/0.3 and 0.7/0.5.
    a = make_result(5, (2, 3), low=0.1, high=0.6, set_rows={4: [0.5, 0.3]}, name="a")
    b = make_result(6, (2, 4), low=0.3, high=0.8, set_rows={5: [0.7, 0.5]}, name="b")
    wrong = make_result(5, (2, 3), low=0.0, high=0.1, set_rows={4: [9.0, 9.0]}, correct_prediction=False, name="w")
    mlp = make_result(5, (2, 3), kind="mlp", low=0.2, high=0.5, set_rows={2: [0.25, 0.2]}, name="m")
    for name, result in {"a": a, "b": b, "w": wrong}.items():
        write_result(folder / "hidden" / f"{name}.json", result)
    write_result(folder / "m.json", mlp)
    (folder / "manifest.json").write_text(json.dumps({"prompts": 4}))
    (folder / "broken.json").write_text("{not json")
    return folder


def test_aggregate_command_writes_contract_csv_and_figures(results_dir, tmp_path):
    out = tmp_path / "out"
    proc = spiritlens("aggregate", str(results_dir), "--out", str(out), "--epsilon", "0.001")
    assert proc.returncode == 0, proc.stderr
    assert "broken.json" in proc.stderr
    assert "ATE" in proc.stdout and "peak AIE" in proc.stdout
    # the summary line: the per-prompt AIE's peak with its CI (both prompts' effects are 0.4: no width)
    assert "T→T hidden n=2     ATE 0.5      peak AIE 0.4 ± 0 at last, layer 0" in proc.stdout, proc.stdout

    document = json.loads((out / "aie.json").read_text())
    assert list(document) == ["hidden", "mlp"]
    hidden = document["hidden"]
    assert hidden["count"] == 2 and hidden["excluded"] == 1
    assert hidden["low_score_mean"] == pytest.approx(0.2)
    assert hidden["high_score_mean"] == pytest.approx(0.7)
    assert hidden["ate"] == pytest.approx(0.5)
    # last: mean of (0.5, 0.7) - 0.2 and of (0.3, 0.5) - 0.2.
    assert hidden["aie"]["last"] == pytest.approx([0.4, 0.2])
    assert hidden["aie"]["middle_subject"] == [None, None]
    assert hidden["row_counts"]["middle_subject"] == 0
    assert document["mlp"]["aie"]["first_subject"] == pytest.approx([0.05, 0.0])
    assert document["mlp"]["aie"]["last_subject"] == pytest.approx([0.05, 0.0])

    csv_lines = (out / "aie_hidden.csv").read_text().splitlines()
    assert csv_lines[0].startswith("kind,modality,category,value,rows,prompts,layer_0,layer_1")
    assert "hidden,text,middle_subject,aie,0,0,," in csv_lines and "hidden,text,middle_subject,effect,0,0,," in csv_lines
    assert "hidden,text,last,aie,2,2,0.4,0.2" in csv_lines  # ROME's pooled AIE; two prompts have a last row
    for name in ("aie_grid_log.png", "aie_grid_linear.png", "aie_lines.png"):
        assert_drawn_png((out / name))
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_aggregate_command_refuses_exact_traces_mixed_with_attribution_estimates(results_dir, tmp_path):
    estimate = make_result(7, (2, 4), low=0.1, high=0.6, set_rows={3: [2.0, 1.5]}, name="est", method="attribution")
    write_result(results_dir / "hidden" / "est.json", estimate)
    proc = spiritlens("aggregate", str(results_dir), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "kind 'hidden' mixes methods: a (prompt 'prompt with 5 rows') is exact, est (prompt 'prompt with 7 " \
           "rows') is attribution; aggregate exact traces and attribution estimates apart" in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "aie.json").exists()


def test_aggregate_command_labels_estimates_and_reports_what_it_pools(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    write_result(folder / "e.json", make_result(5, (2, 3), set_rows={4: [1.6, 0.3]}, name="e", method="attribution"))
    proc = spiritlens("aggregate", str(folder), "--out", str(tmp_path / "est"))
    assert proc.returncode == 0, proc.stderr
    assert "peak AIE (attribution estimate (AtP), not exact restoration) 1.5 at last, layer 0" in proc.stdout, proc.stdout

    folder = tmp_path / "pooled"
    folder.mkdir()
    write_result(folder / "a.json", make_result(5, (2, 3), name="a", sigma=0.03))
    write_result(folder / "a_again.json", make_result(5, (2, 3), name="a_again", sigma=0.05))
    write_result(folder / "t.json", make_result(6, (2, 3), name="t", sigma=0.03, target="Paris"))
    write_result(folder / "s.json", make_result(7, (2, 3), name="s", modality="speech", alignment_low_confidence=True))
    proc = spiritlens("aggregate", str(folder), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("spiritlens aggregate: ")]
    assert "spiritlens aggregate: text hidden: a_again (prompt 'prompt with 5 rows') traces the same input as " \
           "a (prompt 'prompt with 5 rows'); both count as prompts" in lines, proc.stderr
    assert "spiritlens aggregate: text hidden: results differ in sigma (0.03, 0.05); averaged together" in lines
    assert any("text hidden: 1 result(s) score an explicit --target" in line and "'Paris'" in line for line in lines)
    assert any("speech hidden: 1 result(s) with a low-confidence speech alignment included" in line for line in lines)
    assert len(lines) == 4, lines


def test_aggregate_command_without_usable_results_exits_2(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    proc = spiritlens("aggregate", str(tmp_path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "no usable trace results" in proc.stderr and "broken.json" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "aie.json").exists()


def test_aggregate_command_all_wrong_predictions_exits_2(tmp_path):
    write_result(tmp_path / "w.json", make_result(5, (2, 3), correct_prediction=False))
    proc = spiritlens("aggregate", str(tmp_path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "wrong predictions" in proc.stderr


def test_aggregate_command_missing_folder_and_bad_epsilon(tmp_path):
    proc = spiritlens("aggregate", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "nope" in proc.stderr and "Traceback" not in proc.stderr
    proc = spiritlens("aggregate", str(tmp_path), "--out", str(tmp_path / "out"), "--epsilon", "-1")
    assert proc.returncode == 2 and "epsilon" in proc.stderr


PROMPTS = [("The Space Needle is located in the city of", "Space Needle"), ("The Eiffel Tower is in", "Eiffel Tower"),
           ("Tim Cook works for", "Tim Cook"), ("Autonomous University of Madrid is located in",
                                                 "Autonomous University of Madrid")]


def test_traces_without_effect_aggregate_to_no_effect(tiny_model, tmp_path):
    """Real traces with noise 1e-9 (every IE float32 rounding, at most a few 1e-7): ROME's pooled AIE of the
    further tokens is the prompts' corrupted-score difference, yet the command says "no effect" and the line
    plot has no band."""
    import numpy as np
    from matplotlib import image

    from spiritlens import trace

    folder = tmp_path / "results"
    for i, (prompt, subject) in enumerate(PROMPTS):
        result = trace(tiny_model, prompt, subject, noise=1e-9, samples=2)
        assert np.abs(result.scores - result.low_score).max() < 5e-6
        result.save(folder / f"p{i}.json")
    out = tmp_path / "out"
    proc = spiritlens("aggregate", str(folder), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "no effect (every |IE| within the numerical floor" in proc.stdout and "peak" not in proc.stdout
    document = json.loads((out / "aie.json").read_text())["hidden"]
    assert document["no_effect"] is True
    assert abs(document["aie"]["further"][0]) > 1e-3  # ROME's rollup, kept for parity: not an effect
    assert all(v == 0.0 for values in document["effect"].values() if values for v in values)
    assert band_pixel_columns(image.imread(out / "aie_lines.png")) == 0
