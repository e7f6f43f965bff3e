"""The intervention core against references written here: every hook attached to the model acts in
every run of every analysis, or the analysis refuses in one line.

References: ROME's plain per-cell loop (tests/reference_tracing.py ``reference_trace``: full
``run_with_hooks`` forwards, so whatever is attached acts) and attribution patching's linearisation
of the hooked model (``linearised_reference``: autograd in a scalar eps through the bridge, with the
same hooks attached)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from reference_tracing import linearised_reference, reference_trace

from spiritlens import trace
from spiritlens.interventions import (AnswerScore, EmbeddingNoise, InterventionRun, MeanEmbedding, Restore,
                                      TokenSubstitution, user_hooks)
from spiritlens.model.sae import SAE
from spiritlens.traces import Tracer, prepare_prompt

PROMPT, SUBJECT = "The Space Needle is located in the city of", "Space Needle"
SAMPLES, NU, SEED = 3, 1.0, 2


@pytest.fixture(scope="module")
def prompt(tiny_model):
    ids, token_map = tiny_model.encode(PROMPT)
    return ids[0].tolist(), *token_map.find_text(SUBJECT)


def _scale_o_input(module, args):
    """A plain PyTorch forward pre-hook on an attention output projection: its input scaled by 0.3."""
    return (args[0] * 0.3,) + tuple(args[1:])


def _ablate_head(act, hook):
    act[:, :, 1] = 0
    return act


class Attached:
    """Attach one kind of hook to the tiny model for a ``with`` block (and always remove it)."""

    def __init__(self, model, kind):
        self.model, self.kind, self.handle = model, kind, None

    def __enter__(self):
        model = self.model
        if self.kind == "pytorch":
            self.handle = model.bridge.blocks[1].attn.o.register_forward_pre_hook(_scale_o_input)
        elif self.kind == "head_ablation":
            model.add_hook("blocks.1.attn.hook_z", _ablate_head)
        elif self.kind == "sae":
            torch.manual_seed(0)
            d, d_sae = model.cfg.d_model, 2 * model.cfg.d_model
            W = torch.randn(d, d_sae) / d ** 0.5
            self.context = model.saes(SAE(W, torch.zeros(d_sae), W.T.clone(), torch.zeros(d),
                                          hook_name="blocks.1.hook_resid_post"))
            self.context.__enter__()
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()
        if self.kind == "sae":
            self.context.__exit__(*exc)
        self.model.reset_hooks()


HOOK_KINDS = ["pytorch", "head_ablation", "sae"]


def test_user_hooks_are_found_by_kind_and_named(tiny_model):
    assert user_hooks(tiny_model) == []
    with Attached(tiny_model, "pytorch"):
        found = user_hooks(tiny_model)
        assert found == ["blocks.1.attn.o (PyTorch forward pre-hook)"]  # the path the hook was registered on
    with Attached(tiny_model, "head_ablation"):
        assert user_hooks(tiny_model) == ["blocks.1.attn.hook_z (TransformerLens hook)"]
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        assert user_hooks(tiny_model) == ["all modules (PyTorch global forward hook)"]
    finally:
        handle.remove()
    assert user_hooks(tiny_model) == []


@pytest.mark.parametrize("hook_kind", HOOK_KINDS)
@pytest.mark.parametrize("kind", ["hidden", "mlp"])
def test_exact_trace_under_hooks_equals_the_plain_loop(tiny_model, prompt, hook_kind, kind, caplog):
    ids, b, e = prompt
    plain = trace(tiny_model, PROMPT, SUBJECT, kind=kind, samples=SAMPLES, noise=NU, seed=SEED, window=2)
    with Attached(tiny_model, hook_kind), caplog.at_level(logging.WARNING, logger="spiritlens"):
        hooked = trace(tiny_model, PROMPT, SUBJECT, kind=kind, samples=SAMPLES, noise=NU, seed=SEED, window=2)
        table, low, high, _ = reference_trace(tiny_model, ids, b, e, kind, samples=SAMPLES, nu=NU, seed=SEED,
                                              window=2, answer=hooked.answer_id)
    assert any("hooks attached" in r.getMessage() for r in caplog.records)
    assert abs(hooked.high_score - high) <= 1e-6 and abs(hooked.low_score - low) <= 1e-6
    assert np.abs(hooked.scores - table).max() <= 1e-6
    # the hook changed the numbers: the comparison has teeth
    assert np.abs(plain.scores - hooked.scores).max() > 1e-4 or abs(plain.high_score - hooked.high_score) > 1e-4


@pytest.mark.parametrize("hook_kind", HOOK_KINDS)
@pytest.mark.parametrize("kind", ["hidden", "attn"])
def test_attribution_under_hooks_is_the_hooked_models_linearisation(tiny_model, prompt, hook_kind, kind):
    ids, b, e = prompt
    rows = [[t] for t in range(len(ids))]
    plain = trace(tiny_model, PROMPT, SUBJECT, kind=kind, samples=SAMPLES, noise=NU, seed=SEED, window=2,
                  method="attribution")
    with Attached(tiny_model, hook_kind):
        screen = trace(tiny_model, PROMPT, SUBJECT, kind=kind, samples=SAMPLES, noise=NU, seed=SEED, window=2,
                       method="attribution")
        reference = linearised_reference(tiny_model, ids, b, e, kind, rows, window=2, answer=screen.answer_id,
                                         samples=SAMPLES, nu=NU, seed=SEED)
    estimate = screen.scores
    if kind == "hidden":  # the last layer is known without a run (high at the last position, else low)
        estimate, reference = estimate[:, :-1], reference[:, :-1]
    assert np.abs(estimate - reference).max() <= 1e-5
    assert np.abs(plain.scores - screen.scores).max() > 1e-4  # the hook acted in the gradient pass


def test_attribution_refuses_what_it_cannot_linearise(tiny_model):
    args = dict(samples=SAMPLES, noise=NU, seed=SEED)
    tiny_model.add_hook("blocks.1.hook_mlp_out", lambda act, hook: act.detach())
    try:
        with pytest.raises(ValueError, match=r"^attribution patching needs the score's gradient .*blocks\.1\.hook_mlp_out"):
            trace(tiny_model, PROMPT, SUBJECT, method="attribution", **args)
    finally:
        tiny_model.reset_hooks()
    with Attached(tiny_model, "pytorch"):
        with pytest.raises(ValueError, match=r"^attribution_qk recomputes attention patterns .*\(blocks\.1\.attn\.o \(PyTorch forward pre-hook\)\)"):
            trace(tiny_model, PROMPT, SUBJECT, method="attribution_qk", **args)
    handle = tiny_model.bridge.blocks[2].register_full_backward_hook(lambda m, gi, go: None)
    try:
        with pytest.raises(ValueError, match="backward hooks are attached"):
            trace(tiny_model, PROMPT, SUBJECT, method="attribution", **args)
    finally:
        handle.remove()


def test_attribution_runs_one_corrupted_forward(tiny_model):
    """Counted at hook_embed: the clean run and one corrupted forward (with autograd), nothing else."""
    rows_seen = []

    def count(act, hook):
        rows_seen.append(act.shape[0])
        return act

    tiny_model.add_hook("hook_embed", count)
    try:
        trace(tiny_model, PROMPT, SUBJECT, kind="mlp", samples=SAMPLES, noise=NU, method="attribution")
    finally:
        tiny_model.reset_hooks()
    assert rows_seen == [1, SAMPLES]


@pytest.mark.parametrize("backend", ["suffix", "reference"])
def test_restores_from_another_prompt_equal_a_plain_loop(tiny_model, prompt, backend):
    """"Restore from another prompt": the states of a source run written at paired positions."""
    ids, b, e = prompt
    other = tiny_model.to_tokens("The Eiffel Tower is located in the city of")[0].tolist()
    nu = 0.1  # small noise: the answer keeps a probability whose changes the comparison can see
    noise = EmbeddingNoise(nu, SAMPLES, SEED, b, e, tiny_model.cfg.d_model)
    run = InterventionRun(tiny_model, ids, noise, lambda probs: AnswerScore((int(probs.argmax()),)))
    answer = run.metric.answer_ids[0]
    run.add_source("eiffel", other)
    restores = [Restore("resid_post", (layer,), (e - 1, e), "eiffel", (4, 5)) for layer in range(tiny_model.cfg.n_layers)]
    restores.append(Restore("mlp_out", (0, 1), (b, e - 1), "eiffel", (3, 4)))
    got = run.scores(restores, backend=backend)
    with torch.inference_mode():
        _, cache = tiny_model.run_with_cache(torch.tensor([other]))
    z = torch.from_numpy(nu * np.random.RandomState(SEED).randn(SAMPLES, e - b, tiny_model.cfg.d_model))

    def corrupt(act, hook):
        act[:, b:e] += z
        return act

    def write(name, dest, src):
        def hook(act, hook):
            act[:, dest] = cache[name][0, src]
            return act
        return name, hook

    expected = []
    for restore in restores:
        site = {"resid_post": "hook_resid_post", "mlp_out": "hook_mlp_out"}[restore.site]
        hooks = [("hook_embed", corrupt)] + [write(f"blocks.{l}.{site}", list(restore.positions),
                                                   list(restore.source_positions)) for l in restore.layers]
        with torch.inference_mode():
            logits = tiny_model.run_with_hooks(torch.tensor([ids] * SAMPLES), fwd_hooks=hooks)
        expected.append(float(torch.softmax(logits[:, -1].float(), dim=-1)[:, answer].mean()))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=0)  # the tiny model's answer is at p ~ 1e-3
    assert np.std(expected) > 0.1 * np.mean(expected)  # the restores differ: the comparison has teeth


@pytest.mark.parametrize("name", ["substitution", "mean"])
def test_other_corruptions_trace_as_the_plain_loop(tiny_model, prompt, name):
    ids, b, e = prompt
    if name == "substitution":
        corruption = TokenSubstitution(tuple(range(b, e)), tuple(ids[b + 1:e + 1]))
        rows = torch.tensor([ids])
        rows[0, b:e] = torch.tensor(ids[b + 1:e + 1])
        hooks = []
    else:
        corruption = MeanEmbedding.of_tokens(tiny_model, b, e)
        W = tiny_model.hf_model.get_input_embeddings().weight.detach()
        allowed = [i for i in range(W.shape[0]) if i not in set(tiny_model.forbidden_token_ids("text"))]
        mean = W[allowed].mean(dim=0)
        rows = torch.tensor([ids])

        def ablate(act, hook):
            act[:, b:e] = mean
            return act
        hooks = [("hook_embed", ablate)]
    tracer = Tracer(tiny_model, prepare_prompt(tiny_model, PROMPT, SUBJECT), corruption=corruption)
    result = tracer.result("hidden")
    assert result.extra["corruption"] == name and result.samples == 1
    with torch.inference_mode():
        _, clean = tiny_model.run_with_cache(torch.tensor([ids]))
        low = float(torch.softmax(tiny_model.run_with_hooks(rows, fwd_hooks=hooks)[0, -1], dim=-1)[result.answer_id])
        table = np.zeros((len(ids), tiny_model.cfg.n_layers))
        for t in range(len(ids)):
            for layer in range(tiny_model.cfg.n_layers):
                name_ = f"blocks.{layer}.hook_resid_post"

                def restore(act, hook, t=t, name_=name_):
                    act[:, t] = clean[name_][0, t]
                    return act
                logits = tiny_model.run_with_hooks(rows, fwd_hooks=hooks + [(name_, restore)])
                table[t, layer] = float(torch.softmax(logits[0, -1], dim=-1)[result.answer_id])
    assert abs(result.low_score - low) <= 1e-6
    # One corrupted row, so no mean over samples smooths float32 rounding: measured 2.0e-6 in float32,
    # 1.5e-7 with the model in float64 (the metric's float32 softmax left), i.e. rounding.
    assert np.abs(result.scores - table).max() <= 5e-6
    assert np.abs(table - low).max() > 1e-3


@pytest.mark.parametrize("restore, message", [
    (Restore("resid_post", (9,), (3,)), "layer 9 is outside 0..3"),
    (Restore("resid_post", (0,), (99,)), "position 99 is outside"),
    (Restore("resid_post", (0,), (3,), "nowhere"), "unknown restore source 'nowhere'"),
])
def test_bad_restores_are_one_line(tiny_model, prompt, restore, message):
    ids, b, e = prompt
    run = InterventionRun(tiny_model, ids, EmbeddingNoise(NU, 2, SEED, b, e, tiny_model.cfg.d_model), AnswerScore((5,)))
    with pytest.raises(ValueError, match=message):
        run.scores([restore])


@pytest.mark.parametrize("kwargs, message", [
    (dict(site="resid"), "unknown restore site 'resid'"),
    (dict(positions=(3, 3)), "repeat a position"),
    (dict(positions=()), "non-empty list"),
    (dict(source_positions=(1, 2)), "1 positions but 2 source positions"),
])
def test_bad_restore_specs_are_one_line(kwargs, message):
    args = dict(site="resid_post", layers=(0,), positions=(3,)) | kwargs
    with pytest.raises(ValueError, match=message):
        Restore(**args)


def test_suffix_backend_says_why_it_cannot(tiny_model, prompt):
    ids, b, e = prompt
    run = InterventionRun(tiny_model, ids, EmbeddingNoise(NU, 2, SEED, b, e, tiny_model.cfg.d_model), AnswerScore((5,)))
    two = (Restore("resid_post", (0,), (3,)), Restore("mlp_out", (1,), (4,)))
    with pytest.raises(ValueError, match="suffix backend cannot run these interventions: an intervention of 2 restores"):
        run.scores([two], backend="suffix")
    both = run.scores([two], backend="auto")  # auto hands over to the reference backend
    assert np.isfinite(both).all()
    with Attached(tiny_model, "pytorch"):
        with pytest.raises(ValueError, match="hooks attached"):
            run.scores([Restore("resid_post", (0,), (3,))], backend="suffix")


def test_noise_on_scattered_positions_equals_a_plain_loop(tiny_model, prompt):
    """EmbeddingNoise on positions that are not one range (a stream's tokens of a spoken subject)."""
    ids, b, e = prompt
    where = (b, e - 1, e + 1)
    noise = EmbeddingNoise(0.5, SAMPLES, SEED, b, e + 2, tiny_model.cfg.d_model, positions=where)
    assert noise.draw().shape == (SAMPLES, 3, tiny_model.cfg.d_model)
    run = InterventionRun(tiny_model, ids, noise, lambda probs: AnswerScore((int(probs.argmax()),)))
    restores = [Restore("resid_post", (layer,), (t,)) for t in range(b, len(ids)) for layer in range(3)]
    got = run.scores(restores)
    z = torch.from_numpy(0.5 * np.random.RandomState(SEED).randn(SAMPLES, 3, tiny_model.cfg.d_model))

    def corrupt(act, hook):
        act[:, list(where)] += z
        return act

    with torch.inference_mode():
        _, clean = tiny_model.run_with_cache(torch.tensor([ids]))
        rows = torch.tensor([ids] * SAMPLES)
        answer = run.metric.answer_ids[0]
        low = float(torch.softmax(tiny_model.run_with_hooks(rows, fwd_hooks=[("hook_embed", corrupt)])[:, -1], -1)
                    [:, answer].mean())
        expected = []
        for restore in restores:
            name = f"blocks.{restore.layers[0]}.hook_resid_post"

            def put(act, hook, t=restore.positions[0], name=name):
                act[:, t] = clean[name][0, t]
                return act
            logits = tiny_model.run_with_hooks(rows, fwd_hooks=[("hook_embed", corrupt), (name, put)])
            expected.append(float(torch.softmax(logits[:, -1], -1)[:, answer].mean()))
    assert abs(run.low_score - low) <= 1e-6
    assert np.abs(got - np.array(expected)).max() <= 1e-6
    with pytest.raises(ValueError, match="must be non-negative and span"):
        EmbeddingNoise(0.5, 2, 1, b, e, tiny_model.cfg.d_model, positions=(b, e + 3))
