"""The SpeechGPT family (spiritlens.models.speechgpt) on tiny random checkpoints in SpeechGPT's layout, against
independent references: logits equal ``transformers.LlamaForCausalLM`` on the same folder; token ids equal
transformers 4.33's rule written out (``helpers.brute_force_433``) on the string SpeechGPT's ``cli_infer.py``
builds (its template read from the fixture transformers 4.33.1 tokenised); speech units equal a plain loop
over the mHuBERT's features and the k-means centres (nearest centre, duplicates merged, as ``speech2unit.py``);
T->T and S->T causal traces equal ROME's plain per-cell loop (tests/reference_tracing.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from reference_tracing import reference_trace

from helpers import FIXTURES, assert_logits_equal_llama_for_causal_lm, brute_force_433

from spiritlens import HookedSpeechLM, HookedSpiritLM, trace
from spiritlens.checkpoints.pickle_safe import load_joblib, load_weights
from spiritlens.models.speechgpt.family import SpeechGPT
from spiritlens.synthetic.tiny_speechgpt import write_tiny_speechgpt
from spiritlens.units.hubert import HubertFeatures

PROMPT, SUBJECT = "The Space Needle is located in the city of", "Space Needle"
CASES = json.loads((FIXTURES / "speechgpt" / "reference.json").read_text(encoding="utf-8"))["cases"]
CHAT = next(c for c in CASES if c["template"] and c["text"] == PROMPT)
HEAD, TAIL = CHAT["prompt"].split(PROMPT)  # cli_infer.py's META_INSTRUCTION + "[Human]: ", " <eoh>. [SpeechGPT]: "


def chat(question: str) -> str:
    return HEAD + question + TAIL


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return write_tiny_speechgpt(tmp_path_factory.mktemp("speechgpt"))


@pytest.fixture(scope="module")
def model(folders):
    model_dir, speech_dir = folders
    return HookedSpeechLM.from_pretrained(model_dir, speech_tokenizer=speech_dir)


@pytest.fixture(scope="module")
def raw_model(folders):
    model_dir, speech_dir = folders
    return HookedSpeechLM.from_pretrained(model_dir, speech_tokenizer=speech_dir, family=SpeechGPT(template=False))


@pytest.fixture(scope="module")
def audio():
    seconds = np.arange(int(1.3 * 16_000)) / 16_000
    rng = np.random.RandomState(5)
    return (0.3 * np.sin(2 * np.pi * (220 + 300 * seconds) * seconds) + 0.05 * rng.randn(seconds.size)).astype(np.float32)


def test_the_folder_is_speechgpts_layout(folders):
    model_dir, speech_dir = folders
    assert sorted(p.name for p in model_dir.iterdir()) == ["added_tokens.json", "config.json", "pytorch_model.bin",
                                                           "special_tokens_map.json", "tokenizer.model",
                                                           "tokenizer_config.json"]
    assert sorted(p.name for p in speech_dir.iterdir()) == ["mhubert_base_vp_en_es_fr_it3.pt",
                                                            "mhubert_base_vp_en_es_fr_it3_L11_km1000.bin"]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["vocab_size"] == 1024 + 1006 and config["transformers_version"] == "4.29.0.dev0"
    assert not {"num_key_value_heads", "rope_theta", "rope_scaling"} & set(config)
    added = json.loads((model_dir / "added_tokens.json").read_text())
    assert added["<0>"] == 1024 and added["<999>"] == 2023 and added["<sosp>"] == 2024 and added["<eos>"] == 2029
    assert json.loads((model_dir / "special_tokens_map.json").read_text())["pad_token"] == "<unk>"
    assert "legacy" not in json.loads((model_dir / "tokenizer_config.json").read_text())
    weights = load_weights(model_dir / "pytorch_model.bin")
    assert [k for k in weights if "inv_freq" in k] == [f"model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(4)]
    assert all(v.dtype == torch.float32 for v in weights.values())
    kmeans = load_joblib(speech_dir / "mhubert_base_vp_en_es_fr_it3_L11_km1000.bin", "k-means")
    assert type(kmeans).__name__ == "MiniBatchKMeans" and kmeans.cluster_centers_.shape == (1000, 48)


def test_the_family_is_detected(model, folders):
    model_dir, _ = folders
    assert model.family.name == "speechgpt" and model.family.template
    assert repr(model).startswith("HookedSpeechLM('SpeechGPT-7B-cm', family='speechgpt'")
    assert model.vocab.hubert_ids == tuple(range(1024, 2024)) and model.vocab.speech_marker_id == 2024
    assert set(model.vocab.marker_ids) == {2024, 2025, 2026, 2027, 2028} and model.vocab.bos_id == 1
    assert model.tokenization.markers == "added_tokens" and model.tokenization.declared_in == ("added_tokens.json",)
    assert model.tokenization.rules == "4.33" and "transformers 4.33's slow LlamaTokenizer" in model.tokenization.describe()
    with pytest.raises(ValueError, match=r"is a SpeechGPT checkpoint, not SpiritLM"):
        HookedSpiritLM.from_pretrained(model_dir)
    with pytest.raises(ValueError, match=r"is a SpeechGPT checkpoint, not Llama-2"):
        HookedSpeechLM.from_pretrained(model_dir, family="llama")


def test_logits_equal_llama_for_causal_lm(model, folders, audio):
    assert_logits_equal_llama_for_causal_lm(model, folders[0], [
        PROMPT, [("speech", audio)], [("text", "Recognize this speech, this is input: "), ("speech", audio)]])


def test_ids_are_speechgpts_own(model, raw_model, folders, audio):
    """cli_infer.py's string (template from the 4.33.1 fixture) through transformers 4.33's rule, written out."""
    for question in (PROMPT, "Xbox was sold in 1999", "Toko  Yasuda plays the guitar  "):
        assert model.to_tokens(question)[0].tolist() == brute_force_433(folders[0], chat(question))
        assert raw_model.to_tokens(question)[0].tolist() == brute_force_433(folders[0], question)
    units = model.speech_tokenizer.encode(audio)
    spoken = "<sosp>" + "".join(f"<{u}>" for u in units.tokens) + "<eosp>"
    assert model.to_tokens([("speech", units)])[0].tolist() == brute_force_433(folders[0], chat(spoken))
    assert raw_model.to_tokens([("speech", units)])[0].tolist() == [1, 2024, *(1024 + u for u in units.tokens), 2025]
    mixed = [("text", "Recognize this speech, this is input: "), ("speech", units)]
    assert model.to_tokens(mixed)[0].tolist() == brute_force_433(folders[0], chat("Recognize this speech, this is "
                                                                                  "input:" + spoken))


def test_token_map_of_a_chat_prompt(model, audio):
    ids, token_map = model.encode(PROMPT)
    kinds = [p.kind for p in token_map.positions]
    b, e = token_map.find_text(SUBJECT)
    assert model.to_string(ids[0, b:e]).strip() == SUBJECT
    first = next(p for p in token_map.positions if p.kind == "text")
    assert model.tokenizer.convert_ids_to_tokens(first.token_id) == "▁The" and first.char_span == (0, 3)
    assert kinds[0] == "bos" and kinds.count("marker") == 3 and kinds[-1] == "template"
    assert [model.tokenizer.convert_ids_to_tokens(p.token_id) for p in token_map.positions if p.kind == "marker"] == \
        ["[Human]", "<eoh>", "[SpeechGPT]"]
    assert "".join(model.tokenizer.convert_ids_to_tokens(p.token_id) for p in token_map.positions
                   if p.kind == "text").replace("▁", " ").strip() == PROMPT
    units = model.speech_tokenizer.encode(audio)
    _, speech_map = model.encode([("speech", units)])
    speech = [p for p in speech_map.positions if p.kind == "speech"]
    assert [p.unit_index for p in speech] == list(range(len(units.tokens)))
    assert [p.frame_span for p in speech] == [tuple(s) for s in units.spans]
    around = [model.tokenizer.convert_ids_to_tokens(speech_map.positions[speech[i].position + d].token_id)
              for i, d in ((0, -1), (-1, 1))]
    assert around == ["<sosp>", "<eosp>"]


def test_speech_units_equal_a_plain_loop(model, folders, audio):
    """speech2unit.py's rule on the same files: layer-11 features, nearest centre, duplicates merged; 50 Hz."""
    _, speech_dir = folders
    features = HubertFeatures.from_checkpoint(speech_dir / "mhubert_base_vp_en_es_fr_it3.pt", output_layer=11)
    centers = load_joblib(speech_dir / "mhubert_base_vp_en_es_fr_it3_L11_km1000.bin", "k").cluster_centers_
    x = features.features(torch.from_numpy(audio)).numpy()
    frames = [int(np.argmin(((row[None] - centers) ** 2).sum(-1))) for row in x]
    merged = [u for i, u in enumerate(frames) if i == 0 or frames[i - 1] != u]
    units = model.speech_tokenizer.encode(audio)
    assert len(frames) == (audio.size - 400) // 320 + 1 and units.units == frames and units.tokens == merged
    assert units.frame_seconds == 0.02 and len(set(merged)) > 5


def test_speech_tokenizer_refusals(model, folders, tmp_path):
    model_dir, _ = folders
    bare = HookedSpeechLM.from_pretrained(model_dir)
    with pytest.raises(FileNotFoundError, match="SpeechGPT's speech tokenizer has no fixed place: pass speech_tokenizer="):
        bare.to_tokens([("speech", np.zeros(16000, np.float32))])
    with pytest.raises(FileNotFoundError, match=r"not SpeechGPT's speech tokenizer folder .*"
                                                r"mhubert_base_vp_en_es_fr_it3_L11_km1000.bin missing"):
        HookedSpeechLM.from_pretrained(model_dir, speech_tokenizer=tmp_path).speech_tokenizer
    with pytest.raises(ValueError, match="are too short to encode: at least 400 samples"):
        model.speech_tokenizer.encode(np.zeros(399, np.float32))
    tail = 1_600_000 + 100
    with pytest.raises(ValueError, match="its last 1600000-sample chunk has 100 samples, fewer than the 400"):
        model.speech_tokenizer.encode(np.zeros(tail, np.float32))


@pytest.mark.parametrize("kind, window", [("hidden", None), ("mlp", 2)])
def test_t2t_trace_equals_romes_plain_loop(raw_model, kind, window):
    ids, token_map = raw_model.encode(PROMPT)
    b, e = token_map.find_text(SUBJECT)
    result = trace(raw_model, PROMPT, SUBJECT, kind=kind, samples=2, noise=0.5, seed=2, window=window)
    table, low, high, _ = reference_trace(raw_model, ids[0].tolist(), b, e, kind, samples=2, nu=0.5, seed=2,
                                          window=result.window, answer=result.answer_id)
    assert result.subject_range == (b, e) and (b, e) == (2, 4)  # <s> ▁The ▁Space ▁Needle: no template
    assert abs(result.high_score - high) <= 1e-6 and abs(result.low_score - low) <= 1e-6
    assert np.abs(result.scores - table).max() <= 1e-6
    assert np.abs(table - low).max() > 1e-4


def test_chat_template_trace_equals_romes_plain_loop(model):
    """The chat template's 190-token prompt: the subject's rows, the template's last rows and two of its
    first, every layer (the other cells are left out to keep the plain loop short). 5e-6, not 1e-6: float32
    sums over 190 positions in the engine's batches and the loop's differ by ~1e-6 at p ~ 0.5."""
    ids, token_map = model.encode(PROMPT)
    b, e = token_map.find_text(SUBJECT)
    T, L = ids.shape[1], model.cfg.n_layers
    rows = [1, 2, b - 1, *range(b, e), e, T - 3, T - 2, T - 1]
    result = trace(model, PROMPT, SUBJECT, kind="hidden", samples=2, noise=0.5, seed=2,
                   cells=[(r, layer) for r in rows for layer in range(L)])
    table, low, high, _ = reference_trace(model, ids[0].tolist(), b, e, "hidden", samples=2, nu=0.5, seed=2,
                                          answer=result.answer_id, rows=[[r] for r in rows])
    assert result.subject_range == (b, e) and T > 150 and token_map.positions[T - 1].kind == "template"
    assert abs(result.high_score - high) <= 5e-6 and abs(result.low_score - low) <= 5e-6
    assert np.abs(result.scores[rows] - table).max() <= 5e-6
    assert np.isnan(np.delete(result.scores, rows, axis=0)).all()
    assert np.abs(table - low).max() > 1e-4


@pytest.mark.parametrize("kind", ["hidden", "attn"])
def test_s2t_trace_equals_romes_plain_loop(raw_model, audio, kind):
    """Speech through SpeechGPT's own speech tokenizer; the subject given as speech positions."""
    units = raw_model.speech_tokenizer.encode(audio[:8000])  # half a second: 24 frames
    ids, token_map = raw_model.encode([("speech", units)])
    speech = [p.position for p in token_map.positions if p.kind == "speech"]
    b, e = speech[2], speech[7] + 1
    result = trace(raw_model, [("speech", units)], subject_range=(b, e), kind=kind, samples=2, noise=0.5, seed=3,
                   window=2)
    table, low, high, _ = reference_trace(raw_model, ids[0].tolist(), b, e, kind, samples=2, nu=0.5, seed=3,
                                          window=result.window, answer=result.answer_id)
    assert result.subject_range == (b, e) and result.scores.shape == (len(ids[0]), raw_model.cfg.n_layers)
    assert abs(result.high_score - high) <= 1e-6 and abs(result.low_score - low) <= 1e-6
    assert np.abs(result.scores - table).max() <= 1e-6
    assert np.abs(table - low).max() > 1e-4


def test_transformerlens_habits_on_speechgpt(model, raw_model, folders):
    import sentencepiece

    logits, cache = model.run_with_cache(PROMPT)
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    final = cache.apply_ln_to_stack(cache[last], layer=-1) @ model.W_U  # the logit lens at the last layer
    assert float((final[0, -1] - logits[0, -1]).detach().abs().max()) <= 1e-4
    assert model.to_str_tokens(PROMPT)[0] == "<s>" and model.to_str_tokens(PROMPT)[-4:] == \
        model.tokenizer.convert_ids_to_tokens(brute_force_433(folders[0], TAIL)[-4:])
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folders[0] / "tokenizer.model"))
    piece = model.to_tokens(" Paris", prepend_bos=False)[0].tolist()  # a piece to append: no template around it
    assert piece == raw_model.to_tokens(" Paris", prepend_bos=False)[0].tolist() and piece[-1] == sp.encode("Paris")[-1]
    assert len(piece) <= len(sp.encode(" Paris"))
    assert model.to_single_token("<sosp>") == 2024 and model.to_single_token("<7>") == 1031
    batch = model.to_tokens([PROMPT, "Xbox was sold in"])
    alone = model.to_tokens("Xbox was sold in")[0]
    assert batch[1, -alone.shape[0]:].tolist() == alone.tolist()  # left-padded, as the bridge pads
    new = model.generate_ids(PROMPT, max_new_tokens=4)
    assert not set(new.tolist()) & (model.vocab.speech_ids | set(model.vocab.marker_ids))
    spoken = model.generate_ids(PROMPT, "speech", max_new_tokens=3)
    assert set(spoken.tolist()) <= model.vocab.speech_ids
    assert model.to_tokens(PROMPT, "speech")[0, -1].item() == 2024  # <sosp> opens SpeechGPT's spoken answer
    text = model.generate(PROMPT, max_new_tokens=3, do_sample=False, verbose=False)
    assert text.startswith(PROMPT)


def test_prompt_rule_warning_names_the_template(model):
    from spiritlens.model.bridge_paths import PromptRuleWarning

    with pytest.warns(PromptRuleWarning, match="without SpeechGPT's You are an AI assistant whose name is SpeechGPT"):
        model.tokenizer("The capital of Italy is")
