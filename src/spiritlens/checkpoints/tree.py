"""Checks that a model directory is complete, dtypes (and the one dtype rule) and devices.

Where a family keeps its checkpoints (SpiritLM's ``$SPIRITLM_CHECKPOINTS_DIR`` tree) is the family's
knowledge: :mod:`spiritlens.models.spiritlm.tree`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


AUTO_DTYPE_MIN_PARAMETERS = 1_000_000_000  # the dtype rule: bfloat16 from here (SpiritLM's 7B), float32 below
DTYPE_RULE = ("auto: bfloat16 for a model of 1B parameters or more (SpiritLM's 7B checkpoints: 13.5 GB of "
              "weights instead of 27), float32 below (the embedded toy and tiny models)")




def check_model_dir(path: Path, hint=None) -> None:
    """Raise a clear error if the directory lacks a config, weights or a tokenizer. ``hint(path)``: a
    family's explanation of a folder without ``config.json`` (e.g. a checkpoint tree's root), or None."""
    if not (path / "config.json").is_file():
        explained = hint(path) if hint is not None else None
        raise FileNotFoundError(explained or f"model directory {str(path)!r} has no config.json")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(
            f"model directory {str(path)!r} has no weights (expected one of {', '.join(WEIGHT_FILES)})"
        )
    if not any((path / name).is_file() for name in ("tokenizer.model", "tokenizer.json")):
        raise FileNotFoundError(f"model directory {str(path)!r} has no tokenizer.model")
    check_tokenizer_files(path)


def check_tokenizer_files(path: Path) -> None:
    """The model directory's tokenizer and generation JSONs (those present of ``tokenizer_config.json``,
    ``special_tokens_map.json``, ``added_tokens.json``, ``generation_config.json``) read with the size
    and depth limits of :func:`spiritlens._io.read_json` and checked against their shapes
    (:func:`spiritlens.checkpoints.schema.check_tokenizer_file`) before transformers reads them:
    one-line ValueError naming the file and the field."""
    from spiritlens._io import MAX_CONFIG_BYTES, read_json
    from spiritlens.checkpoints.schema import TOKENIZER_FILES, check_tokenizer_file

    for name in TOKENIZER_FILES:
        file = Path(path) / name
        if file.is_file():
            check_tokenizer_file(read_json(file, "tokenizer file", max_bytes=MAX_CONFIG_BYTES), name,
                                 f"tokenizer file {file}")


def check_device(device) -> None:
    """Raise ValueError (``"'<device>': <reason>"``) for a device string torch cannot parse, a device
    type spiritlens does not run on (only ``cpu``, ``cuda`` and ``mps``: ``meta`` tensors hold no
    data, others are untested), or a CUDA/MPS device this machine does not have; None passes."""
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as error:
        raise ValueError(f"{str(device)[:60]!r}: {error}") from None
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{str(device)!r}: spiritlens runs on cpu, cuda or mps, not {parsed.type}")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{str(device)!r}: CUDA is not available here")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"{str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{str(device)!r}: MPS is not available here")


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``torch.float32``/``bfloat16``/``float16`` from a dtype or its usual names."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"unsupported dtype {dtype}; use float32, bfloat16 or float16")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16 (or auto where a model directory is given)")
    return DTYPES[key]


def config_parameters(config: dict) -> int:
    """Parameters of a Llama ``config.json`` (embeddings, attention with its key/value heads, MLP,
    unembedding unless tied; norms left out): 6.74e9 for SpiritLM's 7B. ValueError for a config
    lacking a size field."""
    try:
        d, layers, ff, vocab = (int(config[k]) for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                                                            "vocab_size"))
        heads = int(config.get("num_attention_heads") or 1)
        kv = int(config.get("num_key_value_heads") or heads)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"config.json lacks a size field ({error})") from None
    embeddings = vocab * d * (1 if config.get("tie_word_embeddings") else 2)
    return embeddings + layers * (2 * d * d + 2 * d * (d * kv // max(heads, 1)) + 3 * d * ff)


def resolve_dtype(dtype: str | torch.dtype, model_dir: str | os.PathLike) -> torch.dtype:
    """The one dtype rule of every entry point (``HookedSpiritLM.from_pretrained``, ``spiritlens trace``,
    ``spiritlens crossmodal fact``, ``spiritlens experiment``): a dtype or its name is :func:`parse_dtype`'d;
    ``"auto"`` is bfloat16 for a model of at least ``AUTO_DTYPE_MIN_PARAMETERS`` parameters (counted from
    ``model_dir/config.json`` by :func:`config_parameters`: SpiritLM's 7B checkpoints) and float32 below
    (the embedded toy and tiny models). ValueError for an unknown name or an unreadable config."""
    if not (isinstance(dtype, str) and dtype.strip().lower() == "auto"):
        return parse_dtype(dtype)
    from spiritlens._io import read_json

    config = read_json(Path(model_dir) / "config.json", "model config")
    if not isinstance(config, dict):
        raise ValueError(f"model config {Path(model_dir) / 'config.json'} is not a JSON object")
    try:
        parameters = config_parameters(config)
    except ValueError as error:
        raise ValueError(f"{Path(model_dir) / 'config.json'}: {error}") from None
    return torch.bfloat16 if parameters >= AUTO_DTYPE_MIN_PARAMETERS else torch.float32


def check_dtype_name(dtype: str | torch.dtype) -> None:
    """ValueError unless ``dtype`` is ``"auto"`` or a dtype :func:`parse_dtype` takes."""
    if not (isinstance(dtype, str) and dtype.strip().lower() == "auto"):
        parse_dtype(dtype)
