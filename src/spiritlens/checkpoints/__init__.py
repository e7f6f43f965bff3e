"""Model directories (complete, weights matching their config), dtypes and devices, and the one safe reader of pickled checkpoints. Where a family keeps its checkpoints is the family's (:mod:`spiritlens.models`)."""

from spiritlens.checkpoints.tree import (
    WEIGHT_FILES,
    DTYPES,
    check_model_dir,
    check_device,
    parse_dtype,
)

__all__ = [
    "WEIGHT_FILES",
    "DTYPES",
    "check_model_dir",
    "check_device",
    "parse_dtype",
]
