"""Attribution patching (spiritlens.traces.attribution) against references written here.

- Plain AtP: every cell equals f(0) + f'(0), where f(eps) is the score of the corrupted run with the
  cell's states moved to ``corrupted + eps * (clean - corrupted)`` (every layer of a window, every
  position of a row), run through the TransformerBridge with ``run_with_hooks`` and differentiated
  by autograd in the scalar eps: the linearisation along (clean - corrupted) at the corrupted state.
- QK fix: each term equals the derivative of a plain-torch Llama forward (written here from the HF
  weights) in which block m's attention pattern is frozen at ``A + eps * (A_exact - A)``.
- Screen, then verify: the exact engine's traced cells equal tests/reference_tracing.py, the
  others are NaN; the screen's result goes through aggregate and the figures.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from reference_tracing import linearised_reference as _linearised, reference_trace

from spiritlens.traces import Row, Tracer, TraceResult, prepare_prompt, trace, trace_kinds
from spiritlens.model.llama import LlamaStack
from spiritlens.traces.attribution import attribution_scores

PROMPT, SUBJECT = "The Space Needle is located in the city of", "Space Needle"
SAMPLES, NU, SEED = 3, 1.0, 1
HOOK = {"hidden": "blocks.{}.hook_resid_post", "mlp": "blocks.{}.hook_mlp_out", "attn": "blocks.{}.hook_attn_out"}


def linearised_reference(model, ids, b, e, kind, rows, **kwargs):
    return _linearised(model, ids, b, e, kind, rows, samples=SAMPLES, nu=NU, seed=SEED, **kwargs)


@pytest.fixture(scope="module")
def tracer(tiny_model):
    return Tracer(tiny_model, prepare_prompt(tiny_model, PROMPT, SUBJECT), samples=SAMPLES, noise=NU, seed=SEED)


@pytest.mark.parametrize("kind", ["hidden", "mlp", "attn"])
def test_every_cell_is_the_linearisation_along_clean_minus_corrupted(tiny_model, tracer, kind):
    ids = tracer.prompt.input_ids
    b, e = tracer.prompt.subject_range
    T = len(ids)
    rows = [Row(str(t), [t]) for t in range(T)]
    estimate = attribution_scores(tracer, kind, rows, window=3)
    reference = linearised_reference(tiny_model, ids, b, e, kind, [[t] for t in range(T)], window=3,
                                     answer=tracer.answer_id)
    assert np.isfinite(estimate).all()
    if kind == "hidden":  # known without a run, as the exact engine: high at the last position, else low
        assert estimate[-1, -1] == tracer.high_score and (estimate[:-1, -1] == tracer.low_score).all()
        estimate, reference = estimate[:, :-1], reference[:, :-1]
    np.testing.assert_allclose(estimate, reference, atol=1e-7, rtol=0)
    assert np.abs(estimate - tracer.low_score).max() > 1e-4  # the terms are not all zero


def test_group_rows_sum_their_positions_and_windows_their_layers(tiny_model, tracer):
    ids = tracer.prompt.input_ids
    b, e = tracer.prompt.subject_range
    groups = [[0, 1], [b, b + 1, b + 2], [e, e + 2], [len(ids) - 2, len(ids) - 1]]
    rows = [Row(f"g{i}", g) for i, g in enumerate(groups)]
    for kind in ("mlp", "attn"):
        estimate = attribution_scores(tracer, kind, rows, window=2)
        reference = linearised_reference(tiny_model, ids, b, e, kind, groups, window=2, answer=tracer.answer_id)
        np.testing.assert_allclose(estimate, reference, atol=1e-7, rtol=0)


def test_gradient_pass_reproduces_the_corrupted_run(tiny_model, tracer):
    grads = tracer.run.gradients()
    b, e = tracer.prompt.subject_range
    z = torch.from_numpy(NU * np.random.RandomState(SEED).randn(SAMPLES, e - b, tiny_model.cfg.d_model))

    def noise(act, hook):
        act[:, b:e] += z
        return act

    ids = torch.tensor([tracer.prompt.input_ids] * SAMPLES)
    with torch.no_grad(), tiny_model.hooks(fwd_hooks=[("hook_embed", noise)]):
        logits, cache = tiny_model.run_with_cache(ids)
    low = float(torch.softmax(logits[:, -1].float(), dim=-1)[:, tracer.answer_id].mean())
    assert abs(grads.score - low) <= 1e-6 and abs(tracer.low_score - low) <= 1e-6
    for layer in range(tracer.n_layers):  # resid_pre of every block, as the bridge caches it
        torch.testing.assert_close(grads.pre[layer], cache[f"blocks.{layer}.hook_resid_pre"], atol=1e-5, rtol=0)


# ------------------------------------------------------------------ QK fix
def frozen_pattern_reference(hf, tracer, kind, layer, positions):
    """The QK-fixed term of one (layer, positions), from a plain-torch Llama forward written here.

    Block ``layer`` is run with the cell's restoration to get the restored input of block
    m = layer + 1 (``target``; it differs from the corrupted one at ``positions`` only). The term
    is the derivative in eps of the score when block m's input is ``x + eps (target - x)`` and its
    attention pattern is frozen at ``A + eps (A_target - A)``: linear everywhere except through
    block m's softmax, which is taken exactly."""
    cfg = hf.config
    S = SAMPLES
    H, hd = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    KV = cfg.num_key_value_heads
    pre0 = tracer.run.corrupted_states["pre"][0].detach()
    T = pre0.shape[1]
    cos, sin = hf.model.rotary_emb(pre0, torch.arange(T)[None])
    mask = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)

    def norm(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps))

    def rot(x):
        return torch.cat((-x[..., hd // 2:], x[..., :hd // 2]), dim=-1)

    def heads(x, n=H):  # [S, T, n * hd] -> [S, H, T, hd], key/value heads repeated to the query heads
        return x.view(S, T, n, hd).transpose(1, 2).repeat_interleave(H // n, dim=1)

    def pattern_of(block, x):
        h = norm(x, block.input_layernorm.weight)
        q, k = heads(block.self_attn.q_proj(h)), heads(block.self_attn.k_proj(h), KV)
        q, k = q * cos[:, None] + rot(q) * sin[:, None], k * cos[:, None] + rot(k) * sin[:, None]
        return torch.softmax(q @ k.transpose(2, 3) / hd ** 0.5 + mask, dim=-1)

    clean = tracer.clean_states(kind)[layer]
    P = list(positions)

    def run_block(block, x, pattern=None, restore=False):
        h = norm(x, block.input_layernorm.weight)
        v = heads(block.self_attn.v_proj(h), KV)
        if pattern is None:
            pattern = pattern_of(block, x)
        a = block.self_attn.o_proj((pattern @ v).transpose(1, 2).reshape(S, T, -1))
        if restore and kind == "attn":
            a = a.clone()
            a[:, P] = clean[P]
        mid = x + a
        m = block.mlp(norm(mid, block.post_attention_layernorm.weight))
        if restore and kind == "mlp":
            m = m.clone()
            m[:, P] = clean[P]
        out = mid + m
        if restore and kind == "hidden":
            out = out.clone()
            out[:, P] = clean[P]
        return out

    layers = hf.model.layers
    m = layer + 1
    with torch.no_grad():
        x = pre0
        for j in range(layer):
            x = run_block(layers[j], x)
        corrupted, target = run_block(layers[layer], x), run_block(layers[layer], x, restore=True)
        base, moved = pattern_of(layers[m], corrupted), pattern_of(layers[m], target)
    eps = torch.zeros((), requires_grad=True)
    x = corrupted + eps * (target - corrupted)
    x = run_block(layers[m], x, pattern=base + eps * (moved - base))
    for j in range(m + 1, len(layers)):
        x = run_block(layers[j], x)
    logits = hf.lm_head(hf.model.norm(x[:, -1]))
    score = torch.softmax(logits, dim=-1)[:, tracer.answer_id].mean()
    (slope,) = torch.autograd.grad(score, eps)
    return float(slope)


@pytest.mark.parametrize("kind", ["hidden", "mlp", "attn"])
def test_qk_fix_terms_equal_a_frozen_pattern_reference(tiny_model, hf_tiny_model, tracer, kind):
    from spiritlens.traces.attribution import qk_terms

    grads = tracer.run.gradients()
    b, e = tracer.prompt.subject_range
    groups = [[b], [e - 1], [b, e], [b + 1, len(tracer.prompt.input_ids) - 1]]
    for layer in (0, tracer.n_layers - 2):
        got = qk_terms(kind, grads, tracer.clean_states(kind), layer, groups, LlamaStack(tiny_model.hf_model))
        want = [frozen_pattern_reference(hf_tiny_model, tracer, kind, layer, g) for g in groups]
        np.testing.assert_allclose(got, want, atol=1e-7, rtol=0)


# ------------------------------------------------------------------ method, screen and verify
def test_method_is_recorded_and_defaults_to_exact(tiny_model, tmp_path):
    exact = trace(tiny_model, PROMPT, SUBJECT, kind="mlp", samples=SAMPLES, noise=NU)
    screen = trace(tiny_model, PROMPT, SUBJECT, kind="mlp", samples=SAMPLES, noise=NU, method="attribution")
    assert exact.method == "exact" and screen.method == "attribution"
    assert (screen.low_score, screen.high_score) == (exact.low_score, exact.high_score)
    path = screen.save(tmp_path / "screen.json")
    assert json.loads(path.read_text())["method"] == "attribution"
    assert TraceResult.load(path).method == "attribution"
    data = exact.to_json()
    del data["method"]  # results written before the field existed
    assert TraceResult.from_json(data).method == "exact"
    with pytest.raises(ValueError, match="unknown method 'atp'"):
        trace(tiny_model, PROMPT, SUBJECT, samples=SAMPLES, noise=NU, method="atp")


def test_exact_trace_of_screened_cells_equals_the_plain_reference(tiny_model):
    screen = trace(tiny_model, PROMPT, SUBJECT, kind="attn", samples=SAMPLES, noise=NU, method="attribution",
                   window=3, verify_top=6)
    cells = [(c["row"], c["layer"]) for c in screen.extra["verification"]["cells"]]
    assert len(cells) == 6 and len(set(cells)) == 6
    effects = screen.indirect_effects
    b = screen.subject_range[0]
    live = [(r, l) for r in range(b, effects.shape[0]) for l in range(effects.shape[1])]
    assert sorted(effects[c] for c in cells) == sorted(sorted(effects[c] for c in live)[-6:])  # the top 6
    exact = trace(tiny_model, PROMPT, SUBJECT, kind="attn", samples=SAMPLES, noise=NU, window=3, cells=cells)
    ids = exact.input_ids
    table, low, _, _ = reference_trace(tiny_model, ids, *exact.subject_range, "attn", samples=SAMPLES, nu=NU,
                                       seed=SEED, window=3, answer=exact.answer_id)
    chosen = np.zeros(exact.scores.shape, bool)
    chosen[tuple(np.array(cells).T)] = True
    assert np.isnan(exact.scores[~chosen]).all()
    assert np.abs(exact.scores[chosen] - table[chosen]).max() <= 1e-6
    assert exact.extra["cells"] == sorted([list(c) for c in cells])
    record = screen.extra["verification"]
    for cell in record["cells"]:
        assert cell["exact_ie"] == pytest.approx(table[cell["row"], cell["layer"]] - low, abs=1e-6)
        te = screen.high_score - screen.low_score  # an estimate beyond the total effect counts as the TE
        assert cell["confirmed"] == (cell["exact_ie"] > 0 and cell["exact_ie"] >= 0.5 * min(cell["estimated_ie"], te))
    assert record["confirmed"] == sum(c["confirmed"] for c in record["cells"])


def test_cells_are_checked(tiny_model):
    with pytest.raises(ValueError, match=r"cell \(99, 0\) is outside"):
        trace(tiny_model, PROMPT, SUBJECT, samples=SAMPLES, noise=NU, cells=[(99, 0)])
    with pytest.raises(ValueError, match="cells restricts the exact method"):
        trace(tiny_model, PROMPT, SUBJECT, samples=SAMPLES, noise=NU, cells=[(3, 0)], method="attribution")
    with pytest.raises(ValueError, match="verify_top must be an integer >= 1"):
        trace(tiny_model, PROMPT, SUBJECT, samples=SAMPLES, noise=NU, method="attribution", verify_top=0)
    with pytest.raises(ValueError, match="verify_top checks a screen"):
        trace(tiny_model, PROMPT, SUBJECT, samples=SAMPLES, noise=NU, verify_top=3)


def test_a_screen_goes_through_aggregate_and_the_figures(tiny_model, tmp_path):
    from spiritlens.aggregates import aggregate_by_modality
    from spiritlens.figures.grid import plot_aie_grid, plot_aie_lines
    from spiritlens.figures.heatmap import plot_trace_heatmap

    results = []
    for prompt, subject in ((PROMPT, SUBJECT), ("The Eiffel Tower is in the city of", "Eiffel Tower")):
        for result in trace_kinds(tiny_model, prompt, subject, samples=SAMPLES, noise=NU,
                                  method="attribution_qk").values():
            results.append(result.to_json())
    groups = aggregate_by_modality(results)
    matrix = groups["text"]["mlp"].aie_matrix()  # [6 categories, L]; 2-token subjects: no middle rows (NaN)
    assert matrix.shape[1] == tiny_model.cfg.n_layers
    assert np.isfinite(np.delete(matrix, 1, axis=0)).all() and np.isnan(matrix[1]).all()
    assert plot_aie_grid(groups, tmp_path / "grid.png").stat().st_size > 0
    assert plot_aie_lines(groups, tmp_path / "lines.png").stat().st_size > 0
    assert plot_trace_heatmap(results[0], tmp_path / "heat.png").stat().st_size > 0


def test_a_spoken_prompts_text_token_groups_are_the_rows(tiny_model):
    """S->T layout (BOS, [Speech], units, [Text]) with the text-token groups a spoken prompt gets:
    ``trace(..., method="attribution")`` estimates the group rows, each the linearisation of
    restoring the whole group."""
    from spiritlens.traces import TracePrompt

    vocab = tiny_model.vocab
    ids = [vocab.bos_id, vocab.speech_marker_id] + [vocab.hubert_ids[(7 * k) % 50] for k in range(12)] \
        + [vocab.text_marker_id]
    groups = [Row("<s>", [0]), Row("[Speech]", [1]), Row(" the", [2, 3, 4]), Row(" space", [5, 6]),
              Row(" needle", [7, 8, 9]), Row(" is in", [10, 11, 12, 13]), Row("[Text]", [14])]
    prompt = TracePrompt(ids, [str(i) for i in ids], (5, 10), modality="speech", groups=groups,
                         group_subject_rows=(3, 5), group_ignored_rows=[0, 1])
    for kind in ("hidden", "attn"):
        result = trace(tiny_model, prompt, kind=kind, samples=SAMPLES, noise=NU, window=3, method="attribution")
        assert [r.positions for r in result.rows] == [g.positions for g in groups]
        assert result.subject_rows == (3, 5) and result.method == "attribution"
        reference = linearised_reference(tiny_model, ids, 5, 10, kind, [g.positions for g in groups], window=3,
                                         answer=result.answer_id)
        live = result.scores[2:, :-1] if kind == "hidden" else result.scores[2:]
        want = reference[2:, :-1] if kind == "hidden" else reference[2:]
        np.testing.assert_allclose(live, want, atol=1e-7, rtol=0)


def test_cli_trace_method_and_verify_top(tiny_base_dir, tiny_model, tmp_path, capsys):
    from spiritlens.cli import main

    base = ["trace", "--model", str(tiny_base_dir), "--prompt", PROMPT, "--subject", SUBJECT, "--kind", "mlp",
            "--samples", str(SAMPLES), "--noise", str(NU), "--window", "3"]
    out = tmp_path / "atp.json"
    assert main(base + ["--json", str(out), "--method", "attribution", "--verify-top", "4"]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    direct = trace(tiny_model, PROMPT, SUBJECT, kind="mlp", samples=SAMPLES, noise=NU, window=3, method="attribution")
    assert data["method"] == "attribution" and np.allclose(data["scores"], direct.scores, atol=1e-9)
    record = data["verification"]
    assert record["verify_top"] == 4 and len(record["cells"]) == 4
    assert f"verified: {record['confirmed']} of the estimate's top 4 cells confirmed" in printed
    assert main(base + ["--json", str(tmp_path / "x.json"), "--verify-top", "4"]) == 2
    assert "--verify-top checks a screen" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_whole_target_and_replace_noise_are_linearised_too(tiny_model):
    """``target_rule="sequence"`` (a row's score: the product over the target's pieces) and ROME's
    replace quirk (restored runs on replaced embeddings, low_score additive)."""
    for kwargs in (dict(target="Mountain View", target_rule="sequence"), dict(replace=True)):
        result = trace(tiny_model, PROMPT, SUBJECT, kind="mlp", samples=SAMPLES, noise=NU, window=3,
                       method="attribution", **kwargs)
        ids = result.input_ids
        pieces = result.target_ids if "target" in kwargs else None
        reference = linearised_reference(tiny_model, ids, *result.subject_range, "mlp",
                                         [[t] for t in range(len(ids))], window=3, answer=result.answer_id,
                                         pieces=pieces, replace=kwargs.get("replace", False))
        scale = np.abs(reference).max()  # a two-piece target's probability is ~1e-10 on this random model
        np.testing.assert_allclose(result.scores, reference, atol=1e-5 * scale, rtol=0)
        assert np.abs(result.scores - result.low_score).max() > 1e-2 * scale  # the terms are not all zero


@pytest.fixture(scope="module")
def gqa(tmp_path_factory):
    from transformers import LlamaForCausalLM

    from spiritlens import HookedSpiritLM
    from spiritlens.synthetic.tiny import write_tiny_model

    directory = write_tiny_model(tmp_path_factory.mktemp("gqa") / "m", num_hidden_layers=3, num_attention_heads=4,
                                 num_key_value_heads=2, initializer_range=0.3)
    model = HookedSpiritLM.from_pretrained(directory, dtype="float32")
    hf = LlamaForCausalLM.from_pretrained(directory, attn_implementation="eager", dtype="float32").eval()
    return model, hf


def test_grouped_query_attention(gqa):
    from spiritlens.traces.attribution import qk_terms

    model, hf = gqa
    tracer = Tracer(model, prepare_prompt(model, PROMPT, SUBJECT), samples=SAMPLES, noise=NU, seed=SEED)
    ids = tracer.prompt.input_ids
    b, e = tracer.prompt.subject_range
    rows = [Row(str(t), [t]) for t in range(len(ids))]
    estimate = attribution_scores(tracer, "attn", rows, window=2)
    reference = linearised_reference(model, ids, b, e, "attn", [[t] for t in range(len(ids))], window=2,
                                     answer=tracer.answer_id)
    np.testing.assert_allclose(estimate, reference, atol=1e-7, rtol=0)
    grads = tracer.run.gradients()
    groups = [[b], [b, e]]
    got = qk_terms("hidden", grads, tracer.clean_states("hidden"), 0, groups, LlamaStack(model.hf_model))
    want = [frozen_pattern_reference(hf, tracer, "hidden", 0, g) for g in groups]
    np.testing.assert_allclose(got, want, atol=1e-7, rtol=0)


def test_graddrop_magnitudes_equal_dropped_linearisations(tiny_model, tracer):
    """AtP*'s GradDrop: per cell, sum over layers g of |the cell's linearisation with block g's outputs
    detached| / (L - 1), against the bridge reference with those outputs detached."""
    from spiritlens.traces.attribution import graddrop_magnitudes

    ids = tracer.prompt.input_ids
    b, e = tracer.prompt.subject_range
    T, L = len(ids), tracer.n_layers
    rows = [Row(str(t), [t]) for t in range(T)]
    before = attribution_scores(tracer, "mlp", rows, window=2)
    for kind in ("hidden", "mlp"):
        got = graddrop_magnitudes(tracer, kind, rows, window=2)
        slopes = np.stack([linearised_reference(tiny_model, ids, b, e, kind, [[t] for t in range(b, T)], window=2,
                                                answer=tracer.answer_id, drop=g, slope_only=True) for g in range(L)])
        want = np.abs(slopes).sum(axis=0) / (L - 1)
        if kind == "hidden":
            got, want = got[:, :-1], want[:, :-1]
        np.testing.assert_allclose(got[b:], want, atol=1e-7, rtol=0)
        assert (got[:b] == 0).all() and got.max() > 1e-4
    # the gradient pass redone with its graph kept gives the same plain estimate
    np.testing.assert_allclose(attribution_scores(tracer, "mlp", rows, window=2), before, atol=1e-12, rtol=0)


def test_verify_top_by_graddrop_traces_the_largest_magnitudes(tiny_model, tracer):
    from spiritlens.traces.attribution import graddrop_magnitudes

    screen = trace(tiny_model, PROMPT, SUBJECT, kind="hidden", samples=SAMPLES, noise=NU, seed=SEED,
                   method="attribution", verify_top=5, verify_rank="graddrop")
    record = screen.extra["verification"]
    assert record["rank"] == "graddrop" and record["verify_top"] == 5
    magnitudes = graddrop_magnitudes(tracer, "hidden", screen.rows)  # the same prompt, noise and rows
    cells = [(c["row"], c["layer"]) for c in record["cells"]]
    assert sorted(magnitudes[c] for c in cells) == sorted(np.sort(magnitudes.ravel())[-5:])
    table, low, _, _ = reference_trace(tiny_model, screen.input_ids, *screen.subject_range, "hidden", samples=SAMPLES,
                                       nu=NU, seed=SEED, answer=screen.answer_id)
    for cell in record["cells"]:
        assert cell["exact_ie"] == pytest.approx(table[cell["row"], cell["layer"]] - low, abs=1e-6)
    with pytest.raises(ValueError, match="unknown verify_rank 'gd'"):
        trace(tiny_model, PROMPT, SUBJECT, samples=SAMPLES, noise=NU, method="attribution", verify_top=2,
              verify_rank="gd")
