"""Where SpiritLM checkpoints live on disk, and checks that a model directory is complete.

Layout (SpiritLM's ``checkpoints/README.md``)::

    $SPIRITLM_CHECKPOINTS_DIR/spiritlm_model/{spirit-lm-base-7b,spirit-lm-expressive-7b}/
    $SPIRITLM_CHECKPOINTS_DIR/speech_tokenizer/hubert_25hz/{mhubert_base_25hz.pt,L11_quantizer_500.pt}
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

CHECKPOINTS_ENV = "SPIRITLM_CHECKPOINTS_DIR"
VARIANTS = ("spirit-lm-base-7b", "spirit-lm-expressive-7b")
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

MODEL_FOLDER = "spiritlm_model"  # <root>/spiritlm_model/<variant>/: config.json, weights, tokenizer files
SPEECH_TOKENIZER_FOLDER = "speech_tokenizer"  # <root>/speech_tokenizer/: hubert_25hz/ and its quantizer


def variant_dir(root: str | os.PathLike, variant: str) -> Path:
    """``root/spiritlm_model/<variant>``: where SpiritLM's checkpoint tree keeps a model."""
    return Path(root) / MODEL_FOLDER / variant


def speech_tokenizer_folder(root: str | os.PathLike) -> Path:
    """``root/speech_tokenizer``: where SpiritLM's checkpoint tree keeps the speech tokenizer."""
    return Path(root) / SPEECH_TOKENIZER_FOLDER


def checkpoints_dir(required: bool = True) -> Path | None:
    """``$SPIRITLM_CHECKPOINTS_DIR`` as a Path (error if unset and ``required``)."""
    value = os.environ.get(CHECKPOINTS_ENV)
    if not value:
        if required:
            raise ValueError(
                f"${CHECKPOINTS_ENV} is not set: point it at the folder holding spiritlm_model/ "
                "and speech_tokenizer/, or pass a model directory"
            )
        return None
    return Path(value).expanduser()


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A model directory: the path itself, or a variant name under ``$SPIRITLM_CHECKPOINTS_DIR``."""
    text = os.fspath(name_or_path)
    if not text:
        raise ValueError("model name_or_path is empty")
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"model path {text!r} is a file, expected a model directory")
        return path
    looks_like_path = os.sep in text or text.startswith(".")
    if looks_like_path:
        raise FileNotFoundError(f"model directory {text!r} does not exist")
    if text not in VARIANTS:
        raise ValueError(f"unknown SpiritLM variant {text!r}; known variants: {', '.join(VARIANTS)}, "
                         "or pass a model directory")
    root = checkpoints_dir(required=True)
    path = variant_dir(root, text)
    if not path.is_dir():
        raise FileNotFoundError(f"variant {text!r} not found: {path} does not exist "
                                f"(${CHECKPOINTS_ENV}={root})")
    return path


def check_model_dir(path: Path) -> None:
    """Raise a clear error if the directory lacks a config, weights or a tokenizer."""
    if not (path / "config.json").is_file():
        if (path / MODEL_FOLDER).is_dir():  # the tree's root (make-tiny, make-toy, toy_checkpoints())
            variants = sorted(p.name for p in (path / MODEL_FOLDER).iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"{str(path)!r} is a SpiritLM checkpoint tree, not a model directory: pass "
                f"{str(variant_dir(path, variants[0] if variants else VARIANTS[0]))!r} (or set "
                f"{CHECKPOINTS_ENV}={str(path)!r} and pass the variant name)")
        raise FileNotFoundError(f"model directory {str(path)!r} has no config.json")
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


def speech_tokenizer_dir(model_dir: Path | None = None) -> Path | None:
    """The speech-tokenizer folder: ``$SPIRITLM_CHECKPOINTS_DIR/speech_tokenizer``, else one next
    to the model's ``spiritlm_model/`` folder; None if neither exists."""
    candidates = []
    root = checkpoints_dir(required=False)
    if root is not None:
        candidates.append(speech_tokenizer_folder(root))
    if model_dir is not None:
        candidates.append(speech_tokenizer_folder(Path(model_dir).resolve().parent.parent))
    for candidate in candidates:
        if (candidate / "hubert_25hz").is_dir():
            return candidate
    return None


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
