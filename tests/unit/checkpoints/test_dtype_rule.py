"""One dtype rule for every entry point: ``auto`` is bfloat16 for a model of 1B parameters or more
(SpiritLM's 7B) and float32 below (the toy and tiny models); the parameter count is checked against the
tiny checkpoint's real tensors, and every command's ``--help`` states the rule."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import run_cli
from spiritlens.checkpoints.tree import DTYPE_RULE, config_parameters, resolve_dtype

SPIRITLM_7B = {"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 11008, "vocab_size": 32512,
               "num_attention_heads": 32, "num_key_value_heads": 32, "tie_word_embeddings": False}


def test_parameter_count_is_the_checkpoints_own(hf_tiny_model, tiny_base_dir):
    config = json.loads((tiny_base_dir / "config.json").read_text())
    counted = sum(p.numel() for name, p in hf_tiny_model.named_parameters() if "norm" not in name)
    assert config_parameters(config) == counted
    # Llama-2-7B: 6,738,415,616 parameters (Meta's count) of which 65 RMSNorm weight vectors of 4096
    assert config_parameters({**SPIRITLM_7B, "vocab_size": 32000}) == 6_738_415_616 - 65 * 4096


def test_auto_is_float32_for_tiny_models_and_bfloat16_for_spiritlm(tiny_base_dir, tmp_path):
    assert resolve_dtype("auto", tiny_base_dir) == torch.float32
    (tmp_path / "config.json").write_text(json.dumps(SPIRITLM_7B))
    assert resolve_dtype("auto", tmp_path) == torch.bfloat16
    assert resolve_dtype("float16", tmp_path) == torch.float16 and resolve_dtype(torch.float32, tmp_path) == torch.float32
    with pytest.raises(ValueError, match=r"config\.json: config\.json lacks a size field"):
        (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
        resolve_dtype("auto", tmp_path)
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", tmp_path)


def test_from_pretrained_defaults_to_the_rule(tiny_base_dir):
    from spiritlens import HookedSpiritLM

    assert HookedSpiritLM.from_pretrained(tiny_base_dir).dtype == torch.float32


@pytest.mark.parametrize("command", [["trace"], ["crossmodal", "fact"], ["experiment"]])
def test_every_command_states_the_rule_and_defaults_to_auto(command):
    done = run_cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert DTYPE_RULE in text and "(default: auto)" in text
