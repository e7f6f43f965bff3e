"""The traced answer is the answer that was judged: the output modality's top-1 (greedy generation's
first token), explicit ids, and target strings tokenised in context with an explicit rule."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from spiritlens import trace
from spiritlens.traces import Tracer, prepare_prompt
from spiritlens.traces.answer import resolve_answer, sequence_probability
from spiritlens.tokens.trace_prompt import display_tokens
from spiritlens.interventions import EmbeddingNoise

PROMPT = "The Space Needle is located in the city of"


def units(*tokens):
    return SimpleNamespace(tokens=list(tokens), spans=[(2 * i, 2 * i + 2) for i in range(len(tokens))])


def test_default_answer_is_greedy_generations_first_token(tiny_model, known_path):
    records = json.loads(known_path.read_text())[::30][:40]
    full_vocab_would_differ = 0
    for record in records:
        prompt = prepare_prompt(tiny_model, record["prompt"], record["subject"], occurrence="first")
        tracer = Tracer(tiny_model, prompt, samples=1, noise=0.0)
        generated = int(tiny_model.generate_ids(record["prompt"], max_new_tokens=1)[0])
        assert tracer.answer_id == generated, record["known_id"]
        assert tracer.answer_rule.rule == "top1_text"
        with torch.no_grad():
            full_vocab_would_differ += int(tiny_model(prompt.input_ids)[0, -1].argmax()) != generated
    assert len(records) == 40
    assert full_vocab_would_differ >= 5  # ROME's full-vocabulary top-1 is often a [Hu…] unit or a marker here


def test_speech_prompts_answer_in_text_and_speech_output_answers_in_speech(tiny_model):
    spoken = [("speech", units(5, 9, 33, 7))]
    prompt = prepare_prompt(tiny_model, spoken, subject_range=(3, 5))
    tracer = Tracer(tiny_model, prompt, samples=1, noise=0.0)
    assert tracer.answer_rule.rule == "top1_text"
    assert tracer.answer_id == int(tiny_model.generate_ids(spoken, max_new_tokens=1)[0])
    ids = tiny_model.to_tokens(spoken, output_modality="speech")[0].tolist()  # ends in a [Hu…] unit
    prompt = prepare_prompt(tiny_model, ids, subject_range=(3, 5))
    tracer = Tracer(tiny_model, prompt, samples=1, noise=0.0)
    assert tracer.answer_rule.rule == "top1_speech"
    assert tracer.answer_id == int(tiny_model.generate_ids(ids, "speech", max_new_tokens=1)[0])
    assert tiny_model.vocab.unit_of(tracer.answer_id) is not None


def test_every_result_records_how_the_answer_was_chosen(tiny_model, tmp_path):
    result = trace(tiny_model, PROMPT, "Space Needle", samples=2, noise=0.5)
    data = json.loads(result.save(tmp_path / "r.json").read_text())
    assert data["answer_rule"] == "top1_text" and data["target"] is None and data["target_ids"] == []
    assert result.answer_rule == "top1_text"
    by_id = trace(tiny_model, PROMPT, "Space Needle", samples=2, noise=0.5, target=result.answer_id)
    assert by_id.answer_rule == "id" and by_id.high_score == result.high_score
    loaded = type(result).load(tmp_path / "r.json")
    assert loaded.answer_rule == "top1_text" and "answer_rule" not in loaded.extra


def test_target_strings_are_tokenised_in_context_with_an_explicit_rule(tiny_model):
    tok = tiny_model.tokenizer
    with pytest.raises(ValueError, match=r"target 'Mountain View' is 2 tokens \['▁Mountain', '▁View'\] after the "
                                         r"prompt; choose target_rule='first_token'"):
        trace(tiny_model, PROMPT, "Space Needle", noise=0.5, target="Mountain View")
    first = trace(tiny_model, PROMPT, "Space Needle", samples=2, noise=0.5, target="Mountain View",
                  target_rule="first_token")
    assert first.answer_id == tok.convert_tokens_to_ids("▁Mountain") and first.answer_rule == "target_first_token"
    assert first.target == " Mountain View" and first.target_tokens == ["▁Mountain", "▁View"]
    assert first.target_ids == tok.convert_tokens_to_ids(["▁Mountain", "▁View"])
    single = trace(tiny_model, PROMPT, "Space Needle", samples=2, noise=0.5, target="Seattle")
    assert single.answer_id == tok.convert_tokens_to_ids("▁Seattle") and single.target_tokens == ["▁Seattle"]
    whole = trace(tiny_model, PROMPT, "Space Needle", samples=2, noise=0.5, target="Mountain View",
                  target_rule="sequence")
    assert whole.answer_rule == "target_sequence" and whole.target_ids == first.target_ids
    assert whole.answer == "Mountain View" and whole.answer_id == first.answer_id  # the text scored; its first piece
    clean, pieces = sequence_probability(tiny_model, whole.input_ids, whole.target_ids)
    assert whole.high_score == pytest.approx(clean, rel=1e-6) and whole.high_score < first.high_score
    assert first.high_score == pytest.approx(pieces[0], rel=1e-6)


def test_digits_after_a_space_measure_what_the_tokenizer_writes(tiny_model):
    """' 1999' after 'of' is ▁ 1 9 9 9: its first piece is the lone ▁, never '1' glued to 'of'."""
    prompt = "The Space Needle was opened in the year of"
    with pytest.raises(ValueError, match=r"target ' 1999' is 5 tokens \['▁', '1', '9', '9', '9'\]"):
        trace(tiny_model, prompt, "Space Needle", noise=0.5, target=" 1999")
    result = trace(tiny_model, prompt, "Space Needle", samples=2, noise=0.5, target="1999", target_rule="first_token")
    assert result.answer_id == tiny_model.tokenizer.convert_tokens_to_ids("▁") != \
        tiny_model.tokenizer.convert_tokens_to_ids("1")
    assert result.target == " 1999"
    ids = tiny_model.to_tokens(prompt + " 1999")[0].tolist()
    assert ids[-5:] == result.target_ids  # the pieces SpiritLM's tokenizer writes after the prompt


@pytest.mark.parametrize("kwargs, message", [
    (dict(target="Seattle", target_rule="all"), "unknown target_rule 'all'"),
    (dict(target_rule="sequence"), "target_rule='sequence' needs a target string"),
    (dict(target=12, target_rule="first_token"), "applies to target strings, not to the id 12"),
    (dict(target=3.5), "target must be a token id or a string, got float"),
    (dict(target="   "), "target '   ' tokenises to nothing"),
    (dict(target=-2), "target id: token id -2 is negative"),
])
def test_bad_targets(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        trace(tiny_model, PROMPT, "Space Needle", noise=0.5, **kwargs)


def test_target_merging_with_the_prompt_is_an_error(tiny_model):
    prompt = prepare_prompt(tiny_model, PROMPT + " ", "Space Needle")  # ends in a lone ▁
    with pytest.raises(ValueError, match=r"target 'Seattle' merges with the end of the prompt"):
        resolve_answer(tiny_model, prompt, "Seattle", "first_token")


def _plain_sequence_probability(model, ids, target_ids, hooks=()):
    """A plain loop: one forward per target piece, teacher-forced."""
    total = 1.0
    for k, piece in enumerate(target_ids):
        with torch.no_grad():
            logits = model.run_with_hooks(torch.tensor([ids + target_ids[:k]]), fwd_hooks=list(hooks))
        total = total * torch.softmax(logits[:, -1].double(), dim=-1)[:, piece]
    return total


def test_sequence_probability_equals_a_plain_loop(tiny_model):
    prompt = prepare_prompt(tiny_model, PROMPT, "Space Needle")
    rule = resolve_answer(tiny_model, prompt, "Mountain View", "sequence")
    ids, target = prompt.input_ids, list(rule.target_ids)
    clean, pieces = sequence_probability(tiny_model, ids, target)
    assert clean == pytest.approx(float(_plain_sequence_probability(tiny_model, ids, target)), rel=1e-5)
    assert clean == pytest.approx(pieces[0] * pieces[1], rel=1e-9)
    b, e = prompt.subject_range
    z = 0.7 * np.random.RandomState(1).randn(3, e - b, tiny_model.cfg.d_model)  # ROME's draw, written out
    noise = EmbeddingNoise(0.7, 3, 1, b, e, tiny_model.cfg.d_model)
    assert np.array_equal(noise.draw(), z)
    low, _ = sequence_probability(tiny_model, ids, target, corruption=noise)

    def corrupt_row(row):
        def hook(act, hook):
            act[:, b:e] += torch.from_numpy(z[row])
            return act
        return hook

    rows = [float(_plain_sequence_probability(tiny_model, ids, target, [("hook_embed", corrupt_row(r))]))
            for r in range(3)]
    assert low == pytest.approx(float(np.mean(rows)), rel=1e-5)
    assert low != pytest.approx(clean)


def test_display_labels_are_readable(tiny_model):
    ids = tiny_model.to_tokens("Xbox was sold in 日本 in 1999")[0].tolist()
    labels = display_tokens(tiny_model, ids)
    pieces = tiny_model.to_str_tokens(ids)
    assert pieces[:4] == ["<s>", "▁", "[Text]", "<0x58>"] and labels[:4] == ["<s>", "␣", "[Text]", "X"]
    k = pieces.index("<0xE6>")
    assert labels[k:k + 6] == ["日(1/3)", "日(2/3)", "日(3/3)", "本(1/3)", "本(2/3)", "本(3/3)"]
    assert labels[-5:] == ["␣", "1", "9", "9", "9"] and " in" in labels
    result = trace(tiny_model, ids, subject_range=(3, 6), samples=1, noise=0.5)
    assert result.tokens == labels and [r.label for r in result.rows] == labels


def test_subject_with_surrounding_spaces_is_the_subject(tiny_model):
    plain = prepare_prompt(tiny_model, PROMPT, "Space Needle")
    b, e = plain.subject_range
    assert plain.tokens[e] == " is"  # the next word, which a trailing space used to pull in
    for subject in ("Space Needle ", " Space Needle", "\tSpace Needle  "):
        prepared = prepare_prompt(tiny_model, PROMPT, subject)
        assert prepared.subject_range == (b, e) and prepared.subject == "Space Needle"
