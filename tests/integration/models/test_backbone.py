"""The Llama-2 backbone family (spiritlens.models.llama) against independent references: logits equal
``transformers.LlamaForCausalLM`` on the same folder, token ids equal the folder's own ``LlamaTokenizer``,
and causal traces equal ROME's plain per-cell loop (tests/reference_tracing.py)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_logits_equal_llama_for_causal_lm
from reference_tracing import reference_trace

from spiritlens import HookedSpeechLM, HookedSpiritLM, trace
from spiritlens.synthetic.tiny_llama import write_tiny_llama

PROMPT, SUBJECT = "The Space Needle is located in the city of", "Space Needle"


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("llama") / "llama-2-tiny")


@pytest.fixture(scope="module")
def backbone(backbone_dir):
    return HookedSpeechLM.from_pretrained(backbone_dir)


def test_the_family_is_detected_and_text_only(backbone, backbone_dir):
    assert backbone.family.name == "llama" and not backbone.vocab.has_speech and backbone.vocab.marker_ids == ()
    assert repr(backbone).startswith("HookedSpeechLM('llama-2-tiny', family='llama'")
    with pytest.raises(ValueError, match=r"is a Llama-2 \(text-only backbone\) checkpoint, not SpiritLM"):
        HookedSpiritLM.from_pretrained(backbone_dir)
    with pytest.raises(ValueError, match="is a text-only model: it has no speech tokenizer"):
        backbone.to_tokens([("speech", np.zeros(16000, dtype=np.float32))])
    with pytest.raises(ValueError, match=r"produces text only, not output_modality 'speech'"):
        backbone.to_tokens(PROMPT, "speech")


def test_ids_are_llama2s_own(backbone, backbone_dir):
    """Llama-2's prompt: BOS, then SentencePiece on the text (the folder's own model, read here by sentencepiece)."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(backbone_dir / "tokenizer.model"))
    for text in (PROMPT, "Xbox was sold in 1999", "Toko Yasuda plays the guitar"):
        assert backbone.to_tokens(text)[0].tolist() == [sp.bos_id()] + sp.encode(text)
    ids, token_map = backbone.encode(PROMPT)
    assert ids[0, 0].item() == 1 and [p.kind for p in token_map.positions][:2] == ["bos", "text"]
    b, e = token_map.find_text(SUBJECT)
    assert backbone.to_string(ids[0, b:e]).strip() == SUBJECT


def test_logits_equal_llama_for_causal_lm(backbone, backbone_dir):
    assert_logits_equal_llama_for_causal_lm(backbone, backbone_dir, [PROMPT])


@pytest.mark.parametrize("kind, window", [("hidden", None), ("mlp", 2), ("attn", 3)])
def test_traces_equal_romes_plain_loop(backbone, kind, window):
    ids, token_map = backbone.encode(PROMPT)
    b, e = token_map.find_text(SUBJECT)
    result = trace(backbone, PROMPT, SUBJECT, kind=kind, samples=3, noise=0.5, seed=2, window=window)
    table, low, high, answer = reference_trace(backbone, ids[0].tolist(), b, e, kind, samples=3, nu=0.5, seed=2,
                                               window=result.window, answer=result.answer_id)
    assert result.answer_rule == "top1_text" and result.subject_range == (b, e)
    assert abs(result.high_score - high) <= 1e-6 and abs(result.low_score - low) <= 1e-6
    assert np.abs(result.scores - table).max() <= 1e-6
    assert np.abs(table - low).max() > 1e-4


def test_transformerlens_habits_on_the_backbone(backbone):
    logits, cache = backbone.run_with_cache(PROMPT)
    last = f"blocks.{backbone.cfg.n_layers - 1}.hook_resid_post"
    final = cache.apply_ln_to_stack(cache[last], layer=-1) @ backbone.W_U  # the logit lens at the last layer
    assert float((final[0, -1] - logits[0, -1]).abs().max()) <= 1e-4
    text = backbone.generate(PROMPT, max_new_tokens=3, do_sample=False, verbose=False)
    assert text.startswith(PROMPT)
    assert backbone.to_str_tokens(PROMPT)[0] == "<s>"
