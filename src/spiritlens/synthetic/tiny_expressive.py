"""Tiny random SpiritLM Expressive speech-tokenizer parts in SpiritLM's exact file formats.

``write_tiny_expressive(DIR)`` writes, beside the tiny mHuBERT of :mod:`spiritlens.synthetic.tiny_units`:

- ``DIR/vqvae_f0_quantizer/config.yaml`` + ``model.pt``: the F0 VQ-VAE as SpiritLM's ``load_vqvae``
  reads it (``OmegaConf.load(config.yaml)``; ``VQVAE(cfg).load_state_dict(<model.pt>["model"])``,
  strict, so encoder, codebook **and decoder** keys are all written). Real layout (200 Hz F0 -> 12.5 Hz
  codes: one level, ``downs_t [4]``, ``strides_t [2]``), 64 codes, ``features: norm_f0_interp,vuv``;
  widths are tiny (16 channels, 2 residual blocks, dilation growth 3). The codebook rows are encoder
  outputs of random normalised F0 contours (plus noise), as VQ-VAE training initialises them, so
  speech-like F0 uses many codes.
- ``DIR/style_encoder_w2v2/config.json`` + ``pytorch_model.bin``: what
  ``Wav2Vec2StyleEncoder.from_pretrained`` reads: a wav2vec2 config (architectures
  ``["Wav2Vec2StyleEncoder"]``, the real conv stack 5,2,...,2 = 320 samples, 100 labels, tiny widths:
  conv 16, hidden 32, 2 layers) and a ``Wav2Vec2ForSequenceClassification`` state dict plus the
  subclass's ``_float_tensor`` buffer; positional-conv weight norm as transformers 4.x saves it
  (``parametrizations.weight.original0/1``). The classifier is scaled up so that different seconds of
  speech get different classes.

FCPE needs no tiny copy: torchfcpe's real weights ship in its wheel.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from spiritlens._io import save_torch, write_atomic
from spiritlens.units.pitch import F0_CONFIG_FILE, F0_MODEL_FILE, F0Quantizer
from spiritlens.units.style import DEVICE_MARKER, STYLE_CONFIG_FILE, STYLE_WEIGHTS_FILE

TINY_F0_BLOCK = {"width": 16, "depth": 2, "m_conv": 1.0, "dilation_growth_rate": 3,
                 "dilation_cycle": None, "zero_out": False, "res_scale": False, "reverse_decoder_dilation": True}
TINY_F0_CONFIG = {
    "encoder_params": {"input_emb_width": 2, "output_emb_width": 16, "levels": 1, "downs_t": [4],
                       "strides_t": [2], **TINY_F0_BLOCK},
    "decoder_params": {"input_emb_width": 2, "output_emb_width": 16, "levels": 1, "downs_t": [4],
                       "strides_t": [2], **TINY_F0_BLOCK},
    "vq_params": {"l_bins": 64, "emb_width": 16, "mu": 0.99, "levels": 1},
    "features": "norm_f0_interp,vuv",
    "speaker_norm": False,
    "f0_normalize": False,
    "sampling_rate": 16000,
    "hop_length": 80,
}
TINY_STYLE_CONFIG = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "conv_dim": [16] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4, "feat_extract_norm": "group",
    "do_stable_layer_norm": False, "conv_bias": False, "classifier_proj_size": 16, "num_labels": 100,
    "mask_time_prob": 0.05, "hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0, "final_dropout": 0.0, "layerdrop": 0.0, "use_weighted_layer_sum": False,
}
CLASSIFIER_GAIN = 8.0


def write_tiny_expressive(speech_tokenizer_dir: str | Path, *, seed: int = 0) -> Path:
    """Write the tiny pitch quantizer and style encoder under ``speech_tokenizer_dir``; returns it."""
    directory = Path(speech_tokenizer_dir)
    write_tiny_f0_quantizer(directory, seed=seed)
    write_tiny_style_encoder(directory, seed=seed)
    return directory


def _f0_decoder_state(cfg: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights under SpiritLM's decoder keys (``DecoderConvBock``: conv in, then per down step a
    residual stack and a transposed conv; ``out`` back to (F0, vuv))."""
    def conv(key, n_out, n_in, k, transpose=False):
        shape = (n_in, n_out, k) if transpose else (n_out, n_in, k)
        state[key + ".weight"] = torch.randn(*shape, generator=generator) / math.sqrt(n_in * k)
        state[key + ".bias"] = torch.randn(n_out, generator=generator) * 0.01

    state: dict[str, torch.Tensor] = {}
    width, emb, depth = cfg["width"], cfg["output_emb_width"], cfg["depth"]
    for level, (down, stride) in enumerate(zip(cfg["downs_t"], cfg["strides_t"])):
        prefix = f"decoder.level_blocks.{level}.model"
        conv(f"{prefix}.0", width, emb, 3)
        for i in range(down):
            for d in range(depth):
                conv(f"{prefix}.{i + 1}.0.model.{d}.model.1", int(cfg["m_conv"] * width), width, 3)
                conv(f"{prefix}.{i + 1}.0.model.{d}.model.3", width, int(cfg["m_conv"] * width), 1)
            conv(f"{prefix}.{i + 1}.1", emb if i == down - 1 else width, width, stride * 2, transpose=True)
    conv("decoder.out", cfg["input_emb_width"], emb, 3)
    return state


def tiny_f0_contours(generator: torch.Generator, count: int = 64, frames: int = 400) -> torch.Tensor:
    """``[count, 2, frames]`` random (normalised F0, vuv) inputs: smooth contours of +-60 Hz with voiced runs."""
    steps = torch.randn(count, frames, generator=generator).cumsum(dim=1)
    steps = steps - steps.mean(dim=1, keepdim=True)
    f0 = 60 * steps / steps.abs().amax(dim=1, keepdim=True).clamp(min=1e-6)
    vuv = (torch.rand(count, frames // 40, generator=generator) > 0.3).float().repeat_interleave(40, dim=1)
    return torch.stack([f0 * vuv + (1 - vuv) * f0.mean(), vuv], dim=1)


def write_tiny_f0_quantizer(speech_tokenizer_dir: str | Path, *, seed: int = 0, config: dict | None = None) -> Path:
    """``vqvae_f0_quantizer/{config.yaml, model.pt}`` (random weights; codebook from encoder outputs)."""
    import yaml

    directory = Path(speech_tokenizer_dir)
    cfg = json.loads(json.dumps(config or TINY_F0_CONFIG))
    (directory / F0_CONFIG_FILE).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / F0_CONFIG_FILE, yaml.safe_dump(cfg, sort_keys=False))
    generator = torch.Generator().manual_seed(seed + 101)
    model = F0Quantizer(cfg)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith(".k"):
            continue
        fan_in = value[0].numel() if value.ndim > 1 else 1
        state[key] = (torch.randn(value.shape, generator=generator) / math.sqrt(fan_in) if value.ndim > 1
                      else torch.randn(value.shape, generator=generator) * 0.01)
    model.load_state_dict({**model.state_dict(), **state})
    with torch.no_grad():
        z = model.encoder(tiny_f0_contours(generator))[0]
    rows = z.permute(0, 2, 1).reshape(-1, z.shape[1])
    vq = cfg["vq_params"]
    pick = torch.randperm(rows.shape[0], generator=generator)[: vq["l_bins"]]
    noise = torch.randn(vq["l_bins"], vq["emb_width"], generator=generator) * 0.01 * rows.std()
    state["vq.level_blocks.0.k"] = rows[pick] + noise
    state.update(_f0_decoder_state(cfg["decoder_params"], generator))
    save_torch({"model": state, "steps": 0, "epoch": 0}, directory / F0_MODEL_FILE)
    return directory / F0_MODEL_FILE.parent


def write_tiny_style_encoder(speech_tokenizer_dir: str | Path, *, seed: int = 0, config: dict | None = None,
                             weight_norm_keys: str = "parametrizations") -> Path:
    """``style_encoder_w2v2/{config.json, pytorch_model.bin}`` (random weights).

    ``weight_norm_keys``: ``"parametrizations"`` (``…conv.parametrizations.weight.original0/1``, as
    transformers 4.x saves) or ``"legacy"`` (``…conv.weight_g/weight_v``, older saves).
    """
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    if weight_norm_keys not in ("parametrizations", "legacy"):
        raise ValueError(f"weight_norm_keys must be 'parametrizations' or 'legacy', got {weight_norm_keys!r}")
    root = Path(speech_tokenizer_dir)
    directory = root / STYLE_CONFIG_FILE.parent
    directory.mkdir(parents=True, exist_ok=True)
    values = {**TINY_STYLE_CONFIG, **(config or {})}
    wav2vec2_config = Wav2Vec2Config(**values)
    torch.manual_seed(seed + 202)
    model = Wav2Vec2ForSequenceClassification(wav2vec2_config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(CLASSIFIER_GAIN)
    state = {}
    for key, value in model.state_dict().items():
        if weight_norm_keys == "legacy":
            key = key.replace(".parametrizations.weight.original0", ".weight_g").replace(
                ".parametrizations.weight.original1", ".weight_v")
        state[key] = value.detach().clone()
    state[DEVICE_MARKER] = torch.tensor([0.0])
    config_json = wav2vec2_config.to_dict()
    config_json["architectures"] = ["Wav2Vec2StyleEncoder"]
    config_json.pop("transformers_version", None)
    write_atomic(root / STYLE_CONFIG_FILE, json.dumps(config_json, indent=2, sort_keys=True))
    save_torch(state, root / STYLE_WEIGHTS_FILE)
    return directory


__all__ = ["write_tiny_expressive", "write_tiny_f0_quantizer", "write_tiny_style_encoder", "TINY_F0_CONFIG",
           "TINY_STYLE_CONFIG"]
