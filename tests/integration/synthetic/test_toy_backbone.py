"""The toy backbone (a text-only toy Llama in Llama-2-7b-hf's layout) and the toy SpiritLM continued
from it: transformers loads and answers with the backbone, its tokenizer has no marker or unit, the
toy SpiritLM's text pieces keep the backbone's ids, its weights start from the backbone's, and a
plain trace of the backbone finds the designed mechanism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sentencepiece as spm
import torch
from safetensors.torch import load_file

from spiritlens.data import load_known
from toy_mechanism import check_designed_mechanism
from spiritlens.synthetic.toy.backbone import extend_vocabulary
from spiritlens.synthetic.toy.cache import REPORT, backbone_dir, model_dir, read_manifest, toy_facts
from spiritlens.synthetic.toy.config import ToyConfig
from spiritlens.models.spiritlm.vocab import N_HUBERT_TOKENS, hubert_token


def _prompts(root) -> list[str]:
    """Every text prompt the toys were trained on: the facts', their paraphrases, the distractors'."""
    inputs = read_manifest(root)["inputs"]
    facts = toy_facts(root)
    return [f.prompt for f in facts] + [p for f in facts for p in f.paraphrases] + [d["prompt"] for d in
                                                                                   inputs["distractors"]]


@pytest.fixture(scope="module")
def backbone_hf(toy_root):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(backbone_dir(toy_root), attn_implementation="eager",
                                            dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def backbone_tokenizer(toy_root):
    from transformers import LlamaTokenizer

    return LlamaTokenizer.from_pretrained(str(backbone_dir(toy_root)))


@pytest.mark.slow
def test_backbone_is_a_llama2_folder_that_transformers_loads_and_answers(toy_root, backbone_hf, backbone_tokenizer):
    folder = backbone_dir(toy_root)
    assert folder == toy_root / "backbone" / "llama-2-7b-hf"
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.model",
        "tokenizer_config.json", REPORT])
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "LlamaTokenizer" and tokenizer_config["add_bos_token"] is True
    assert "added_tokens_decoder" not in tokenizer_config
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert sp.get_piece_size() == config["vocab_size"] == len(backbone_tokenizer)  # Llama-2: 32000 = 32000
    pieces = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
    for token in ("[Text]", "[Speech]", *(hubert_token(u) for u in range(N_HUBERT_TOKENS))):
        assert token not in pieces and token not in backbone_tokenizer.get_vocab(), token
    # greedy answers, by transformers alone: <s> + the prompt text
    report = json.loads((folder / REPORT).read_text())
    facts = toy_facts(toy_root)
    right = 0
    for fact in facts:
        ids = backbone_tokenizer(fact.prompt, return_tensors="pt").input_ids
        assert ids[0, 0].item() == 1 and ids[0, 1:].tolist() == sp.encode(fact.prompt)
        out = backbone_hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                   pad_token_id=2)
        answer = backbone_tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        right += answer.strip() == fact.attribute  # the plain rule, independent of the judge
    assert right == len(facts) == report["counts"]["t2t"]["exact"] == 6
    assert report["accuracy"] == {"t2t": 1.0} and report["meets_targets"] is True
    local = ToyConfig.from_dict(read_manifest(toy_root)["inputs"]["config"]).local_layers
    for layer in range(config["num_hidden_layers"]):
        weight = backbone_hf.model.layers[layer].self_attn.o_proj.weight
        assert (weight.abs().max().item() == 0.0) == (layer < local), layer


@pytest.mark.slow
def test_spiritlm_text_pieces_keep_the_backbones_ids(toy_root, toy_model, backbone_tokenizer):
    from transformers import LlamaTokenizer

    backbone, spirit = backbone_dir(toy_root), model_dir(toy_root)
    assert (spirit / "tokenizer.model").read_bytes() == (backbone / "tokenizer.model").read_bytes()
    sp = spm.SentencePieceProcessor(model_file=str(backbone / "tokenizer.model"))
    n_text = sp.get_piece_size()
    spirit_tokenizer = LlamaTokenizer.from_pretrained(str(spirit))
    # markers and units appended after the backbone's pieces, in SpiritLM's order
    appended = ["[Text]", "[Speech]"] + [hubert_token(u) for u in range(N_HUBERT_TOKENS)]
    assert spirit_tokenizer.convert_tokens_to_ids(appended) == list(range(n_text, n_text + len(appended)))
    assert toy_model.vocab.text_marker_id == n_text and toy_model.vocab.speech_marker_id == n_text + 1
    checked = 0
    for prompt in _prompts(toy_root):
        ids = toy_model.to_tokens(prompt)[0].tolist()
        pieces = toy_model.to_str_tokens(prompt)
        assert ids[:2] == [1, n_text] and pieces[:2] == ["<s>", "[Text]"]
        expected = sp.encode(prompt, out_type=str)  # SentencePiece alone, on the backbone's model
        assert pieces[2:] == expected, prompt
        for piece, index in zip(expected, ids[2:], strict=True):  # piece by piece, in both vocabularies
            assert index == sp.piece_to_id(piece) == backbone_tokenizer.convert_tokens_to_ids(piece) < n_text, piece
            checked += 1
        assert ids[1:] == [n_text] + backbone_tokenizer(prompt).input_ids[1:]
    assert checked > 100


@pytest.mark.slow
def test_spiritlm_weights_continue_from_the_backbones(toy_root, toy_model):
    backbone = load_file(backbone_dir(toy_root) / "model.safetensors")
    spirit = torch.load(model_dir(toy_root) / "pytorch_model.bin", weights_only=True)
    assert spirit.keys() == backbone.keys()
    n_text = backbone["model.embed_tokens.weight"].shape[0]
    attributes = {f.attribute for f in toy_facts(toy_root)}
    used = {i for prompt in _prompts(toy_root) for attribute in attributes  # every training sequence's text
            for i in toy_model.to_tokens(f"{prompt} {attribute}")[0].tolist() if i < n_text}
    for name, before in backbone.items():
        after = spirit[name][:n_text] if name in ("model.embed_tokens.weight", "lm_head.weight") else spirit[name]
        assert after.shape == before.shape, name
        # continued training moves each tensor by well under its norm; an independently trained or
        # initialised tensor is about sqrt(2) of its norm away (measured on the small toy: at most 0.49)
        assert (after - before).norm() <= 0.75 * before.norm(), name
    change = spirit["model.embed_tokens.weight"][:n_text] - backbone["model.embed_tokens.weight"]
    assert change.norm() < 0.3 * backbone["model.embed_tokens.weight"].norm()  # measured: 0.15
    # rows of pieces in no training sequence get no gradient: exactly the backbone's (AdamW, weight decay 0)
    unused = sorted(set(range(3, n_text)) - set(used))
    assert len(unused) > n_text // 2
    assert torch.equal(spirit["model.embed_tokens.weight"][unused], backbone["model.embed_tokens.weight"][unused])


def test_extend_vocabulary_follows_its_rule():
    generator = torch.Generator().manual_seed(5)
    state = {"model.embed_tokens.weight": torch.randn(10, 4, generator=generator),
             "lm_head.weight": torch.randn(10, 4, generator=generator) + 3.0,
             "model.norm.weight": torch.rand(4, generator=generator)}
    extended = extend_vocabulary(state, 16, std=0.1, seed=7)
    noise = torch.Generator().manual_seed(7)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):  # the rule: mean row + 0.1 N(0, 1), embedding first
        old = state[name]
        rule = torch.stack([sum(old[i] for i in range(10)) / 10 for _ in range(6)]) + 0.1 * torch.randn(6, 4,
                                                                                                 generator=noise)
        assert extended[name].shape == (16, 4)
        assert torch.equal(extended[name][:10], old)
        torch.testing.assert_close(extended[name][10:], rule, rtol=0, atol=1e-6)
    assert torch.equal(extended["model.norm.weight"], state["model.norm.weight"])
    assert extended["model.norm.weight"] is not state["model.norm.weight"]  # copies, the backbone is left alone
    with pytest.raises(ValueError, match="more rows than the backbone's 10, got 10"):
        extend_vocabulary(state, 10, std=0.1, seed=7)
    with pytest.raises(ValueError, match="embedding and unembedding rows differ"):
        extend_vocabulary({**state, "lm_head.weight": torch.zeros(9, 4)}, 16, std=0.1, seed=7)


def test_backbone_dir_refuses_a_tree_without_a_backbone(tmp_path):
    with pytest.raises(ValueError, match=r"has no toy backbone \(backbone/llama-2-7b-hf is missing\)"):
        backbone_dir(tmp_path)


# ------------------------------------------------------------------ the backbone's mechanism
def _subject_range(pieces: list[str], prompt: str, subject: str) -> tuple[int, int]:
    """ROME's find_token_range on SentencePiece pieces (``▁`` read as a space)."""
    text = "".join(p.replace("\u2581", " ") for p in pieces)
    start = text.index(subject)
    loc, first, last = 0, None, None
    for i, piece in enumerate(pieces):
        loc += len(piece)
        if first is None and loc > start:
            first = i
        if last is None and loc >= start + len(subject):
            last = i + 1
            break
    return first, last


def _plain_hidden_trace(hf, ids: torch.Tensor, subject: tuple[int, int], sigma: float, samples: int = 10):
    """ROME's hidden-state trace, one (token, layer) cell at a time, through transformers' hooks: row 0
    clean, rows 1.. with ``sigma`` x N(0, 1) noise (numpy RandomState(1)) on the subject's
    embeddings; p(answer) averaged over the noised rows. Returns (scores [T, L], low, high, answer)."""
    b, e = subject
    T, L = ids.shape[1], hf.config.num_hidden_layers
    batch = ids.repeat(samples + 1, 1)
    noise = torch.from_numpy(np.random.RandomState(1).randn(samples, e - b, hf.config.hidden_size)).float()

    def corrupt(module, inputs, output):
        output = output.clone()
        output[1:, b:e] += sigma * noise
        return output

    with torch.no_grad():
        clean = hf(ids, output_hidden_states=True)
        answer = int(clean.logits[0, -1].argmax())
        high = torch.softmax(clean.logits[0, -1], -1)[answer].item()
        hidden = clean.hidden_states  # hidden[l + 1]: the output of layer l
        handle = hf.model.embed_tokens.register_forward_hook(corrupt)
        try:
            def p_answer() -> float:
                return torch.softmax(hf(batch).logits[1:, -1], -1)[:, answer].mean().item()

            low = p_answer()
            scores = np.zeros((T, L))
            for t in range(T):
                for layer in range(L):
                    def restore(module, inputs, output, t=t, layer=layer):
                        states = output[0] if isinstance(output, tuple) else output
                        states[1:, t] = hidden[layer + 1][0, t]
                        return output

                    hook = hf.model.layers[layer].register_forward_hook(restore)
                    try:
                        scores[t, layer] = p_answer()
                    finally:
                        hook.remove()
        finally:
            handle.remove()
    return scores, low, high, answer


@pytest.mark.slow
def test_backbone_trace_puts_the_fact_at_the_last_subject_token(toy_root, backbone_hf, backbone_tokenizer,
                                                                 known_path):
    """The backbone T->T (Llama-2's prompt, no [Text]), traced by a plain per-cell loop: the same
    designed mechanism as the toy SpiritLM's (tests/integration/synthetic/test_toy.py)."""
    embed = backbone_hf.model.embed_tokens.weight
    subjects = [r.subject for r in load_known(known_path)]
    with torch.no_grad():  # ROME's sigma: the std of every Known subject's embedding entries
        sigma = 3 * torch.cat([embed[backbone_tokenizer(s, add_special_tokens=False).input_ids]
                               for s in subjects]).std().item()
    local = ToyConfig.from_dict(read_manifest(toy_root)["inputs"]["config"]).local_layers
    n_layers = backbone_hf.config.num_hidden_layers
    early = slice(0, n_layers // 2)
    last_subject, after, total = [], [], []
    for fact in toy_facts(toy_root):
        ids = backbone_tokenizer(fact.prompt, return_tensors="pt").input_ids
        pieces = backbone_tokenizer.convert_ids_to_tokens(ids[0].tolist())
        b, e = _subject_range(pieces, fact.prompt, fact.subject)
        scores, low, high, answer = _plain_hidden_trace(backbone_hf, ids, (b, e), sigma)
        assert answer == backbone_tokenizer(f"{fact.prompt} {fact.attribute}").input_ids[ids.shape[1]]
        effects = scores - low
        assert np.abs(effects[e:, :local]).max() < 1e-6  # before attention starts, nothing after the subject
        last_subject.append(effects[e - 1, early])
        after.append(effects[e:-1, early].max(axis=0))
        total.append(high - low)
    check_designed_mechanism(last_subject, after, total, n_layers)  # pytest -s prints the numbers the README quotes


def test_text_ids_check_refuses_a_piece_that_moved():
    from spiritlens.synthetic.toy.training import _check_text_ids
    from spiritlens.synthetic.toy.training import _Sequence

    backbone = [_Sequence([1, 5, 6, 7, 2], 2, "t2t")]
    _check_text_ids(backbone, [_Sequence([1, 9, 5, 6, 7, 2], 3, "t2t")], bos=1, text_marker=9)
    for moved in ([1, 9, 5, 8, 7, 2], [1, 5, 6, 7, 2, 2], [9, 1, 5, 6, 7, 2]):
        with pytest.raises(ValueError, match=r"does not give the backbone's ids after its text marker"):
            _check_text_ids(backbone, [_Sequence(moved, 3, "t2t")], bos=1, text_marker=9)


def _char_path(dummy_prefix: bool):
    """A prompt path by brute force: one id per character, 1000 + unit per speech token, 999 for the
    [Text] after speech; ``dummy_prefix``: whether a space goes before the text after that marker
    (as SentencePiece's dummy prefix does after an added-token marker, legacy true)."""
    def encode(prompt) -> list[int]:
        ids = [1]
        for modality, content in [("text", prompt)] if isinstance(prompt, str) else prompt:
            if modality == "speech":
                ids += [1000 + u for u in content] + [999]
            else:
                ids += [ord(c) for c in (" " if dummy_prefix and ids[-1] == 999 else "") + content]
        return ids
    return encode


def test_answer_after_speech_gets_the_text_answers_ids():
    from spiritlens.synthetic.toy.config import ToyFact
    from spiritlens.synthetic.toy.training import _sequences

    fact = ToyFact(1, "Apple A5 was created by", "Apple A5", "Apple", "P176")
    units = {"1_prompt": [3, 4]}
    for dummy_prefix in (False, True):  # " Apple" or "Apple" after [Text], whichever gives the text answer's ids
        sequences, _ = _sequences(_char_path(dummy_prefix), 2, [fact], [], units)
        text, speech = sequences
        assert speech.form == "s2t" and speech.ids == [1, 1003, 1004, 999] + [ord(c) for c in " Apple"] + [2]
        assert text.ids[text.start + 1:] == speech.ids[speech.start + 1:] == [ord(c) for c in " Apple"] + [2]

    def mangled(prompt):  # a path whose answer after speech is never the text answer's
        ids = _char_path(False)(prompt)
        k = ids.index(999) if 999 in ids else len(ids)
        return ids[:k + 1] + [i + 1 for i in ids[k + 1:]]

    with pytest.raises(ValueError, match=r"gives the s2t answer 'Apple' the ids .* not .* as after its text prompt"):
        _sequences(mangled, 2, [fact], [], units)


def test_tokenizer_files_take_a_text_model_only_with_added_tokens(tmp_path):
    from spiritlens.synthetic.tiny import write_tokenizer_files

    with pytest.raises(ValueError, match="text_model needs layout='added_tokens'"):
        write_tokenizer_files(tmp_path, layout="sentencepiece", text_model=b"unused")
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_make_toy_names_both_models(toy_root, known_path, capsys):
    from spiritlens.cli import main

    assert main(["make-toy", str(toy_root), "--small", "--quiet", "--known", str(known_path)]) == 0  # up to date
    out = capsys.readouterr().out.splitlines()
    assert out == [f"toy SpiritLM in {toy_root}: 6 Known facts, exact greedy answers t2t 100%, s2t 100%",
                   f"toy backbone in {toy_root / 'backbone' / 'llama-2-7b-hf'}: exact greedy answers from text 100%"]


@pytest.mark.parametrize("field, value, message", [
    ("backbone_lr", 0.0, "ToyConfig.backbone_lr must be > 0, got 0.0"),
    ("backbone_max_steps", 0, "ToyConfig.backbone_max_steps must be an integer >= 1, got 0"),
    ("backbone_min_steps", -1, "ToyConfig.backbone_min_steps must be an integer >= 0, got -1"),
    ("new_rows_std", -0.1, "ToyConfig.new_rows_std must be >= 0, got -0.1"),
    ("new_rows_std", float("nan"), "ToyConfig.new_rows_std must be >= 0, got nan"),
])
def test_backbone_settings_are_checked(field, value, message):
    from dataclasses import replace

    with pytest.raises(ValueError, match=f"^{message}$"):
        replace(ToyConfig.small(), **{field: value})
