"""The backbone comparison (spiritlens.aggregates.compare) against a brute-force computation written here:
per-prompt effects by hand from the scores, the grids by numpy's nanmean, r by numpy.corrcoef, and the
bootstrap as a plain loop with the same seed; on result files written as `spiritlens aggregate` reads them."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from helpers import make_result, write_result

from spiritlens.aggregates import load_results
from spiritlens.aggregates.compare import compare_to_backbone, grid_correlation
from spiritlens.figures.outputs import write_aggregate_outputs

N_LAYERS, RESAMPLES, SEED = 5, 300, 7


def prompt(known_id: int, rng, *, role=None, modality="text", kind="hidden", n_layers=N_LAYERS, scale=1.0) -> dict:
    """A result whose subject length and prompt length vary with ``known_id`` (so middle subject and
    further tokens exist in some prompts only), every cell a random p well above the numerical floor."""
    n_rows = 6 + known_id % 3
    subject = (1, 3 + known_id % 2)
    low = 0.05 + 0.01 * known_id
    rows = {r: list(low + scale * rng.uniform(0.0, 0.5, n_layers)) for r in range(1, n_rows)}
    extra = {"model_role": role} if role else {}
    return make_result(n_rows, subject, low=low, high=0.9, n_layers=n_layers, kind=kind, set_rows=rows,
                       modality=modality, known_id=known_id, prompt=f"prompt {known_id} {role} {modality}", **extra)


def brute_effects(result: dict) -> np.ndarray:
    """[6, L] by hand: each category's rows (ROME's six, from the subject span), mean of score - low."""
    scores, low = np.asarray(result["scores"]), result["low_score"]
    b, e = result["subject_rows"]
    n = len(scores)
    rows = [[b], list(range(b + 1, e - 1)), [e - 1], [e], list(range(e + 1, n - 1)), [n - 1]]
    out = np.full((6, scores.shape[1]), np.nan)
    for c, rs in enumerate(rows):
        if rs:
            out[c] = np.mean([scores[r] - low for r in rs], axis=0)
    return out


def brute_r(a: np.ndarray, b: np.ndarray) -> float:
    both = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[both], b[both])[0, 1])


def brute_comparison(first: list[np.ndarray], second: list[np.ndarray], rows: slice) -> tuple[float, list[float]]:
    """r of the mean grids and the 2.5/97.5 percentiles of r over a plain bootstrap loop."""
    first, second = np.stack(first)[:, rows], np.stack(second)[:, rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of a category no drawn prompt has
        r = brute_r(np.nanmean(first, axis=0), np.nanmean(second, axis=0))
        rng = np.random.default_rng(SEED)
        values = []
        for _ in range(RESAMPLES):
            draw = rng.integers(0, len(first), size=len(first))
            values.append(brute_r(np.nanmean(first[draw], axis=0), np.nanmean(second[draw], axis=0)))
    return r, list(np.percentile(values, [2.5, 97.5]))


def test_the_comparison_equals_a_brute_force_bootstrap(tmp_path, capsys):
    rng = np.random.default_rng(0)
    backbone = {k: prompt(k, rng, role="backbone") for k in range(0, 8)}   # the backbone kept 0..7
    text = {k: prompt(k, rng) for k in range(2, 10)}                       # SpiritLM T→T kept 2..9
    speech = {k: prompt(k, rng, modality="speech", scale=0.3) for k in range(0, 6)}
    folder = tmp_path / "results"
    folder.mkdir()
    for name, group in (("b", backbone), ("t", text), ("s", speech)):
        for k, result in group.items():
            write_result(folder / f"{name}_{k}.json", result)
    results = load_results(folder)
    assert len(results) == 22
    document = compare_to_backbone(results, resamples=RESAMPLES, seed=SEED)
    assert document["resamples"] == RESAMPLES and document["seed"] == SEED
    for group, other in (("text", text), ("speech", speech)):
        shared = sorted(set(backbone) & set(other))
        pair = document["pairs"][group]
        assert pair["known_ids"] == shared  # only the facts both kept, paired by Known id
        first = [brute_effects(backbone[k]) for k in shared]
        second = [brute_effects(other[k]) for k in shared]
        for variant, rows in (("grid", slice(0, 6)), ("without_last", slice(0, 5))):
            entry = pair["kinds"]["hidden"][variant]
            r, ci = brute_comparison(first, second, rows)
            assert entry["prompts"] == len(shared) and entry["valid_resamples"] == RESAMPLES
            assert entry["r"] == pytest.approx(r, abs=1e-12)
            assert entry["ci95"] == pytest.approx(ci, abs=1e-12)
            assert entry["ci95"][0] < entry["ci95"][1]

    # written by the aggregate outputs, beside aie.json's own backbone entry (never pooled with SpiritLM)
    outputs = write_aggregate_outputs(results, tmp_path / "aggregate", resamples=RESAMPLES, seed=SEED)
    assert json.loads((tmp_path / "aggregate" / "comparison.json").read_text()) == document
    aie = json.loads((tmp_path / "aggregate" / "aie.json").read_text())
    assert aie["hidden"]["count"] == len(text) + len(speech)  # the pooled entry is SpiritLM's alone
    assert aie["hidden"]["by_modality"]["backbone"]["count"] == len(backbone)
    expected = np.nanmean(np.stack([brute_effects(r) for r in backbone.values()]), axis=0)
    got = np.array([[np.nan if v is None else v for v in aie["hidden"]["by_modality"]["backbone"]["effect"][c]]
                    for c in ("first_subject", "middle_subject", "last_subject", "first_subsequent", "further", "last")])
    assert np.allclose(got, expected, atol=1e-12, equal_nan=True)
    assert list(outputs.by_modality) == ["backbone", "text", "speech"]
    csv = (tmp_path / "aggregate" / "aie_hidden.csv").read_text().splitlines()
    assert {line.split(",")[1] for line in csv[1:]} == {"backbone", "text", "speech", "all"}
    all_rows = [line.split(",") for line in csv[1:] if line.split(",")[1] == "all"]
    names = ("first_subject", "middle_subject", "last_subject", "first_subsequent", "further", "last")
    have = np.stack([np.isfinite(brute_effects(r)[:, 0]) for r in list(text.values()) + list(speech.values())])
    assert all(int(row[5]) == int(have[:, names.index(row[2])].sum()) for row in all_rows)  # prompts with rows there
    assert int(have[:, 1].sum()) < len(text) + len(speech)  # (some prompts have no middle subject token)

    # `spiritlens aggregate` prints the rows under Figure 2's labels and the comparison's numbers
    from spiritlens.cli import main

    assert main(["aggregate", str(folder), "--out", str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    hidden = document["pairs"]["text"]["kinds"]["hidden"]
    assert "  backbone T→T hidden n=8 " in printed and "  SpiritLM S→T hidden n=6 " in printed
    assert f"  backbone vs SpiritLM T→T, hidden: r = {hidden['grid']['r']:.2f} (95% CI " in printed  # 1000 resamples
    assert f"6 prompts); without the last token r = {hidden['without_last']['r']:.2f} (95% CI " in printed

    # a rerun without the backbone leaves no comparison of the earlier results behind
    write_aggregate_outputs(list(text.values()), tmp_path / "aggregate")
    assert not (tmp_path / "aggregate" / "comparison.json").exists()


def test_models_of_different_depth_are_refused_not_interpolated():
    rng = np.random.default_rng(1)
    results = [prompt(k, rng, role="backbone", n_layers=6) for k in range(3)] + [prompt(k, rng) for k in range(3)]
    entry = compare_to_backbone(results, resamples=10)["pairs"]["text"]["kinds"]["hidden"]
    assert entry == {"reason": "the backbone has 6 layers, SpiritLM T→T 5: their layer grids are not compared (a "
                               "layer of one has no counterpart in the other; not interpolated)"}
    with pytest.raises(ValueError, match="has 6 layers, other 5"):
        grid_correlation(np.zeros((3, 6, 6)), np.zeros((3, 6, 5)))


def test_a_constant_grid_has_no_correlation_and_one_prompt_no_interval():
    rng = np.random.default_rng(2)
    flat = prompt(0, rng, role="backbone", scale=0.0)  # every restored cell at the corrupted score: no effect
    found = compare_to_backbone([flat, prompt(0, rng)], resamples=10)["pairs"]["text"]["kinds"]["hidden"]["grid"]
    assert found["r"] is None and found["ci95"] is None and "first grid is constant" in found["reason"]
    single = grid_correlation(np.stack([brute_effects(prompt(0, rng))]), np.stack([brute_effects(prompt(0, rng))]))
    assert single.r is not None and single.ci95 is None and single.valid_resamples == 0


def test_no_backbone_no_comparison_and_unpaired_results_say_why():
    rng = np.random.default_rng(3)
    assert compare_to_backbone([prompt(k, rng) for k in range(3)]) is None
    unpaired = [prompt(0, rng, role="backbone"), prompt(0, rng)]
    del unpaired[0]["known_id"]
    document = compare_to_backbone(unpaired, resamples=5)
    assert "has no integer known_id to pair it by" in document["pairs"]["text"]["reason"]
