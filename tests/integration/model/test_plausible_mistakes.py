"""Wrong but plausible inputs a newcomer gave the model and the tracer: each is now an error naming the
input, or the documented behaviour checked against the single-prompt path."""

from __future__ import annotations

import pytest
import torch

from spiritlens import trace
from spiritlens.traces import subject_sigma

PROMPT = "The Space Needle is located in the city of"


def test_a_mixed_batch_of_a_string_and_a_spoken_prompt_equals_each_prompt_alone(tiny_model, spoken_prompt_wav):
    spoken = [("speech", str(spoken_prompt_wav))]
    batch = tiny_model.encode_batch([PROMPT, spoken])
    tokens = tiny_model.to_tokens([PROMPT, spoken])
    assert torch.equal(tokens, batch.tokens)
    logits = tiny_model([PROMPT, spoken])
    for i, prompt in enumerate((PROMPT, spoken)):
        alone = tiny_model(prompt)[0]
        assert torch.equal(batch.tokens[i, batch.columns(i)], tiny_model.to_tokens(prompt)[0])
        assert float((logits[i, batch.columns(i)] - alone).abs().max()) <= 1e-4


def test_a_bare_pair_is_not_read_as_a_batch_of_two_strings(tiny_model):
    with pytest.raises(ValueError, match=r"^prompt \('speech', 'q.wav'\) is one \(modality, content\) pair"):
        tiny_model.to_tokens(("speech", "q.wav"))
    assert tiny_model.to_tokens(["speech", "q.wav"]).shape[0] == 2  # a list of strings is a batch


def test_subject_sigma_of_a_bare_string_is_refused(tiny_model):
    with pytest.raises(ValueError, match="subject_sigma takes a list of subjects, got the string 'Space Needle'"):
        subject_sigma(tiny_model, "Space Needle")
    assert subject_sigma(tiny_model, ["Space Needle"]) > 0


def test_trace_refuses_a_batch_and_an_unknown_keyword(tiny_model):
    with pytest.raises(ValueError, match="trace takes one prompt, got a list of 2 prompts"):
        trace(tiny_model, [PROMPT, "Paris is the capital of"], "Space Needle", noise=0.1, samples=2)
    with pytest.raises(TypeError, match=r"^trace\(\) got an unexpected keyword argument 'n_samples'"):
        trace(tiny_model, PROMPT, "Space Needle", noise=0.1, n_samples=2)
    # a window wider than the model is ROME's: truncated at the first and last layer, recorded as given
    layers = tiny_model.cfg.n_layers
    wide = trace(tiny_model, PROMPT, "Space Needle", kind="mlp", noise=0.1, samples=2, window=layers + 1)
    assert wide.window == layers + 1


def test_the_tree_root_instead_of_a_model_directory_names_the_folder_to_pass(tiny_root):
    from spiritlens import HookedSpiritLM

    with pytest.raises(FileNotFoundError, match="is a SpiritLM checkpoint tree, not a model directory: pass "
                                                f"'{tiny_root}/spiritlm_model/spirit-lm-base-7b'"):
        HookedSpiritLM.from_pretrained(tiny_root)
