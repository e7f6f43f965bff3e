"""A tiny random SpiritLM speech tokenizer (mHuBERT + linear quantizer) in SpiritLM's file layout.

``write_tiny_speech_tokenizer(DIR)`` writes ``DIR/hubert_25hz/mhubert_base_25hz.pt`` and
``DIR/hubert_25hz/L11_quantizer_500.pt``. The mHuBERT has the real 25 Hz conv stack (8 layers,
kernels 10,3,3,3,3,2,2,2, strides 5,2,...,2 = 640 samples, receptive field 720) and, like the real
model, 12 transformer layers so that SpiritLM's ``output_layer=11`` applies unchanged; widths are
tiny (conv 32, hidden 48, 4 heads, FFN 96, positional conv 16 taps in 4 groups). Weights are random
(deterministic for a seed) and keyed as fairseq keys them, including the pre-training heads
(``label_embs_concat``, ``final_proj``) that conversion drops. The quantizer has 500 units plus the
blank, with ``dim = upstream_dim = 48`` (layer widths 48 -> 162 -> 275 -> 501 by the
quantizer's formula, :mod:`spiritlens.units.quantizer`); with seed 0 a fifth to a half of the frames of random audio come out blank, so blank filling
is exercised end to end.
"""

from __future__ import annotations

import contextlib
import math
import sys
import types
from pathlib import Path

import torch

from spiritlens._io import save_torch
from spiritlens.units.hubert import HUBERT_FILE, parse_conv_layers
from spiritlens.units.quantizer import QUANTIZER_FILE, linear_quantizer_sizes

TINY_MODEL_CFG = {
    "_name": "hubert",
    "label_rate": 25.0,
    "extractor_mode": "default",
    "encoder_layers": 12,
    "encoder_embed_dim": 48,
    "encoder_ffn_embed_dim": 96,
    "encoder_attention_heads": 4,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.05,
    "dropout_input": 0.1,
    "dropout_features": 0.1,
    "final_dim": 16,
    "untie_final_proj": False,
    "layer_norm_first": False,
    "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 3",
    "conv_bias": False,
    "logit_temp": 0.1,
    "target_glu": False,
    "feature_grad_mult": 0.1,
    "mask_length": 10,
    "mask_prob": 0.8,
    "mask_selection": "static",
    "mask_channel_prob": 0.0,
    "mask_channel_length": 10,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "conv_pos_batch_norm": False,
    "required_seq_len_multiple": 2,
}
TINY_TASK_CFG = {
    "_name": "hubert_pretraining",
    "label_rate": 25.0,
    "sample_rate": 16_000,
    "normalize": False,
    "enable_padding": False,
    "max_sample_size": 250_000,
    "min_sample_size": 32_000,
    "random_crop": True,
    "pad_audio": False,
    "labels": ["km"],
}
TINY_VOCAB_SIZE = 500
QK_GAIN, ATTN_OUT_GAIN = 2.0, 0.3  # added to the blank logit's bias so that blanks (and their fill) occur


def write_tiny_speech_tokenizer(speech_tokenizer_dir: str | Path, *, seed: int = 0, layout: str = "converted",
                                model_cfg: dict | None = None, task_cfg: dict | None = None) -> Path:
    """Write the tiny ``hubert_25hz/`` pair under ``speech_tokenizer_dir``; returns that directory.

    ``layout``: ``"converted"`` (SpiritLM's plain-dict format) or ``"fairseq"`` (a raw fairseq
    checkpoint with pickled fairseq classes). ``model_cfg``/``task_cfg``: overrides of the tiny
    fairseq config (e.g. ``{"extractor_mode": "layer_norm", "layer_norm_first": True}``).
    """
    if layout not in ("converted", "fairseq"):
        raise ValueError(f"layout must be 'converted' or 'fairseq', got {layout!r}")
    directory = Path(speech_tokenizer_dir)
    (directory / HUBERT_FILE).parent.mkdir(parents=True, exist_ok=True)
    mcfg = {**TINY_MODEL_CFG, **(model_cfg or {})}
    tcfg = {**TINY_TASK_CFG, **(task_cfg or {})}
    generator = torch.Generator().manual_seed(seed)
    weights = tiny_fairseq_state_dict(mcfg, generator)
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(TINY_VOCAB_SIZE)]
    if layout == "converted":
        save_torch({"model_cfg": mcfg, "task_cfg": tcfg, "model_weight": weights,
                    "dictionaries_symbols": [symbols]}, directory / HUBERT_FILE)
    else:
        _save_fairseq(directory / HUBERT_FILE, mcfg, tcfg, weights, symbols)
    dim = int(mcfg["encoder_embed_dim"])
    save_torch(tiny_quantizer_checkpoint(dim, generator), directory / QUANTIZER_FILE)
    return directory


def tiny_fairseq_state_dict(cfg: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random fairseq-keyed HuBERT weights for ``cfg`` (default or layer_norm extractor, conv bias)."""

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=generator) * std

    def norm(prefix: str, dim: int) -> None:
        sd[prefix + "weight"] = 1.0 + randn(dim, std=0.1)
        sd[prefix + "bias"] = randn(dim, std=0.1)

    def linear(prefix: str, n_in: int, n_out: int, gain: float = 1.0) -> None:
        sd[prefix + "weight"] = randn(n_out, n_in, std=gain / math.sqrt(n_in))
        sd[prefix + "bias"] = randn(n_out, std=0.02)

    sd: dict[str, torch.Tensor] = {}
    layers = parse_conv_layers(cfg["conv_feature_layers"])
    n_in = 1
    for i, (dim, kernel, _) in enumerate(layers):
        prefix = f"feature_extractor.conv_layers.{i}."
        sd[prefix + "0.weight"] = randn(dim, n_in, kernel, std=math.sqrt(2 / (n_in * kernel)))
        if cfg.get("conv_bias"):
            sd[prefix + "0.bias"] = randn(dim, std=0.02)
        if cfg["extractor_mode"] == "layer_norm":
            norm(prefix + "2.1.", dim)
        elif i == 0:
            norm(prefix + "2.", dim)
        n_in = dim
    embed, hidden, ffn = layers[-1][0], int(cfg["encoder_embed_dim"]), int(cfg["encoder_ffn_embed_dim"])
    norm("layer_norm.", embed)
    if embed != hidden:
        linear("post_extract_proj.", embed, hidden)
    sd["mask_emb"] = torch.rand(hidden, generator=generator)
    k, groups = int(cfg["conv_pos"]), int(cfg["conv_pos_groups"])
    v = randn(hidden, hidden // groups, k, std=math.sqrt(4 / (k * hidden)))
    sd["encoder.pos_conv.0.bias"] = randn(hidden, std=0.02)
    sd["encoder.pos_conv.0.weight_g"] = v.norm(dim=(0, 1), keepdim=True) * (1 + randn(1, 1, k, std=0.1))
    sd["encoder.pos_conv.0.weight_v"] = v
    for n in range(int(cfg["encoder_layers"])):
        prefix = f"encoder.layers.{n}."
        # Sharp attention and a damped attention output: random uniform-ish attention would average
        # the frames into one vector within a few layers, and every frame would get the same unit.
        for proj, gain in (("k", QK_GAIN), ("v", 1.0), ("q", QK_GAIN), ("out", ATTN_OUT_GAIN)):
            linear(f"{prefix}self_attn.{proj}_proj.", hidden, hidden, gain)
        norm(prefix + "self_attn_layer_norm.", hidden)
        linear(prefix + "fc1.", hidden, ffn)
        linear(prefix + "fc2.", ffn, hidden)
        norm(prefix + "final_layer_norm.", hidden)
    norm("encoder.layer_norm.", hidden)
    final_dim = int(cfg.get("final_dim") or hidden)
    linear("final_proj.", hidden, final_dim)
    sd["label_embs_concat"] = torch.rand(TINY_VOCAB_SIZE + 4, final_dim, generator=generator)
    return sd


def tiny_quantizer_checkpoint(dim: int, generator: torch.Generator) -> dict:
    """A random ``L11_quantizer_500.pt`` dict for ``dim``-dimensional features (``upstream_dim = dim``)."""
    sizes = linear_quantizer_sizes(TINY_VOCAB_SIZE, dim, dim)
    weights = {}
    for index, (n_in, n_out) in zip((0, 2, 4), zip(sizes, sizes[1:])):
        weights[f"{index}.weight"] = torch.randn(n_out, n_in, generator=generator) * (2 / math.sqrt(n_in))
        weights[f"{index}.bias"] = torch.randn(n_out, generator=generator) * 0.1
    return {"model_cfg": {"vocab_size": TINY_VOCAB_SIZE, "dim": dim, "upstream_dim": dim}, "model_weight": weights}


class _FairseqDictionary:
    """Pickled under fairseq's name, like ``fairseq.data.dictionary.Dictionary`` in real checkpoints."""

    def __init__(self, symbols: list[str]):
        self.bos_word, self.unk_word, self.pad_word, self.eos_word = "<s>", "<unk>", "<pad>", "</s>"
        self.symbols = list(symbols)
        self.count = [1] * len(symbols)
        self.indices = {s: i for i, s in enumerate(symbols)}
        self.nspecial = 4


@contextlib.contextmanager
def _as_fairseq_class(cls: type, module: str, name: str):
    """Temporarily make ``cls`` importable as ``module.name`` so pickle records fairseq's path."""
    parts = module.split(".")
    added = []
    for i in range(1, len(parts) + 1):
        mod_name = ".".join(parts[:i])
        if mod_name not in sys.modules:
            sys.modules[mod_name] = types.ModuleType(mod_name)
            added.append(mod_name)
    old = (cls.__module__, cls.__qualname__)
    missing = object()
    previous = getattr(sys.modules[module], name, missing)
    cls.__module__, cls.__qualname__ = module, name
    setattr(sys.modules[module], name, cls)
    try:
        yield
    finally:
        cls.__module__, cls.__qualname__ = old
        if previous is missing:
            delattr(sys.modules[module], name)
        else:
            setattr(sys.modules[module], name, previous)
        for mod_name in added:
            del sys.modules[mod_name]


def _save_fairseq(path: Path, mcfg: dict, tcfg: dict, weights: dict, symbols: list[str]) -> None:
    checkpoint = {
        "args": None,
        "cfg": {"_name": None, "common": {"fp16": False, "seed": 1}, "model": mcfg, "task": tcfg},
        "model": weights,
        "criterion": None,
        "optimizer_history": [{"criterion_name": "HubertCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {"dictionaries": [_FairseqDictionary(symbols)]},
        "extra_state": {"epoch": 1, "previous_training_time": 0.0},
        "last_optimizer_state": None,
    }
    with _as_fairseq_class(_FairseqDictionary, "fairseq.data.dictionary", "Dictionary"):
        save_torch(checkpoint, path)
