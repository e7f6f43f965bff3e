"""HookedSpiritLM keeps TransformerBridge's contract: generate, generate_stream, the tokenizer,
padding, to_string.

References: a plain ``TransformerBridge.boot_transformers`` of the same checkpoint folder (return
types, padding side, its tokenizer's settings), a greedy loop over ``LlamaForCausalLM`` written here
(with SpiritLM's forbidden ids masked, as SpiritLM passes them to HF's ``generate`` as
``bad_words_ids``), SpiritLM's own decode rule (``batch_decode(skip_special_tokens=True,
clean_up_tokenization_spaces=False)``, then the prompt string cut off the front), and transformers'
``LlamaTokenizer`` on the same files (where SpiritLM's tokenizer does not differ: plain text).
"""

from __future__ import annotations

import warnings

import pytest
import torch

PROMPT = "The capital of Italy is"
PROMPTS = ["The Space Needle is located in the city of", "Paris is the capital of", "The Eiffel Tower is in"]
GREEDY = dict(do_sample=False, verbose=False)


@pytest.fixture(scope="module")
def plain_bridge(tiny_base_dir):
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(str(tiny_base_dir), device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_base_dir):
    from transformers import LlamaTokenizer

    return LlamaTokenizer.from_pretrained(str(tiny_base_dir))


def llama_greedy(hf_model, ids, forbidden, steps, eos=None):
    """New ids of greedy decoding over LlamaForCausalLM, forbidden ids at -inf, one full forward a step."""
    out = []
    for _ in range(steps):
        with torch.no_grad():
            logits = hf_model(ids).logits[0, -1].clone()
        logits[forbidden] = float("-inf")
        nxt = int(logits.argmax())
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        if nxt == eos:
            break
    return out


def spiritlm_continuation(model, prompt_string, ids):
    """SpiritLM's generate: decode everything (skip_special_tokens, no clean-up), cut the prompt string off."""
    whole = model.tokenizer.batch_decode([ids], skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]
    assert whole.startswith(prompt_string)
    return whole[len(prompt_string):]


def test_generate_returns_by_input_type_as_the_plain_bridge(tiny_model, plain_bridge):
    ids = tiny_model.to_tokens(PROMPT)
    for ours, plain in [
        (tiny_model.generate(PROMPT, max_new_tokens=3, **GREEDY), plain_bridge.generate(PROMPT, max_new_tokens=3, **GREEDY)),
        (tiny_model.generate(PROMPTS[:2], max_new_tokens=3, **GREEDY),
         plain_bridge.generate(PROMPTS[:2], max_new_tokens=3, **GREEDY)),
        (tiny_model.generate([PROMPT], max_new_tokens=3, **GREEDY), plain_bridge.generate([PROMPT], max_new_tokens=3, **GREEDY)),
        (tiny_model.generate(ids, max_new_tokens=3, **GREEDY), plain_bridge.generate(ids, max_new_tokens=3, **GREEDY)),
        (tiny_model.generate(PROMPT, max_new_tokens=3, return_type="tokens", **GREEDY),
         plain_bridge.generate(PROMPT, max_new_tokens=3, return_type="tokens", **GREEDY)),
        (tiny_model.generate(ids, max_new_tokens=3, return_type="str", **GREEDY),
         plain_bridge.generate(ids, max_new_tokens=3, return_type="str", **GREEDY)),
    ]:
        assert type(ours) is type(plain)
        if isinstance(plain, list):
            assert len(ours) == len(plain) and all(isinstance(text, str) for text in ours)
        if isinstance(plain, torch.Tensor):
            assert ours.shape[0] == plain.shape[0] and ours.dtype == plain.dtype
    for keywords in (dict(return_cache=True), dict(return_input_tokens=True), dict(return_cache=True, return_input_tokens=True)):
        ours = tiny_model.generate(ids, max_new_tokens=2, **keywords, **GREEDY)
        plain = plain_bridge.generate(ids, max_new_tokens=2, **keywords, **GREEDY)
        assert isinstance(ours, tuple) and len(ours) == len(plain)
        assert [type(part).__mro__[-2] for part in ours] == [type(part).__mro__[-2] for part in plain]
    assert tiny_model.generate(PROMPT, max_new_tokens=3, **GREEDY).startswith(PROMPT)
    assert plain_bridge.generate(PROMPT, max_new_tokens=3, **GREEDY).startswith(PROMPT)  # the contract kept


def test_generate_content_equals_a_llama_greedy_loop(tiny_model, hf_tiny_model):
    ids = tiny_model.to_tokens(PROMPT)
    forbidden = tiny_model.forbidden_token_ids("text")
    new = llama_greedy(hf_tiny_model, ids, forbidden, 8)
    got = tiny_model.generate(ids, max_new_tokens=8, **GREEDY)
    assert got[0].tolist() == ids[0].tolist() + new
    # use_past_kv_cache (TransformerLens' default) gives the same ids: the whole prefix runs every step
    cached = tiny_model.generate(ids, max_new_tokens=8, use_past_kv_cache=True, **GREEDY)
    assert torch.equal(cached, got)
    text = tiny_model.generate(PROMPT, max_new_tokens=8, **GREEDY)
    assert text == PROMPT + spiritlm_continuation(tiny_model, "[Text]" + PROMPT, ids[0].tolist() + new)
    assert torch.equal(tiny_model.generate_ids(PROMPT, max_new_tokens=8), torch.tensor(new))  # SpiritLM's path agrees
    # a (modality, content) prompt (SpiritLM's input): the continuation alone
    pairs = tiny_model.generate([("text", PROMPT)], max_new_tokens=8, **GREEDY)
    assert pairs == spiritlm_continuation(tiny_model, "[Text]" + PROMPT, ids[0].tolist() + new)
    # speech output: only speech units, as the loop with the speech rule's forbidden ids
    speech_ids = tiny_model.to_tokens(PROMPT, "speech")
    speech_new = llama_greedy(hf_tiny_model, speech_ids, tiny_model.forbidden_token_ids("speech"), 5)
    got = tiny_model.generate(speech_ids, max_new_tokens=5, output_modality="speech", **GREEDY)
    assert got[0, speech_ids.shape[1]:].tolist() == speech_new
    assert all(tiny_model.vocab.unit_of(i) is not None for i in speech_new)


def test_the_bridges_kv_cache_is_why_every_step_runs_the_whole_prefix(tiny_model, hf_tiny_model, plain_bridge):
    """TransformerLens 4.3's bridge with use_past_kv_cache=True leaves LlamaForCausalLM's greedy tokens
    after the first one (its Llama attention neither reads nor writes HF's cache). If this fails, the
    bridge's cache was fixed: generate may then pass use_past_kv_cache on (README, Generation)."""
    ids = tiny_model.to_tokens(PROMPT)
    loop = llama_greedy(hf_tiny_model, ids, [], 6)  # the plain bridge forbids nothing
    cached = plain_bridge.generate(ids, max_new_tokens=6, use_past_kv_cache=True, **GREEDY)[0, ids.shape[1]:]
    uncached = plain_bridge.generate(ids, max_new_tokens=6, use_past_kv_cache=False, **GREEDY)[0, ids.shape[1]:]
    assert uncached.tolist() == loop and cached.tolist()[0] == loop[0] and cached.tolist() != loop


def test_generate_keywords_act_as_on_the_bridge(tiny_model, hf_tiny_model):
    ids = tiny_model.to_tokens(PROMPT)
    new = llama_greedy(hf_tiny_model, ids, tiny_model.forbidden_token_ids("text"), 6)
    stop = new[2]  # stop_at_eos with eos_token_id: the output ends at that token's first appearance
    got = tiny_model.generate(ids, max_new_tokens=6, eos_token_id=stop, **GREEDY)
    assert got[0, ids.shape[1]:].tolist() == new[:new.index(stop) + 1]
    assert tiny_model.generate(ids, max_new_tokens=6, eos_token_id=stop, stop_at_eos=False, **GREEDY)[0].tolist() \
        == ids[0].tolist() + new
    out, cache = tiny_model.generate(ids, max_new_tokens=3, return_cache=True, **GREEDY)
    logits, alone = tiny_model.run_with_cache(out)
    for name in ("blocks.1.hook_resid_post", "blocks.0.attn.hook_pattern"):
        assert torch.equal(cache[name], alone[name])
    result = tiny_model.generate(ids, max_new_tokens=3, output_logits=True, **GREEDY)
    assert torch.equal(result.sequences, out) and len(result.logits) == 3
    assert torch.equal(result.logits[0].argmax(-1), out[:, ids.shape[1]])
    assert bool(torch.isinf(result.logits[0][0, tiny_model.forbidden_token_ids("text")]).all())
    with pytest.raises(NotImplementedError, match="batched"):
        tiny_model.generate(PROMPTS[:2], max_new_tokens=2, return_cache=True, **GREEDY)


def test_sampling_never_picks_a_forbidden_token(tiny_model):
    ids = tiny_model.to_tokens(PROMPT)
    torch.manual_seed(0)
    first = tiny_model.generate(ids, max_new_tokens=30, do_sample=True, temperature=3.0, verbose=False)
    torch.manual_seed(0)
    again = tiny_model.generate(ids, max_new_tokens=30, do_sample=True, temperature=3.0, verbose=False)
    assert torch.equal(first, again)
    new = first[0, ids.shape[1]:].tolist()
    assert not set(new) & set(tiny_model.forbidden_token_ids("text"))
    assert len(set(new)) > 10  # it did sample (the greedy continuation repeats far less variety)


def test_a_batch_generates_each_row_as_alone(tiny_model, hf_tiny_model):
    together = tiny_model.generate(PROMPTS, max_new_tokens=5, **GREEDY)
    forbidden = tiny_model.forbidden_token_ids("text")
    for prompt, text in zip(PROMPTS, together):
        ids = tiny_model.to_tokens(prompt)
        new = llama_greedy(hf_tiny_model, ids, forbidden, 5, eos=tiny_model.vocab.eos_id)
        assert text == prompt + spiritlm_continuation(tiny_model, "[Text]" + prompt, ids[0].tolist() + new)


def test_generate_stream_adds_up_to_generate(tiny_model):
    whole = tiny_model.generate(PROMPT, max_new_tokens=7, **GREEDY)
    chunks = list(tiny_model.generate_stream(PROMPT, max_new_tokens=7, max_tokens_per_yield=2, **GREEDY))
    assert len(chunks) > 2 and all(isinstance(c, str) for c in chunks) and "".join(chunks) == whole
    ids = tiny_model.to_tokens(PROMPT)
    parts = list(tiny_model.generate_stream(ids, max_new_tokens=7, max_tokens_per_yield=3, **GREEDY))
    assert torch.equal(torch.cat(parts, dim=-1), tiny_model.generate(ids, max_new_tokens=7, **GREEDY))
    batch = list(tiny_model.generate_stream(PROMPTS[:2], max_new_tokens=4, **GREEDY))
    assert ["".join(rows) for rows in zip(*batch)] == tiny_model.generate(PROMPTS[:2], max_new_tokens=4, **GREEDY)


def test_the_tokenizer_acts_as_transformers_llama_tokenizer(tiny_model, hf_tokenizer, plain_bridge):
    tokenizer = tiny_model.tokenizer
    assert tokenizer.padding_side == hf_tokenizer.padding_side == plain_bridge.tokenizer.padding_side == "left"
    assert tokenizer.pad_token == plain_bridge.tokenizer.pad_token == "</s>"  # TransformerLens sets EOS as pad
    texts = ["Paris is the capital of", "Hi", "The Eiffel Tower is in Paris, France."]
    hf_tokenizer.pad_token = hf_tokenizer.eos_token
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bare text: SpiritLM's rule warns, tested in test_tl_habits
        for kwargs in (dict(padding=True, return_tensors="pt"), dict(padding=True, padding_side="right"),
                       dict(padding="max_length", max_length=12, truncation=True),
                       dict(truncation=True, max_length=3), dict(add_special_tokens=False), dict()):
            ours, theirs = tokenizer(texts, **kwargs), hf_tokenizer(texts, **kwargs)
            assert set(ours) == set(theirs)
            for key in theirs:
                assert (torch.equal(ours[key], theirs[key]) if kwargs.get("return_tensors")
                        else ours[key] == theirs[key]), (kwargs, key)
        assert torch.equal(tokenizer("Hi", return_tensors="pt").input_ids, hf_tokenizer("Hi", return_tensors="pt").input_ids)
        assert torch.equal(tokenizer.encode("Hi there", return_tensors="pt"),
                           hf_tokenizer.encode("Hi there", return_tensors="pt"))
        padded = tokenizer(texts, padding=True, return_tensors="pt").input_ids
        assert tokenizer.batch_decode(padded, skip_special_tokens=True) == \
            hf_tokenizer.batch_decode(padded, skip_special_tokens=True) == texts
        for target in (hf_tokenizer, tokenizer):  # rows of different lengths are no tensor without padding
            with pytest.raises(ValueError):
                target(texts, return_tensors="pt")


def test_the_pad_token_is_settable_as_in_transformers(tiny_base_dir, hf_tokenizer):
    from spiritlens import HookedSpiritLM

    model = HookedSpiritLM.from_pretrained(tiny_base_dir)
    tokenizer = model.tokenizer
    for target in (tokenizer, hf_tokenizer):
        target.pad_token = "<unk>"
    assert tokenizer.pad_token_id == hf_tokenizer.pad_token_id == 0
    assert tokenizer.batch_decode([[0, 5]], skip_special_tokens=True) == hf_tokenizer.batch_decode([[0, 5]], skip_special_tokens=True)
    tokenizer.pad_token_id = 2
    assert tokenizer.pad_token == "</s>"
    tokenizer.pad_token = "<unk>"
    tokens = model.to_tokens(PROMPTS[:2])  # batches pad with the tokenizer's pad id, on its side
    assert tokens[1, 0] == 0 and tokens[0, 0] == model.vocab.bos_id
    tokenizer.padding_side = "right"
    assert model.to_tokens(PROMPTS[:2])[1, -1] == 0
    model.tokenizer = None  # as on a bridge: the bridge's goes too; ids still run
    assert model.bridge.tokenizer is None and model(tokens).shape[:2] == tokens.shape


def test_the_default_padding_side_is_the_bridges(tiny_model, plain_bridge):
    short, long = "Paris is", "The Space Needle is located in the city of"
    tokens = tiny_model.to_tokens([short, long])
    assert plain_bridge.tokenizer.padding_side == "left"
    assert tokens[0, -1] == tiny_model.to_tokens(short)[0, -1] and tokens[0, 0] == tiny_model.vocab.eos_id
    logits = tiny_model([short, long])
    alone = tiny_model(short)[0, -1]
    assert float((logits[0, -1] - alone).abs().max()) <= 1e-4  # the bridge's habit: [:, -1] is every row's last token
    plain = plain_bridge([short, long])  # the same habit on the plain bridge (its own tokenisation)
    assert float((plain[0, -1] - plain_bridge(short)[0, -1]).abs().max()) <= 1e-4


def test_to_string_and_to_str_tokens_as_the_bridge(tiny_model, plain_bridge):
    ids = tiny_model.to_tokens(PROMPT)
    assert isinstance(plain_bridge.to_string(ids), list) and isinstance(tiny_model.to_string(ids), list)
    assert tiny_model.to_string(ids) == [tiny_model.to_string(ids[0])]
    assert tiny_model.to_string(ids[0]) == "<s>[Text]" + PROMPT  # SpiritLM's decode: special tokens kept
    assert tiny_model.to_str_tokens(PROMPTS[:2]) == [tiny_model.to_str_tokens(p) for p in PROMPTS[:2]]
    assert plain_bridge.to_str_tokens(PROMPTS[:2]) == [plain_bridge.to_str_tokens(p) for p in PROMPTS[:2]]
