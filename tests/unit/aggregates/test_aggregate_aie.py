"""Six categories, AIE, CIs and aie.json on hand-made results with hand-computed numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from helpers import make_result, write_result
from spiritlens.aggregates import (
    CATEGORIES,
    aggregate,
    aggregate_all,
    aggregate_by_modality,
    categorize,
    load_results,
    to_aie_json,
)


def test_categories_of_a_text_prompt():
    # BOS, [Text], 3 subject tokens, 4 tokens after: rows 0 and 1 belong to no category.
    rows = categorize(make_result(9, (2, 5)))
    assert list(rows) == list(CATEGORIES)
    assert rows == {
        "first_subject": [2],
        "middle_subject": [3],
        "last_subject": [4],
        "first_subsequent": [5],
        "further": [6, 7],
        "last": [8],
    }


def test_one_token_subject_is_first_and_last():
    rows = categorize(make_result(6, (2, 3)))
    assert rows["first_subject"] == [2] and rows["last_subject"] == [2]
    assert rows["middle_subject"] == []


def test_two_token_subject_has_no_middle():
    rows = categorize(make_result(6, (2, 4)))
    assert (rows["first_subject"], rows["middle_subject"], rows["last_subject"]) == ([2], [], [3])


def test_one_token_after_subject_is_first_subsequent_and_last():
    rows = categorize(make_result(6, (2, 5)))
    assert rows["first_subsequent"] == [5] and rows["last"] == [5]
    assert rows["further"] == []


def test_subject_at_the_end_is_a_clear_error():
    result = make_result(6, (2, 6), prompt="The Eiffel Tower")
    with pytest.raises(ValueError, match="The Eiffel Tower.*ends the prompt"):
        categorize(result)
    with pytest.raises(ValueError, match="ends the prompt"):
        aggregate([result], "hidden")


def test_ignored_rows_are_in_no_category():
    rows = categorize(make_result(12, (2, 7), ignored_rows=[4, 9]))
    assert rows["middle_subject"] == [3, 5]
    assert rows["further"] == [8, 10]
    assert 4 not in sum(rows.values(), []) and 9 not in sum(rows.values(), [])


def test_speech_rows_use_subject_rows_not_subject_range():
    # 20 token positions grouped into 6 rows; the subject is rows [1, 3).
    result = make_result(6, (1, 3), subject_range=[4, 11], modality="speech")
    assert categorize(result)["last_subject"] == [2]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kind": "resid"}, "kind 'resid'"),
        ({"subject_rows": [3, 2]}, "do not fit"),
        ({"n_layers": 5}, "n_layers is 5"),
        ({"scores": [[0.1, float("nan")]] * 6}, "NaN"),
        ({"ignored_rows": [9]}, "ignored_rows"),
    ],
)
def test_malformed_results_name_the_prompt(change, message):
    result = make_result(6, (2, 4), prompt="Bad prompt")
    result.update(change)
    with pytest.raises(ValueError, match=f"Bad prompt.*{message}"):
        categorize(result)


def test_middle_and_further_are_token_weighted():
    # A: 6-token subject [2, 8) of 11 rows -> middle rows 3..6 (4 rows), further row 9.
    a = make_result(
        11,
        (2, 8),
        low=0.05,
        high=0.8,
        set_rows={3: [0.1, 0.2], 4: [0.2, 0.4], 5: [0.3, 0.6], 6: [0.4, 0.8], 9: [0.5, 0.5], 10: [0.7, 0.6]},
    )
    # B: 3-token subject [2, 5) of 8 rows -> middle row 3, further row 6.
    b = make_result(8, (2, 5), low=0.15, high=0.6, set_rows={3: [0.9, 0.0], 6: [0.3, 0.1], 7: [0.5, 0.2]})
    agg = aggregate([a, b], "hidden")
    assert agg.count == 2 and agg.excluded == 0
    assert agg.row_counts == {
        "first_subject": 2,
        "middle_subject": 5,
        "last_subject": 2,
        "first_subsequent": 2,
        "further": 2,
        "last": 2,
    }
    assert agg.low_score_mean == pytest.approx(0.1)
    assert agg.high_score_mean == pytest.approx(0.7)
    assert agg.ate == pytest.approx(0.6)
    # Pooled over 5 rows: (0.1+0.2+0.3+0.4+0.9)/5 = 0.38, not the mean of prompt means (0.575).
    np.testing.assert_allclose(agg.mean["middle_subject"], [0.38, 0.4])
    np.testing.assert_allclose(agg.aie["middle_subject"], [0.28, 0.3])
    np.testing.assert_allclose(agg.aie["further"], [(0.5 + 0.3) / 2 - 0.1, (0.5 + 0.1) / 2 - 0.1])
    np.testing.assert_allclose(agg.aie["last"], [(0.7 + 0.5) / 2 - 0.1, (0.6 + 0.2) / 2 - 0.1])
    # First subject rows hold each prompt's low score: mean (0.05+0.15)/2 = 0.1, AIE 0.
    np.testing.assert_allclose(agg.aie["first_subject"], [0.0, 0.0], atol=1e-15)
    # The drawn AIE and its CI are over per-prompt effects, each prompt against its own low score:
    # A's middle rows 3..6 give IE (.05 .15 .25 .35 | .15 .35 .55 .75), mean (.2, .45); B's row 3 (.75, -.15).
    np.testing.assert_allclose(agg.effect["middle_subject"], [(0.2 + 0.75) / 2, (0.45 - 0.15) / 2])
    assert agg.prompt_counts["middle_subject"] == 2 and agg.prompt_counts["further"] == 2
    # t-interval over the two prompts: t(0.975, 1) = 12.7062 (scipy.stats.t.ppf) * sample std / sqrt(2)
    assert agg.ci["middle_subject"][0] == pytest.approx(12.706204736174694 * np.std([0.2, 0.75], ddof=1) / math.sqrt(2))
    assert agg.peak() == ("last", 0, pytest.approx(0.5))  # last: (.65 + .35) / 2


def test_one_token_subject_row_counts_as_first_and_last():
    a = make_result(5, (2, 3), low=0.1, set_rows={2: [0.3, 0.5]})
    agg = aggregate([a], "hidden")
    np.testing.assert_allclose(agg.aie["first_subject"], [0.2, 0.4])
    np.testing.assert_allclose(agg.aie["last_subject"], [0.2, 0.4])
    assert agg.row_counts["middle_subject"] == 0


def test_empty_category_is_nan_and_null_in_json():
    # 2-token subjects and one token after: no middle, no further rows anywhere.
    results = [make_result(5, (2, 4)), make_result(6, (3, 5))]
    agg = aggregate(results, "hidden")
    assert agg.row_counts["middle_subject"] == 0 and agg.row_counts["further"] == 0
    assert np.isnan(agg.aie["middle_subject"]).all() and np.isnan(agg.ci["further"]).all()
    document = json.loads(json.dumps(to_aie_json(aggregate_all(results)), allow_nan=False))
    assert document["hidden"]["aie"]["middle_subject"] == [None, None]
    assert document["hidden"]["aie"]["further"] == [None, None]
    assert document["hidden"]["row_counts"]["further"] == 0
    assert document["hidden"]["aie"]["last"] == [0.0, 0.0]


def test_wrong_predictions_are_excluded_and_null_is_kept():
    kept = make_result(5, (2, 3), low=0.1, high=0.5, set_rows={4: [0.4, 0.3]})
    unknown = make_result(5, (2, 3), low=0.3, high=0.7, set_rows={4: [0.6, 0.5]}, correct_prediction=None)
    wrong = make_result(5, (2, 3), low=0.0, high=0.01, set_rows={4: [9.0, 9.0]}, correct_prediction=False)
    agg = aggregate([kept, unknown, wrong], "hidden")
    assert (agg.count, agg.excluded) == (2, 1)
    assert agg.low_score_mean == pytest.approx(0.2)
    np.testing.assert_allclose(agg.aie["last"], [0.3, 0.2])


def test_all_wrong_gives_count_zero_and_nulls():
    wrong = make_result(5, (2, 3), correct_prediction=False)
    document = to_aie_json(aggregate_all([wrong]))
    assert document["hidden"]["count"] == 0
    assert document["hidden"]["low_score_mean"] is None
    assert all(values == [None, None] for values in document["hidden"]["aie"].values())


def test_kinds_are_separated():
    hidden = make_result(5, (2, 3), kind="hidden", low=0.1, set_rows={2: [0.5, 0.5]})
    mlp = make_result(5, (2, 3), kind="mlp", low=0.2, set_rows={2: [0.3, 0.25]})
    aggs = aggregate_all([mlp, hidden])
    assert list(aggs) == ["hidden", "mlp"]
    np.testing.assert_allclose(aggs["hidden"].aie["first_subject"], [0.4, 0.4])
    np.testing.assert_allclose(aggs["mlp"].aie["first_subject"], [0.1, 0.05])
    assert aggs["hidden"].count == aggs["mlp"].count == 1
    with pytest.raises(ValueError, match="no results of kind 'attn'"):
        aggregate([hidden, mlp], "attn")
    with pytest.raises(ValueError, match="odd.*kind 'resid'"):
        aggregate_all([hidden, make_result(5, (2, 3), kind="resid", name="odd")])


def test_mixed_layer_counts_within_a_kind_are_an_error():
    with pytest.raises(ValueError, match="mixes layer counts.*p2.* has 3"):
        aggregate(
            [make_result(5, (2, 3), name="p1"), make_result(5, (2, 3), n_layers=3, name="p2")], "hidden"
        )
    # Different kinds may differ.
    aggregate_all([make_result(5, (2, 3)), make_result(5, (2, 3), kind="mlp", n_layers=3)])


def test_modalities_split_and_json_format():
    text = make_result(5, (2, 3), low=0.1, set_rows={4: [0.5, 0.3]})
    speech = make_result(5, (1, 3), low=0.3, set_rows={4: [0.4, 0.4]}, modality="speech")
    split = aggregate_by_modality([speech, text])
    assert list(split) == ["text", "speech"]
    np.testing.assert_allclose(split["text"]["hidden"].aie["last"], [0.4, 0.2])
    np.testing.assert_allclose(split["speech"]["hidden"].aie["last"], [0.1, 0.1])
    pooled = aggregate_all([text, speech])
    assert pooled["hidden"].modality == "mixed"
    document = to_aie_json(pooled, split)
    entry = document["hidden"]
    assert set(document) == {"hidden"}
    assert {"count", "low_score_mean", "high_score_mean", "aie"} <= set(entry)
    assert set(entry["aie"]) == set(CATEGORIES)
    assert entry["count"] == 2 and entry["low_score_mean"] == pytest.approx(0.2)
    assert entry["by_modality"]["speech"]["aie"]["last"] == pytest.approx([0.1, 0.1])
    assert entry["by_modality"]["text"]["modality"] == "text"
    # A single modality has no by_modality block.
    assert "by_modality" not in to_aie_json(split["text"], {"text": split["text"]})["hidden"]


def test_load_results_skips_non_results_and_reports_bad_files(tmp_path):
    (tmp_path / "sub").mkdir()
    write_result(tmp_path / "a.json", make_result(5, (2, 3)))
    write_result(tmp_path / "sub" / "b.json", make_result(5, (2, 3), kind="mlp"))
    (tmp_path / "aie.json").write_text(json.dumps({"hidden": {"count": 1, "aie": {}}}))
    (tmp_path / "manifest.json").write_text(json.dumps([{"id": 1}]))
    (tmp_path / "rejected.json").write_text(json.dumps({"correct_prediction": False}))
    (tmp_path / "corrupt.json").write_text('{"scores": [[0.1')
    write_result(tmp_path / "at_end.json", make_result(5, (2, 5)))
    (tmp_path / "unstamped.json").write_text(json.dumps(make_result(5, (2, 3))))  # no checksum: not trusted
    problems: list[str] = []
    results = load_results(tmp_path, problems)
    assert sorted(r["name"] for r in results) == ["a", "b"]
    assert len(problems) == 3
    assert f"{tmp_path / 'unstamped.json'}: no checksum recorded (written before checksums, or edited)" in problems
    assert any(str(tmp_path / "corrupt.json") in p and "JSON" in p for p in problems)
    assert any(str(tmp_path / "at_end.json") in p and "ends the prompt" in p for p in problems)
    with pytest.warns(UserWarning, match="corrupt.json"):
        load_results([tmp_path / "corrupt.json", tmp_path / "a.json"])
    with pytest.raises(FileNotFoundError, match="missing"):
        load_results(tmp_path / "missing")


def test_row_ie_takes_each_rows_own_low_score():
    # Further tokens exist only in the first prompt, whose corrupted score (0.1) is below the other's
    # (0.5): every further row equals its own prompt's low score (IE 0), yet ROME's AIE subtracts the
    # mean low over both prompts, 0.3, and reports -0.2 there. row_ie says 0.
    with_further = make_result(8, (2, 4), low=0.1, high=0.9, n_layers=3, set_rows={3: [0.6, 0.2, 0.1]})
    without = make_result(6, (2, 4), low=0.5, high=0.9, n_layers=3, set_rows={3: [0.9, 0.7, 0.5]})
    agg = aggregate([with_further, without], "hidden")
    assert agg.row_counts["further"] == 2
    np.testing.assert_allclose(agg.aie["further"], [-0.2, -0.2, -0.2])
    np.testing.assert_allclose(agg.row_ie["further"], [0.0, 0.0, 0.0])
    # a category every prompt has: the mean of (row - own low), i.e. ((0.6-0.1) + (0.9-0.5)) / 2 at layer 0
    np.testing.assert_allclose(agg.row_ie["last_subject"], [0.45, 0.15, 0.0])
    np.testing.assert_allclose(agg.aie["last_subject"], agg.row_ie["last_subject"])  # equal counts, so equal here
    same = aggregate([make_result(7, (2, 4), set_rows={5: [0.3, 0.2]}), make_result(7, (2, 4))], "hidden")
    for name in same.aie:  # equal low scores: the two agree everywhere
        np.testing.assert_allclose(same.row_ie[name], same.aie[name])
