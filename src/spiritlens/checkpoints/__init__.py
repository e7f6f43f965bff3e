"""The checkpoint tree (model directory per variant, speech-tokenizer directories, one environment rule), dtypes, devices, and the one safe reader of pickled checkpoints."""

from spiritlens.checkpoints.tree import (
    CHECKPOINTS_ENV,
    VARIANTS,
    WEIGHT_FILES,
    DTYPES,
    checkpoints_dir,
    resolve_model_dir,
    check_model_dir,
    speech_tokenizer_dir,
    check_device,
    parse_dtype,
)

__all__ = [
    "CHECKPOINTS_ENV",
    "VARIANTS",
    "WEIGHT_FILES",
    "DTYPES",
    "checkpoints_dir",
    "resolve_model_dir",
    "check_model_dir",
    "speech_tokenizer_dir",
    "check_device",
    "parse_dtype",
]
