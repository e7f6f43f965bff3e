"""The toy SpiritLM: SpiritLM's layout, knows its facts, built by the prompt path, cached by its
inputs, deterministic, and its T->T traces localise the fact at the subject (ground truth: its
first layers have no attention, so nothing after the subject can carry the subject there)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from spiritlens.synthetic.toy import cache as toy_cache
from spiritlens.synthetic.toy import training as toy_training
from spiritlens.cli import main
from spiritlens.data import load_known
from toy_mechanism import check_designed_mechanism
from spiritlens.synthetic.toy.cache import (
    MANIFEST,
    REPORT,
    backbone_dir,
    inputs_hash,
    model_dir,
    read_manifest,
    toy_facts,
    toy_inputs,
)
from spiritlens.synthetic.toy.config import ToyConfig, select_facts
from spiritlens.synthetic.toy.training import answer_ids
from spiritlens.synthetic.toy import make_toy, toy_checkpoints
from spiritlens.traces import subject_sigma, trace

pytestmark = pytest.mark.slow


def test_toy_is_a_spiritlm_checkpoint_tree_that_transformers_loads(toy_root, toy_model):
    from transformers import LlamaForCausalLM

    directory = model_dir(toy_root)
    for name in ("config.json", "generation_config.json", "pytorch_model.bin", "tokenizer.model",
                 "tokenizer_config.json", "special_tokens_map.json", REPORT):
        assert (directory / name).is_file(), name
    for name in ("mhubert_base_25hz.pt", "L11_quantizer_500.pt"):
        assert (toy_root / "speech_tokenizer" / "hubert_25hz" / name).is_file(), name
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_hidden_layers"] >= 8
    assert toy_model.cfg.n_layers == config["num_hidden_layers"]
    hf = LlamaForCausalLM.from_pretrained(directory, attn_implementation="eager", dtype=torch.float32).eval()
    fact = toy_facts(toy_root)[0]
    for prompt in (fact.prompt, [("speech", toy_root / "speech" / f"{fact.known_id}_prompt.wav")]):
        ids = toy_model.to_tokens(prompt)
        with torch.no_grad():
            diff = (hf(ids).logits - toy_model(ids)).abs().max().item()
        assert diff <= 1e-5, diff
    local = ToyConfig.from_dict(read_manifest(toy_root)["inputs"]["config"]).local_layers
    for layer in range(config["num_hidden_layers"]):
        weight = hf.model.layers[layer].self_attn.o_proj.weight
        assert (weight.abs().max().item() == 0.0) == (layer < local), layer


def test_toy_answers_its_facts_in_text_and_speech(toy_root, toy_model):
    facts = toy_facts(toy_root)
    wrong = []
    for fact in facts:
        spoken = [("speech", toy_root / "speech" / f"{fact.known_id}_prompt.wav")]
        for modality, prompt in (("t2t", fact.prompt), ("s2t", spoken)):
            generated = toy_model.decode_generated(toy_model.generate_ids(prompt, max_new_tokens=8))  # greedy
            if generated.strip() != fact.attribute:  # the plain rule, independent of the judge
                wrong.append((modality, fact.prompt, fact.attribute, generated))
    assert not wrong, wrong
    report = json.loads((model_dir(toy_root) / REPORT).read_text())
    assert report["accuracy"] == {"t2t": 1.0, "s2t": 1.0} and report["meets_targets"] is True
    assert report["counts"]["t2t"]["total"] == len(facts) == 6


def test_training_sequences_are_the_prompt_paths_ids(toy_root, toy_model):
    fact = toy_facts(toy_root)[0]
    audio = {f"{fact.known_id}_{part}": toy_root / "speech" / f"{fact.known_id}_{part}.wav"
             for part in ("prompt", "subject")}
    units = {key: toy_model.speech_tokenizer.encode(path) for key, path in audio.items()}
    encode = lambda prompt: toy_model.encode(prompt)[0][0].tolist()  # noqa: E731
    sequences, _ = toy_training._sequences(encode, toy_model.vocab.eos_id, [fact], [], units, interleaved=True)
    by_form = {s.form: s for s in sequences}
    eos = toy_model.vocab.eos_id
    for form, prompt in (("t2t", fact.prompt), ("s2t", [("speech", audio[f"{fact.known_id}_prompt"])])):
        sequence = by_form[form]
        inference = toy_model.to_tokens(prompt)[0].tolist()  # what the filter and the tracer feed it
        assert sequence.ids[:sequence.start + 1] == inference, form
        assert sequence.ids[-1] == eos
        answer = toy_model.tokenizer.decode(sequence.ids[sequence.start + 1:-1])
        assert answer.strip() == fact.attribute, (form, answer)
    answer = by_form["t2t"].ids[by_form["t2t"].start + 1:]
    assert toy_model.to_str_tokens(answer)[0] == "\u2581" + fact.attribute.split()[0][:len(toy_model.to_str_tokens(
        answer)[0]) - 1]  # the answer's first piece is a word piece, never a lone "▁"
    for form in ("s2t", "interleaved"):  # the same answer ids after every form's prompt
        assert by_form[form].ids[by_form[form].start + 1:] == answer, form
    interleaved = toy_model.to_str_tokens(by_form["interleaved"].ids)
    assert "[Speech]" in interleaved and interleaved.count("[Text]") >= 1
    prompt_ids, answer_part = answer_ids(encode, fact.prompt, fact.attribute)
    assert prompt_ids + answer_part == toy_model.to_tokens(f"{fact.prompt} {fact.attribute}")[0].tolist()
    with pytest.raises(ValueError, match="answer to append is empty"):
        answer_ids(encode, fact.prompt, " ")


def test_toy_trace_puts_the_fact_at_the_last_subject_token(toy_root, toy_model, known_path):
    """Hidden-state traces of the toy's facts (ROME's settings: 3 sigma over every Known subject,
    10 samples, seed 1): restoring the last subject token in the first half of the layers recovers
    far more of p(answer) than restoring any token after the subject."""
    sigma = subject_sigma(toy_model, [r.subject for r in load_known(known_path)])
    local = ToyConfig.from_dict(read_manifest(toy_root)["inputs"]["config"]).local_layers
    n_layers = toy_model.cfg.n_layers
    early = slice(0, n_layers // 2)
    last_subject, after, total = [], [], []
    for fact in toy_facts(toy_root):
        result = trace(toy_model, fact.prompt, fact.subject, kind="hidden", noise="3s", sigma=sigma)
        effects = result.scores - result.low_score  # IE [T, L]
        b, e = result.subject_range
        assert result.answer.strip() == fact.attribute
        # ground truth: before attention starts, a token after the subject cannot depend on the subject
        assert np.abs(effects[e:, :local]).max() < 1e-6  # float32 rounding of a no-op restore
        last_subject.append(effects[e - 1, early])
        after.append(effects[e:-1, early].max(axis=0))
        total.append(result.high_score - result.low_score)
    check_designed_mechanism(last_subject, after, total, n_layers)  # pytest -s prints the numbers the README quotes


def test_toy_cache_is_reused_and_keyed_on_its_inputs(toy_root, toy_cache_dir, known_path, monkeypatch):
    weights = model_dir(toy_root) / "pytorch_model.bin"
    before = weights.stat().st_mtime_ns
    assert toy_checkpoints(ToyConfig.small(), known=known_path, cache_dir=toy_cache_dir, progress=False) == toy_root
    messages = []
    assert make_toy(toy_root, ToyConfig.small(), known=known_path, log=messages.append) == toy_root
    assert weights.stat().st_mtime_ns == before and "up to date" in messages[0]
    manifest = read_manifest(toy_root)
    assert toy_root.name == f"toy-{manifest['hash'][:12]}"
    records = load_known(known_path).records
    facts, distractors = select_facts(records, ToyConfig.small())
    assert [f.known_id for f in facts] == [f.known_id for f in toy_facts(toy_root)]
    base = inputs_hash(toy_inputs(ToyConfig.small(), facts, distractors))
    assert base == manifest["hash"]
    for change in ({"seed": 1}, {"backbone_max_steps": 251}, {"new_rows_std": 0.01}, {"max_steps": 251}):
        other = replace(ToyConfig.small(), **change)  # either phase's settings retrain
        assert inputs_hash(toy_inputs(other, *select_facts(records, other))) != base, change
    monkeypatch.setattr(toy_cache, "prompt_path_digest", lambda: "a changed prompt path")
    assert inputs_hash(toy_inputs(ToyConfig.small(), facts, distractors)) != base


def test_prompt_path_digest_covers_the_tokenizer_path():
    assert "spiritlens.tokens.prompt" in toy_cache.PROMPT_PATH_MODULES
    assert "spiritlens.synthetic.toy.backbone" in toy_cache.PROMPT_PATH_MODULES
    assert "spiritlens.model.hooked" in toy_cache.PROMPT_PATH_MODULES
    assert len(toy_cache.prompt_path_digest()) == 64


def test_toy_build_is_deterministic(tmp_path, known_path):
    config = ToyConfig(relations=1, facts_per_relation=3, paraphrases=1, distractors=2, speech=False,
                       interleaved=False, d_model=32, n_heads=2, d_mlp=64, max_steps=6, min_steps=6,
                       backbone_max_steps=6, backbone_min_steps=6, distractors_per_step=4)
    first = make_toy(tmp_path / "a", config, known=known_path, progress=False, log=lambda m: None)
    second = make_toy(tmp_path / "b", config, known=known_path, progress=False, log=lambda m: None)
    a = torch.load(model_dir(first) / "pytorch_model.bin", weights_only=True)
    b = torch.load(model_dir(second) / "pytorch_model.bin", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = (load_file(backbone_dir(root) / "model.safetensors") for root in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for folder in (model_dir, backbone_dir):
        assert (folder(first) / "tokenizer.model").read_bytes() == (folder(second) / "tokenizer.model").read_bytes()
    assert read_manifest(first)["hash"] == read_manifest(second)["hash"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no build folders left behind


def test_make_toy_refuses_a_folder_that_is_not_a_toy(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["make-toy", str(tmp_path), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (f"spiritlens make-toy: error: {str(tmp_path)!r} exists and is not a "
                                               "toy SpiritLM: give a new or empty folder")
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / MANIFEST).exists()
