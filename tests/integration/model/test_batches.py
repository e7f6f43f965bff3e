"""Batches of prompts as TransformerLens takes them: to_tokens(list), model(list), run_with_cache(list),
generate(list). References: each prompt alone (SpiritLM's single-prompt path) and LlamaForCausalLM
given the padded batch with its attention mask and the position ids HF's generate derives from it."""

from __future__ import annotations

import pytest
import torch

PROMPTS = ["The Space Needle is located in the city of", "Paris is the capital of",
           "The Eiffel Tower is in"]


def hf_batch_logits(hf_model, tokens, mask):
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return hf_model(tokens, attention_mask=mask, position_ids=positions).logits


@pytest.mark.parametrize("side", ["right", "left"])
def test_each_row_equals_its_prompt_alone_and_llama_with_the_mask(tiny_model, hf_tiny_model, side):
    batch = tiny_model.encode_batch(PROMPTS, padding_side=side)
    singles = [tiny_model.to_tokens(p)[0] for p in PROMPTS]
    width = max(len(s) for s in singles)
    assert batch.tokens.shape == batch.attention_mask.shape == (3, width)
    assert torch.equal(tiny_model.to_tokens(PROMPTS, padding_side=side), batch.tokens)
    logits = tiny_model(PROMPTS, padding_side=side)
    reference = hf_batch_logits(hf_tiny_model, batch.tokens, batch.attention_mask)
    for i, single in enumerate(singles):
        columns = batch.columns(i)
        assert torch.equal(batch.tokens[i, columns], single)
        assert int(batch.attention_mask[i].sum()) == len(single)
        alone = tiny_model(single[None])[0]
        assert float((logits[i, columns] - alone).abs().max()) <= 1e-4
        assert float((logits[i, columns] - reference[i, columns]).abs().max()) <= 1e-4
        # the TokenMap of row i is the single prompt's, at columns p + offset
        assert [info.token_id for info in batch.token_maps[i].positions] == single.tolist()
        assert batch.offsets[i] == columns.start
    assert torch.equal(batch.last_columns(), torch.tensor([batch.columns(i).stop - 1 for i in range(3)]))


def test_left_padded_ids_are_masked_without_being_told(tiny_model):
    """to_tokens(list, padding_side='left') then model(tokens): the leading EOS ids before BOS are masked,
    as TransformerLens masks a batch it padded; unmasked, the logits would shift."""
    tokens = tiny_model.to_tokens(PROMPTS, padding_side="left")
    masked = tiny_model(tokens)
    explicit = tiny_model(tokens, attention_mask=tiny_model.encode_batch(PROMPTS, padding_side="left").attention_mask)
    assert torch.equal(masked, explicit)
    unmasked = tiny_model.bridge(tokens)  # the bridge alone reads the pads as tokens
    short = min(range(3), key=lambda i: len(tiny_model.to_tokens(PROMPTS[i])[0]))
    assert float((unmasked[short, -1] - masked[short, -1]).abs().max()) > 1e-2


def test_run_with_cache_of_a_batch(tiny_model):
    batch = tiny_model.encode_batch(PROMPTS, padding_side="left")
    logits, cache = tiny_model.run_with_cache(PROMPTS, padding_side="left")
    for i, prompt in enumerate(PROMPTS):
        alone_logits, alone = tiny_model.run_with_cache(prompt)
        columns = batch.columns(i)
        assert float((logits[i, columns] - alone_logits[0]).abs().max()) <= 1e-4
        for name in ("blocks.1.hook_resid_post", "blocks.0.hook_attn_out"):
            torch.testing.assert_close(cache[name][i, columns], alone[name][0], rtol=1e-5, atol=1e-4)


def test_generate_a_batch_row_by_row(tiny_model, hf_tiny_model):
    together = tiny_model.generate(PROMPTS, max_new_tokens=6, do_sample=False, verbose=False)
    alone = [tiny_model.generate(p, max_new_tokens=6, do_sample=False, verbose=False) for p in PROMPTS]
    assert together == alone
    ids = tiny_model.generate_ids(PROMPTS, max_new_tokens=6)
    for prompt, row in zip(PROMPTS, ids):
        assert torch.equal(row, tiny_model.generate_ids(prompt, max_new_tokens=6))


def test_str_tokens_of_a_batch_and_pieces_without_bos(tiny_model):
    rows = tiny_model.to_str_tokens(PROMPTS[:2])  # TransformerLens: each prompt alone, no padding
    assert rows == [tiny_model.to_str_tokens(p) for p in PROMPTS[:2]]
    assert [r[-1] for r in rows] == ["▁of", "▁of"] and rows[1][0] == rows[0][0] == "<s>"
    padded = tiny_model.to_tokens(PROMPTS[:2])  # the tokenizer's side, "left" as on the bridge
    assert tiny_model.to_str_tokens(padded)[1][0] == "</s>"
    # prepend_bos=False: a piece to go after other tokens (TransformerLens' meaning), no BOS and no marker
    assert tiny_model.to_str_tokens(" Paris", prepend_bos=False) == ["▁Paris"]
    whole = tiny_model.to_tokens("The capital of Italy is Paris")[0].tolist()
    piece = tiny_model.to_tokens(" Paris", prepend_bos=False)[0].tolist()
    assert whole[-len(piece):] == piece


def test_bad_batches_are_one_line(tiny_model):
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left', got 'middle'"):
        tiny_model.to_tokens(PROMPTS, padding_side="middle")
    with pytest.raises(ValueError, match=r"prompt 1 of the batch: prompt is empty"):
        tiny_model(["The capital", ""])
    with pytest.raises(ValueError, match="attention_mask has shape"):
        tiny_model(tiny_model.to_tokens(PROMPTS), attention_mask=torch.ones(3, 2, dtype=torch.long))


def test_pieces_without_bos_on_added_token_markers(tmp_path):
    """With markers declared as added tokens (the toy's layout), SentencePiece writes its own ``▁`` after
    ``[Text]``; a ``prepend_bos=False`` piece still is what follows other tokens (the whole prompt's tail)."""
    from spiritlens import HookedSpiritLM
    from spiritlens.synthetic.tiny import write_tiny_model

    model = HookedSpiritLM.from_pretrained(write_tiny_model(tmp_path / "m", tokenizer_layout="added_tokens"))
    assert model.tokenization.markers == "added_tokens"
    whole = model.to_tokens("The capital of Italy is Paris")[0].tolist()
    piece = model.to_tokens(" Paris", prepend_bos=False)[0].tolist()
    assert whole[-len(piece):] == piece and model.to_str_tokens(piece)[0] != "▁"
