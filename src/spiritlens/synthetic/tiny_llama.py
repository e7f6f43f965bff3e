"""A tiny random Llama-2-style checkpoint with its own text-only tokenizer: the backbone family's layout
(:mod:`spiritlens.models.llama`), as meta-llama's Hugging Face folders have it.

``config.json`` (``LlamaForCausalLM``), ``generation_config.json``, ``model.safetensors`` (or
``pytorch_model.bin``), ``tokenizer.model`` (SentencePiece BPE with byte fallback, BOS/EOS/UNK = 1/2/0, no
markers, no speech units), ``tokenizer_config.json`` (``LlamaTokenizer``, ``add_bos_token`` true,
``add_eos_token`` false, ``legacy`` false as Llama-2's current files) and ``special_tokens_map.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from spiritlens.synthetic.tiny import TEXT_PIECES, tiny_llama_config, train_tokenizer_model, write_weights


def write_tiny_llama(directory: str | Path, *, seed: int = 0, fmt: str = "safetensors", legacy: bool = False,
                     **config_overrides) -> Path:
    """Write a tiny random Llama-2-layout checkpoint (module docstring) into ``directory``; returns it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(train_tokenizer_model(expressive=False, seed=seed, spirit_pieces=False))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": legacy,
              "clean_up_tokenization_spaces": False, "model_max_length": 4096, "pad_token": None, **special}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    config_dict = tiny_llama_config(**{"vocab_size": -(-TEXT_PIECES // 64) * 64, **config_overrides})
    (directory / "config.json").write_text(json.dumps(config_dict, indent=2))
    generation = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": False}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config_dict.items() if k != "architectures"}))
    write_weights({k: v.detach().clone() for k, v in model.state_dict().items()}, directory, fmt=fmt)
    return directory
