"""The tracing engine against the plain per-cell reference in ``tests/reference_tracing.py``."""

from __future__ import annotations

import numpy as np
import pytest

from spiritlens import trace
from spiritlens.traces import Row, TracePrompt, trace_kinds

from reference_tracing import reference_trace

PROMPT = "The Space Needle is located in the city of"
SUBJECT = "Space Needle"
@pytest.fixture(scope="module")
def prompt_ids(tiny_model):
    ids, token_map = tiny_model.encode(PROMPT)
    b, e = token_map.find_text(SUBJECT)
    return ids[0].tolist(), b, e


CASES = [
    dict(kind="hidden"),
    dict(kind="mlp", window=10),
    dict(kind="mlp", window=3),
    dict(kind="attn", window=10),
    dict(kind="attn", window=3),
    dict(kind="mlp", window=1),
    dict(kind="attn", window=1),
    dict(kind="hidden", replace=True),
    dict(kind="mlp", window=3, replace=True, low_score_follows_replace=True),
    dict(kind="hidden", noise="u1.5"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_engine_matches_plain_reference(tiny_model, prompt_ids, case):
    ids, b, e = prompt_ids
    case = dict(case)
    kind = case.pop("kind")
    noise = case.pop("noise", 1.2)
    samples = 5
    result = trace(tiny_model, PROMPT, SUBJECT, kind=kind, samples=samples, noise=noise, seed=3,
                   max_batch_cells=4, **case)
    uniform = isinstance(noise, str)
    nu = float(noise[1:]) if uniform else noise
    table, low, high, answer = reference_trace(
        tiny_model, ids, b, e, kind, samples=samples, nu=nu, seed=3, window=case.get("window", 10),
        replace=case.get("replace", False), fix_low=case.get("low_score_follows_replace", False),
        uniform=uniform)
    # The reference takes ROME's full-vocabulary top-1; the engine the top-1 among text tokens
    # (spiritlens.traces.answer). They are the same token only when ROME's is a text token, as here.
    assert answer not in set(tiny_model.forbidden_token_ids("text"))
    assert result.answer_id == answer and result.answer_rule == "top1_text"
    assert abs(result.high_score - high) <= 1e-6
    assert abs(result.low_score - low) <= 1e-6
    assert result.scores.shape == table.shape == (len(ids), tiny_model.cfg.n_layers)
    diff = np.abs(result.scores - table).max()
    assert diff <= 1e-6, f"max |engine - reference| = {diff:.3g}"
    # The trace is not trivial: restoring changes the answer's probability somewhere.
    assert np.abs(table - low).max() > 1e-2
    assert result.noise == nu and result.samples == samples and result.seed == 3


def test_invariants_of_rows_before_the_subject_and_the_last_layer(tiny_model, prompt_ids):
    ids, b, e = prompt_ids
    results = trace_kinds(tiny_model, PROMPT, SUBJECT, samples=4, noise=1.0)
    T, L = len(ids), tiny_model.cfg.n_layers
    for kind, result in results.items():
        assert np.all(result.scores[:b] == result.low_score), kind
    hidden = results["hidden"]
    assert np.all(hidden.scores[: T - 1, L - 1] == hidden.low_score)
    assert hidden.scores[T - 1, L - 1] == hidden.high_score
    # clean and corrupted runs are shared by the kinds
    assert len({r.low_score for r in results.values()}) == 1
    assert len({r.high_score for r in results.values()}) == 1


def test_position_groups_match_the_reference_and_mean_mode(tiny_model, prompt_ids):
    ids, b, e = prompt_ids
    T = len(ids)
    groups = [Row("<s>", [0]), Row("▁ [Text] The", list(range(1, b))), Row("Space Needle", list(range(b, e))),
              Row("rest", list(range(e, T - 1))), Row("last", [T - 1])]
    prompt = TracePrompt(ids, [str(i) for i in ids], (b, e), groups=groups, group_subject_rows=(2, 3))
    grouped = trace(tiny_model, prompt, kind="mlp", window=3, samples=4, noise=1.0)  # row_mode "auto": groups
    table, low, _, _ = reference_trace(tiny_model, ids, b, e, "mlp", samples=4, nu=1.0, window=3,
                                       rows=[g.positions for g in groups])
    assert np.abs(grouped.scores - table).max() <= 1e-6
    assert grouped.subject_rows == (2, 3) and [r.label for r in grouped.rows][2] == "Space Needle"
    per_position = trace(tiny_model, prompt, kind="mlp", window=3, samples=4, noise=1.0, row_mode="positions")
    assert per_position.scores.shape[0] == T
    mean = trace(tiny_model, prompt, kind="mlp", window=3, samples=4, noise=1.0, row_mode="mean")
    expected = per_position.scores[list(range(e, T - 1))].mean(axis=0)
    assert np.allclose(mean.scores[3], expected, atol=1e-12)
    assert mean.scores.shape == (len(groups), tiny_model.cfg.n_layers)


def test_batch_size_does_not_change_results(tiny_model):
    one = trace(tiny_model, PROMPT, SUBJECT, kind="attn", samples=3, noise=1.0, max_batch_cells=1)
    many = trace(tiny_model, PROMPT, SUBJECT, kind="attn", samples=3, noise=1.0)
    assert np.abs(one.scores - many.scores).max() <= 1e-6


def test_explicit_target_and_subject_range(tiny_model, prompt_ids):
    ids, b, e = prompt_ids
    by_string = trace(tiny_model, PROMPT, SUBJECT, samples=2, noise=1.0, target=" Seattle")
    seattle = tiny_model.tokenizer.encode(" Seattle", add_special_tokens=False)
    assert by_string.answer_id in seattle
    by_range = trace(tiny_model, ids, subject_range=(b, e), samples=2, noise=1.0, target=by_string.answer_id)
    assert np.array_equal(by_range.scores, by_string.scores)
    assert by_range.subject_range == (b, e)
