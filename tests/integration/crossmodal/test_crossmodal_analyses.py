"""Cross-modal analyses on the tiny model, each against an independent computation: the tracer's
cells, a plain per-layer patching loop, numpy geometry, and the model's (and transformers') own
output distribution for the logit lens."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from helpers import SPOKEN_PROMPT
from spiritlens import trace
from spiritlens.align import LowAlignmentConfidence
from spiritlens.crossmodal import (
    PATCH_MODES,
    CrossModalFact,
    GeometryResult,
    LogitLensResult,
    PatchingResult,
    cross_modal_patching,
    representation_geometry,
    speech_logit_lens,
)
from spiritlens.model import hook_names
from spiritlens.traces import Row, Tracer

NOISE, SAMPLES = 0.1, 4  # noise at which the tiny model's scores are far from 0 and 1
SUBJECT = "Space Needle"


@pytest.fixture(scope="module")
def fact(tiny_model, spoken_prompt_wav, tiny_ctc_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowAlignmentConfidence)  # random CTC weights
        return CrossModalFact.from_audio(tiny_model, spoken_prompt_wav, prompt=SPOKEN_PROMPT, subject=SUBJECT,
                                         aligner=tiny_ctc_dir, name="space_needle")


@pytest.fixture(scope="module")
def patching(tiny_model, fact):
    return cross_modal_patching(tiny_model, fact, noise=NOISE, samples=SAMPLES)


def _noise(n_positions: int, d_model: int, seed: int = 1) -> torch.Tensor:
    """ROME's draw, written out here: RandomState(seed).randn(S, e - b, d) * nu, float64."""
    return torch.from_numpy(NOISE * np.random.RandomState(seed).randn(SAMPLES, n_positions, d_model))


def _text_positions(model) -> list[int]:
    _, token_map = model.encode(SPOKEN_PROMPT)
    return [p.position for p in token_map.positions if p.kind == "text"]


def _word_tokens(model) -> list[tuple[str, list[int]]]:
    """Each whitespace word of the prompt and the indices of the LM text tokens overlapping it."""
    _, token_map = model.encode(SPOKEN_PROMPT)
    spans = [p.char_span for p in token_map.positions if p.kind == "text"]
    out, start = [], 0
    for word in SPOKEN_PROMPT.split():
        a = SPOKEN_PROMPT.index(word, start)
        start = a + len(word)
        out.append((word, [i for i, (s, e) in enumerate(spans) if s < start and e > a]))
    return out


def _subject_token_indices(model) -> list[int]:
    return [i for w, tokens in _word_tokens(model) if w in SUBJECT.split() for i in tokens]


def _speech_groups(fact) -> dict[int, list[int]]:
    speech = fact.speech
    return {i: [speech.speech_offset + k for k in range(item.token_start, item.token_end)]
            for i, item in enumerate(speech.speech_map.items) if item.token_start is not None}


# ----------------------------------------------------------------------------- pairing
def test_fact_pairs_text_tokens_with_their_speech_groups(tiny_model, fact):
    assert fact.text_positions == _text_positions(tiny_model)
    assert fact.text_subject_range == tiny_model.encode(SPOKEN_PROMPT)[1].find_text(SUBJECT)
    assert [fact.token_labels[i] for i in fact.subject_tokens] == [" Space", " Needle"]
    groups = _speech_groups(fact)
    for i in range(len(fact.text_positions)):
        assert fact.speech_positions(i) == groups.get(i, [])
    words = fact.words()
    assert [w.text for w in words] == SPOKEN_PROMPT.split()
    for word in words:  # "The" right after [Text] is two pieces (T he) under SpiritLM's tokenisation
        assert word.tokens, word.text
        assert word.text_positions == [fact.text_positions[t] for t in word.tokens]
        assert word.speech_positions == sorted({p for t in word.tokens for p in groups.get(t, [])})
    assert [len(w.tokens) for w in words][1:] == [1] * (len(words) - 1)  # the other words are one piece


def test_fact_rejects_a_transcript_that_tokenises_differently(tiny_model, fact):
    with pytest.raises(ValueError, match="tokenise differently"):
        CrossModalFact.from_speech_prompt(tiny_model, fact.speech, prompt=SPOKEN_PROMPT.lower())


# ------------------------------------------------------------------------------ patching
def test_text_into_text_at_the_same_positions_equals_the_tracers_cells(tiny_model, fact, patching):
    traced = trace(tiny_model, SPOKEN_PROMPT, SUBJECT, kind="hidden", noise=NOISE, samples=SAMPLES)
    b, e = fact.text_subject_range
    # the API's within-modality curve of the last subject token is the tracer's row e - 1
    receiver, curve = patching.receivers["text"], patching.curve("speech_to_text", "last")
    assert curve.positions == [e - 1]
    assert np.abs(curve.self_scores - traced.scores[e - 1]).max() < 1e-6
    assert traced.scores[e - 1].std() > 1e-2  # the cells differ from one another: the comparison has teeth
    assert abs(receiver.low_score - traced.low_score) < 1e-6 and abs(receiver.high_score - traced.high_score) < 1e-7
    assert receiver.answer_id == traced.answer_id


def test_speech_into_speech_at_the_same_positions_equals_the_tracers_cells(tiny_model, fact, patching):
    tracer = Tracer(tiny_model, fact.speech.trace_prompt(tiny_model), samples=SAMPLES, noise=NOISE)
    for mode in PATCH_MODES:
        curve = patching.curve("text_to_speech", mode)
        expected = tracer.scores("hidden", [Row(mode, curve.positions)])[0]
        assert np.abs(curve.self_scores - expected).max() < 1e-6, mode
    receiver = patching.receivers["speech"]
    assert abs(receiver.low_score - tracer.low_score) < 1e-6 and abs(receiver.high_score - tracer.high_score) < 1e-7
    assert receiver.subject_range == list(fact.speech_subject_range)


def _expected_pairs(tiny_model, fact) -> dict[tuple[str, str], tuple[list[int], list[int]]]:
    """The module doc's pairing rules, written out from the speech map."""
    text_positions, groups = _text_positions(tiny_model), _speech_groups(fact)
    subject = fact.speech.subject_tokens
    speech_last = fact.speech.subject_range[1] - 1
    text_last = text_positions[subject[-1]]
    owner = {}
    for i in subject:  # a shared speech position goes to the later token
        for p in groups.get(i, []):
            owner[p] = i
    mapped = [i for i in subject if i in groups]
    return {
        ("text_to_speech", "last"): ([speech_last], [text_last]),
        ("speech_to_text", "last"): ([text_last], [speech_last]),
        ("text_to_speech", "groups"): (sorted(owner), [text_positions[owner[p]] for p in sorted(owner)]),
        ("speech_to_text", "groups"): ([text_positions[i] for i in mapped], [groups[i][-1] for i in mapped]),
    }


def test_cross_modal_scores_equal_a_plain_per_layer_loop(tiny_model, fact, patching):
    L, d = tiny_model.cfg.n_layers, tiny_model.cfg.d_model
    names = {hook_names.resid_post(layer) for layer in range(L)}
    runs = {}
    for modality, ids in (("text", fact.text_ids), ("speech", fact.speech_ids)):
        with torch.inference_mode():
            runs[modality] = tiny_model.run_with_cache(torch.tensor([ids]), names_filter=lambda n: n in names)[1]
    other = {"text": "speech", "speech": "text"}
    checked = 0
    for (direction, mode), (dest, src) in _expected_pairs(tiny_model, fact).items():
        curve = patching.curve(direction, mode)
        assert (curve.positions, curve.source_positions) == (dest, src), (direction, mode)
        receiver = patching.receiver(direction)
        ids = fact.text_ids if receiver.modality == "text" else fact.speech_ids
        b, e = receiver.subject_range
        z = _noise(e - b, d)
        for layer in range(L):
            source = runs[other[receiver.modality]][hook_names.resid_post(layer)][0, src]

            def corrupt(act, hook):
                act[:, b:e] += z
                return act

            def write(act, hook, source=source):
                act[:, dest] = source
                return act

            with torch.inference_mode():
                logits = tiny_model.run_with_hooks(torch.tensor([ids]).expand(SAMPLES, -1), fwd_hooks=[
                    (hook_names.EMBED, corrupt), (hook_names.resid_post(layer), write)])
            p = float(torch.softmax(logits[:, -1].float(), dim=-1).mean(dim=0)[receiver.answer_id])
            assert abs(p - curve.scores[layer]) < 1e-6, (direction, mode, layer, p, curve.scores[layer])
            checked += 1
    assert checked == 4 * L
    assert max(np.abs(c.scores - c.self_scores).max() for c in patching.curves) > 1e-3  # cross != self here


def test_patching_result_round_trips_and_records_its_settings(tiny_model, patching, tmp_path):
    path = patching.save(tmp_path / "p.json")
    data = json.loads(path.read_text())
    assert data["analysis"] == "patching" and data["settings"]["noise_rule"] == "0.1"
    assert data["settings"]["samples"] == SAMPLES
    assert data["positions"]["subject_tokens"] == _subject_token_indices(tiny_model)
    back = PatchingResult.load(path)
    assert back.to_json() == patching.to_json()
    assert np.array_equal(back.curve("text_to_speech", "groups").scores, patching.curve("text_to_speech", "groups").scores)


def test_explicit_target_is_scored_in_both_runs(tiny_model, fact):
    answer = int(fact.clean_run(tiny_model, "text").last_logits.argmax())
    result = cross_modal_patching(tiny_model, fact, noise=NOISE, samples=2, modes=["last"], target=answer)
    assert {r.answer_id for r in result.receivers.values()} == {answer}
    assert [(c.direction, c.mode) for c in result.curves] == [("text_to_speech", "last"), ("speech_to_text", "last")]


@pytest.mark.parametrize("kwargs, message", [
    (dict(noise="3s"), "needs sigma"),
    (dict(samples=0), "samples must be an integer"),
    (dict(modes=["middle"]), "modes: unknown value 'middle'"),
    (dict(directions=[]), "directions is empty"),
    (dict(target=10**6), "target id: token id 1000000 is beyond"),
    (dict(target="Seattle"), "must be a token id"),
])
def test_bad_patching_arguments(tiny_model, fact, kwargs, message):
    args = dict(noise=NOISE, samples=2) | kwargs
    with pytest.raises(ValueError, match=message):
        cross_modal_patching(tiny_model, fact, **args)


def test_hooks_attached_act_in_every_patched_run(tiny_model, fact):
    """One rule for hooks (tracing's): they act. Reference: the plain per-layer loop, with the same hook."""
    L, d = tiny_model.cfg.n_layers, tiny_model.cfg.d_model

    def halve(act, hook):
        return act * 0.5

    name = hook_names.mlp_out(1)
    plain = cross_modal_patching(tiny_model, fact, noise=NOISE, samples=SAMPLES, modes=["last"],
                                 directions=["text_to_speech"])
    tiny_model.add_hook(name, halve)
    try:
        hooked = cross_modal_patching(tiny_model, fact, noise=NOISE, samples=SAMPLES, modes=["last"],
                                      directions=["text_to_speech"])
        curve, receiver = hooked.curve("text_to_speech", "last"), hooked.receivers["speech"]
        with torch.inference_mode():
            _, text = tiny_model.run_with_cache(torch.tensor([fact.text_ids]))
        b, e = receiver.subject_range
        z = _noise(e - b, d)

        def corrupt(act, hook):
            act[:, b:e] += z
            return act

        for layer in range(L):
            source = text[hook_names.resid_post(layer)][0, curve.source_positions]

            def write(act, hook, source=source):
                act[:, curve.positions] = source
                return act

            with torch.inference_mode():
                logits = tiny_model.run_with_hooks(torch.tensor([fact.speech_ids]).expand(SAMPLES, -1), fwd_hooks=[
                    (hook_names.EMBED, corrupt), (hook_names.resid_post(layer), write)])
            p = float(torch.softmax(logits[:, -1].float(), dim=-1).mean(dim=0)[receiver.answer_id])
            assert abs(p - curve.scores[layer]) < 1e-6, (layer, p, curve.scores[layer])
    finally:
        tiny_model.reset_hooks()
    assert np.abs(plain.curve("text_to_speech", "last").scores - curve.scores).max() > 1e-4  # the hook mattered


# ------------------------------------------------------------------------------ geometry
def test_geometry_equals_a_numpy_computation_from_the_cache(tiny_model, fact):
    result = representation_geometry(tiny_model, fact)
    L = tiny_model.cfg.n_layers
    states = {}
    for modality, ids in (("text", fact.text_ids), ("speech", fact.speech_ids)):
        _, cache = tiny_model.run_with_cache(torch.tensor([ids]))
        states[modality] = np.stack([cache[hook_names.resid_post(l)][0].double().numpy() for l in range(L)])
    text_positions, groups = _text_positions(tiny_model), _speech_groups(fact)
    # each word's LM tokens from the tokenizer's character spans; words with no speech are left out
    words = [(w, tokens) for w, tokens in _word_tokens(tiny_model) if any(t in groups for t in tokens)]
    assert result.words == [w for w, _ in words]
    for k, (_, tokens) in enumerate(words):
        speech = sorted({p for t in tokens for p in groups.get(t, [])})
        for layer in range(L):
            t = states["text"][layer, [text_positions[i] for i in tokens]].mean(axis=0)
            s = states["speech"][layer, speech].mean(axis=0)
            assert result.cosine[k, layer] == pytest.approx(t @ s / np.linalg.norm(t) / np.linalg.norm(s), abs=1e-9)
            assert result.distance[k, layer] == pytest.approx(np.linalg.norm(t - s), rel=1e-9)
            assert result.text_norm[k, layer] == pytest.approx(np.linalg.norm(t), rel=1e-9)
            assert result.speech_norm[k, layer] == pytest.approx(np.linalg.norm(s), rel=1e-9)
    for layer in range(L):
        pairs = [(a, b) for a in range(len(words)) for b in range(len(words)) if a != b]
        cos, dist = [], []
        for a, b in pairs:
            t = states["text"][layer, [text_positions[i] for i in words[a][1]]].mean(axis=0)
            s = states["speech"][layer, sorted({p for i in words[b][1] for p in groups.get(i, [])})].mean(axis=0)
            cos.append(t @ s / np.linalg.norm(t) / np.linalg.norm(s))
            dist.append(np.linalg.norm(t - s))
        assert result.mismatched_cosine[layer] == pytest.approx(np.mean(cos), abs=1e-9)
        assert result.mismatched_distance[layer] == pytest.approx(np.mean(dist), rel=1e-9)


def test_geometry_result_round_trips(tiny_model, fact, tmp_path):
    result = representation_geometry(tiny_model, fact)
    back = GeometryResult.load(result.save(tmp_path / "g.json"))
    assert back.words == result.words and np.array_equal(back.cosine, result.cosine)
    assert back.word_mean("distance").shape == (tiny_model.cfg.n_layers,)


# ---------------------------------------------------------------------------- logit lens
def _text_vocab(model) -> list[int]:
    special = model.vocab.speech_ids | set(model.vocab.marker_ids)
    return [i for i in range(len(model.tokenizer)) if i not in special]


def _brute_ranks(logits: np.ndarray, vocab: list[int], targets: list[int]) -> np.ndarray:
    restricted = logits[vocab]
    return np.array([1 + int((restricted > logits[t]).sum()) for t in targets])


def test_logit_lens_at_the_last_layer_is_the_models_own_distribution(tiny_model, fact):
    result = speech_logit_lens(tiny_model, fact)
    vocab = _text_vocab(tiny_model)
    assert result.n_text_tokens == len(vocab)
    b, e = tiny_model.encode(SPOKEN_PROMPT)[1].find_text(SUBJECT)
    targets = fact.text_ids[b:e]  # ' Space', ' Needle'
    assert result.subject_token_ids == targets
    for ids, positions, ranks, log_probs in ((fact.speech_ids, result.positions, result.ranks, result.log_probs),
                                             (fact.text_ids, result.text_positions, result.text_ranks,
                                              result.text_log_probs)):
        with torch.inference_mode():
            logits = tiny_model(torch.tensor([ids]))[0].double().numpy()
        for row, p in enumerate(positions):
            assert np.array_equal(ranks[row, -1], _brute_ranks(logits[p], vocab, targets))
            restricted = logits[p, vocab]
            expected = logits[p, targets] - (restricted.max() + np.log(np.exp(restricted - restricted.max()).sum()))
            assert np.allclose(log_probs[row, -1], expected, atol=1e-5)
    assert result.positions == list(range(*fact.speech_subject_range))


def test_logit_lens_at_inner_layers_matches_transformers_hidden_states(tiny_model, hf_tiny_model, fact):
    result = speech_logit_lens(tiny_model, fact)
    vocab, L = _text_vocab(tiny_model), tiny_model.cfg.n_layers
    with torch.inference_mode():
        out = hf_tiny_model(torch.tensor([fact.speech_ids]), output_hidden_states=True)
        for layer in range(L - 1):  # HF hidden_states[l + 1] is block l's output for l < L - 1
            logits = hf_tiny_model.lm_head(hf_tiny_model.model.norm(out.hidden_states[layer + 1]))[0].double().numpy()
            for row, p in enumerate(result.positions):
                assert np.array_equal(result.ranks[row, layer], _brute_ranks(logits[p], vocab, result.subject_token_ids))
    best = result.best_rank
    assert np.array_equal(best, result.ranks.min(axis=-1))
    assert np.allclose(result.reciprocal_rank, (1 / best).mean(axis=0))
    assert len(set(best.ravel().tolist())) > 3  # ranks vary: the check has teeth


def test_logit_lens_labels_and_round_trip(tiny_model, fact, tmp_path):
    result = speech_logit_lens(tiny_model, fact)
    groups = _speech_groups(fact)
    for p, label, aligned in zip(result.positions, result.position_labels, result.aligned_tokens):
        assert label.startswith(f"{p}: [Hu")
        if aligned is not None:
            token = fact.subject_tokens[aligned]
            assert p in groups[token] and label.endswith(fact.token_labels[token].strip())
    back = LogitLensResult.load(result.save(tmp_path / "l.json"))
    assert np.array_equal(back.ranks, result.ranks) and back.aligned_tokens == result.aligned_tokens
