"""Per-stream aggregates (row_mode "streams") and the prosody controls' effects, on hand-made results: the
categories, per-prompt AIE, CIs and paired deltas computed here by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import make_result, write_result
from spiritlens.aggregates import STREAM_CATEGORIES, aggregate, aggregate_streams, categorize, load_results, \
    to_aie_json
from spiritlens.aggregates.prosody import control_effects

T_975 = {1: math.tan(0.475 * math.pi), 2: 0.95 * math.sqrt(2 / (1 - 0.95 ** 2))}  # t(0.975, df), closed forms


def stream_result(values: dict[int, list[float]], *, low=0.1, name="p"):
    """Rows: 0 <s>, 1 [Speech], 2..7 the subject's three words x (Hu, Pi) with a silence row 5 inside,
    8 next word, 9 further, 10 [Text]. Word j of the subject: rows 2-3 (j 0), 4 and 6 (j 1), 7 (j 2, HuBERT)."""
    result = make_result(11, (2, 8), low=low, set_rows=values, name=name)
    result.update(row_mode="streams", ignored_rows=[5],
                  row_streams=[None, None, "hubert", "pitch", "hubert", None, "style", "hubert", None, None, None],
                  row_subject_token=[None, None, 0, 0, 1, None, 1, 2, None, None, None])
    return result


def test_stream_categories_by_hand():
    rows = categorize(stream_result({}))
    assert list(rows) == list(STREAM_CATEGORIES)
    assert rows["first_subject/hubert"] == [2] and rows["first_subject/pitch"] == [3]
    assert rows["middle_subject/hubert"] == [4] and rows["middle_subject/style"] == [6]
    assert rows["last_subject/hubert"] == [7] and rows["last_subject/pitch"] == [] == rows["first_subject/style"]
    assert (rows["first_subsequent"], rows["further"], rows["last"]) == ([8], [9], [10])
    one_word = stream_result({})
    one_word["row_subject_token"] = [None, None, 0, 0, 0, None, 0, 0, None, None, None]
    rows = categorize(one_word)  # a one-token subject: first and last subject token at once
    assert rows["first_subject/hubert"] == rows["last_subject/hubert"] == [2, 4, 7]
    assert rows["middle_subject/hubert"] == []


def test_per_prompt_stream_aie_and_ci_by_hand():
    a = stream_result({3: [0.5, 0.3], 6: [0.2, 0.1]}, low=0.1, name="a")
    b = stream_result({3: [0.3, 0.2], 6: [0.4, 0.1]}, low=0.2, name="b")
    c = stream_result({3: [0.9, 0.1]}, low=0.1, name="c")
    agg = aggregate_streams([a, b, c], "hidden")
    ies = np.array([[0.4, 0.2], [0.1, 0.0], [0.8, 0.0]])  # first_subject/pitch (row 3), each against its own low
    assert np.allclose(agg.effect["first_subject/pitch"], ies.mean(axis=0))
    expected_ci = T_975[2] * ies.std(axis=0, ddof=1) / math.sqrt(3)
    assert np.allclose(agg.ci["first_subject/pitch"], expected_ci)
    middle = np.array([[0.1, 0.0], [0.2, -0.1], [0.0, 0.0]])  # middle_subject/style (row 6)
    assert np.allclose(agg.effect["middle_subject/style"], middle.mean(axis=0))
    assert agg.prompt_counts["last_subject/pitch"] == 0 and np.isnan(agg.effect["last_subject/pitch"]).all()
    assert agg.peak()[:2] == ("first_subject/pitch", 0)
    entry = to_aie_json({"hidden": agg})["hidden"]
    assert list(entry["effect"]) == list(STREAM_CATEGORIES) and entry["effect"]["last_subject/pitch"] == [None, None]


def test_stream_results_are_kept_apart_from_the_six_categories(tmp_path):
    plain = make_result(6, (2, 4), name="plain")
    split = stream_result({3: [0.5, 0.3]}, name="split")
    with pytest.raises(ValueError, match="split by stream"):
        aggregate([plain, split], "hidden")
    with pytest.raises(ValueError, match="not split by stream"):
        aggregate_streams([plain, split], "hidden")
    write_result(tmp_path / "plain.json", plain)
    write_result(tmp_path / "split.json", split)
    problems: list[str] = []
    assert [r["name"] for r in load_results(tmp_path, problems)] == ["plain"]
    assert len(problems) == 1 and "split.json: its subject rows are split by stream" in problems[0]
    problems = []
    assert [r["name"] for r in load_results(tmp_path, problems, streams=True)] == ["split"]
    assert "plain.json: its rows are not split by stream" in problems[0]


@pytest.mark.parametrize("change, message", [
    (dict(row_streams=[None] * 11), "subject row 2 needs a stream"),
    (dict(row_subject_token=[0] * 11), "outside the subject but has stream"),
    (dict(row_streams=[None] * 3), "row_streams and row_subject_token, one per row"),
])
def test_malformed_stream_rows_are_refused(change, message):
    result = stream_result({})
    result.update(change)
    with pytest.raises(ValueError, match=message):
        categorize(result)


def record(kid, control, p, top1=5, lows=(0.1, 0.2, None)):
    return {"known_id": kid, "control": control, "answer_id": 5, "p_answer": p, "top1_id": top1,
            "stream_low": dict(zip(("hubert", "pitch", "style"), lows))}


def test_control_effects_by_hand():
    records = [record(1, "original", 0.6), record(2, "original", 0.4), record(3, "original", 0.5),
               record(1, "flat_pitch", 0.3, top1=9), record(2, "flat_pitch", 0.35), record(3, "flat_pitch", 0.2)]
    effects = control_effects(records)
    assert list(effects) == ["original", "flat_pitch"]
    flat = effects["flat_pitch"]
    deltas = np.array([-0.3, -0.05, -0.3])
    assert flat.delta.n == 3 and math.isclose(flat.delta.mean, deltas.mean())
    assert math.isclose(flat.delta.ci, T_975[2] * deltas.std(ddof=1) / math.sqrt(3))
    assert effects["original"].delta.mean == 0 and effects["original"].delta.ci == 0
    assert flat.answer_changed == 1 and effects["original"].answer_changed == 0
    te_pitch = np.array([0.3, 0.35, 0.2]) - 0.2
    assert math.isclose(flat.stream_te["pitch"].mean, te_pitch.mean()) and flat.stream_te["style"].n == 0
    assert flat.stream_te["style"].text() == "–" and "±" in flat.delta.text()
    with pytest.raises(ValueError, match="two control records of flat_pitch/1"):
        control_effects(records + [record(1, "flat_pitch", 0.1)])
    with pytest.raises(ValueError, match="p_answer and stream_low must be probabilities"):
        control_effects([record(1, "original", 1.5)])


def test_report_peaks_say_their_prompt_count_and_no_place_for_a_null():
    from spiritlens.experiment.report_expressive import _peak_text, stream_peak

    a = stream_result({4: [0.5, 0.1], 3: [0.1004, 0.1]}, name="a")  # middle HuBERT 0.4; first pitch 0.0004
    b = stream_result({}, name="b")
    b["row_subject_token"] = [None, None, 0, 0, 0, None, 0, 0, None, None, None]  # one word: no middle rows
    agg = aggregate_streams([a, b], "hidden")
    hubert = stream_peak(agg, "hubert")
    assert hubert[:3] == ("middle_subject/hubert", 0, pytest.approx(0.4)) and hubert[4] == 1  # one prompt has it
    assert _peak_text(hubert, prompts=agg.count) == "0.400 (middle subject token, layer 0, 1 prompt)"
    pitch = stream_peak(agg, "pitch")
    assert pitch[2] == pytest.approx(0.0002) and _peak_text(pitch, prompts=2) == "none above 0.0005"
