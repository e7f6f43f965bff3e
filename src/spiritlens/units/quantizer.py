"""mHuBERT features -> discrete units: SpiritLM's linear (CTC) quantizer, or k-means.

``L11_quantizer_500.pt`` holds ``model_cfg{vocab_size, dim, upstream_dim}`` and the weights of a
``Sequential`` (keys ``0.*``, ``2.*``, ``4.*``). With ``out = vocab_size + 1`` (the last class is a
CTC blank) and ``mid = upstream_dim - out``, the layers are::

    Linear(dim, dim - mid//4) -> LeakyReLU -> Linear(dim - mid//4, dim - mid//2) -> LeakyReLU
    -> Linear(dim - mid//2, out) -> log_softmax -> argmax

Blank frames then take their left neighbour's unit (:func:`fill_blanks`). The k-means variant
(``cluster_centers [K, d]``, ``n_clusters``) takes the nearest centre and has no blank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from spiritlens.checkpoints import schema
from spiritlens.checkpoints.pickle_safe import load_checkpoint, load_joblib
from spiritlens.checkpoints.validate import check_finite, check_state_dict

QUANTIZER_FILE = Path("hubert_25hz") / "L11_quantizer_500.pt"
MAX_BLANK_PASSES = 10_000  # SpiritLM's bound on the fill loop


def linear_quantizer_sizes(vocab_size: int, dim: int, upstream_dim: int) -> list[int]:
    """Widths ``[dim, hidden1, hidden2, vocab_size + 1]`` of the three Linear layers."""
    out = vocab_size + 1
    mid = upstream_dim - out
    return [dim, dim - mid // 4, dim - mid // 2, out]


def fill_blanks(units: torch.Tensor, blank: int, *, max_passes: int = MAX_BLANK_PASSES) -> torch.Tensor:
    """Replace each ``blank`` by its left neighbour's unit, as SpiritLM does.

    ``units``: integer tensor of any shape, treated as flattened (so in ``[B, T]`` a row's first
    frame takes the previous row's last unit). The shift is a ``torch.roll`` over the flattened
    tensor, so a blank at position 0 takes the **last** position's unit. Passes repeat until no
    blank is left or ``max_passes`` is reached; an all-blank input keeps ``blank``.
    """
    units = units.clone()
    for _ in range(max_passes):
        is_blank = units == blank
        if not bool(is_blank.any()) or bool(is_blank.all()):
            break
        units[is_blank] = torch.roll(units, 1)[is_blank]
    return units


class LinearQuantizer(nn.Module):
    """SpiritLM's LinearQuantizerModel: ``[..., dim]`` features -> ``[...]`` units in ``0..vocab_size-1``."""

    def __init__(self, vocab_size: int, dim: int, upstream_dim: int):
        super().__init__()
        sizes = linear_quantizer_sizes(vocab_size, dim, upstream_dim)
        if min(sizes) <= 0:
            raise ValueError(f"quantizer model_cfg vocab_size={vocab_size}, dim={dim}, upstream_dim={upstream_dim} "
                             f"gives non-positive layer widths {sizes}")
        self.vocab_size = vocab_size
        self.dim = dim
        self.encoder = nn.Sequential(
            nn.Linear(sizes[0], sizes[1]), nn.LeakyReLU(),
            nn.Linear(sizes[1], sizes[2]), nn.LeakyReLU(),
            nn.Linear(sizes[2], sizes[3]),
        )

    @property
    def blank(self) -> int:
        return self.vocab_size

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """``[..., dim]`` -> ``[..., vocab_size + 1]`` log-probabilities (last class: blank)."""
        return torch.log_softmax(self.encoder(features), dim=-1)

    @torch.inference_mode()
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[..., dim]`` -> ``[...]`` int64 units, blanks filled (:func:`fill_blanks`)."""
        return fill_blanks(self.log_probs(features).argmax(dim=-1), self.blank)


class KmeansQuantizer(nn.Module):
    """Nearest centre by squared Euclidean distance: ``[..., d]`` -> ``[...]`` units in ``0..K-1``."""

    def __init__(self, centers: torch.Tensor):
        super().__init__()
        self.register_buffer("centers", centers.float())
        self.vocab_size = int(centers.shape[0])
        self.dim = int(centers.shape[1])

    @torch.inference_mode()
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.float()
        dist = x.pow(2).sum(-1, keepdim=True) - 2 * x @ self.centers.T + self.centers.pow(2).sum(-1)
        return dist.argmin(dim=-1)


def load_quantizer(path: str | Path) -> LinearQuantizer | KmeansQuantizer:
    """Load ``L11_quantizer_500.pt`` (linear) or a k-means checkpoint; strict, one-line errors.

    ``model_cfg`` is checked against :data:`spiritlens.checkpoints.schema.QUANTIZER_CFG` (at most
    10000 units of 1280-dim features) and the layers are built on the meta device; memory is
    allocated only for weights the file holds, after their names, shapes, dtypes and values passed.
    k-means centres must be a finite ``[K, d]`` float array (K <= 10000, d <= 1280).
    """
    path = Path(path)
    states = load_checkpoint(path, "quantizer")
    if not isinstance(states, dict):
        raise ValueError(f"{path}: not a quantizer checkpoint (top level is {type(states).__name__})")
    if "cluster_centers" in states:
        return KmeansQuantizer(_kmeans_centers(states, str(path))).eval()
    missing = [k for k in ("model_cfg", "model_weight") if k not in states]
    if missing:
        raise ValueError(f"{path}: not a quantizer checkpoint: lacks {', '.join(missing)} "
                         "(and has no cluster_centers)")
    cfg = schema.check(states["model_cfg"], schema.QUANTIZER_CFG, str(path), prefix="model_cfg.")
    try:
        with torch.device("meta"):
            model = LinearQuantizer(cfg["vocab_size"], cfg["dim"], cfg["upstream_dim"])
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    load_strict(model.encoder, states["model_weight"], source=str(path))
    return model.eval().requires_grad_(False)


def load_kmeans_joblib(path: str | Path) -> KmeansQuantizer:
    """A scikit-learn ``KMeans``/``MiniBatchKMeans`` saved with ``joblib.dump`` (fairseq's
    ``examples/hubert/simple_kmeans/learn_kmeans.py``, e.g. SpeechGPT's
    ``mhubert_base_vp_en_es_fr_it3_L11_km1000.bin``), read without scikit-learn or joblib
    (:func:`spiritlens.checkpoints.pickle_safe.load_joblib`): its ``cluster_centers_`` ``[K, d]``,
    checked as every k-means quantizer's centres are (K <= 10000, d <= 1280, finite, ``n_clusters`` K)."""
    path = Path(path)
    estimator = load_joblib(path, "k-means quantizer")
    state = vars(estimator) if hasattr(estimator, "__dict__") else None
    if not isinstance(state, dict) or "cluster_centers_" not in state:
        raise ValueError(f"{path}: not a fitted scikit-learn k-means (no cluster_centers_ in "
                         f"{type(estimator).__name__})")
    states = {"cluster_centers": state["cluster_centers_"]}
    if "n_clusters" in state:
        states["n_clusters"] = state["n_clusters"]
    return KmeansQuantizer(_kmeans_centers(states, str(path))).eval()


def _kmeans_centers(states: dict, source: str) -> torch.Tensor:
    """``cluster_centers`` as a float32 ``[K, d]`` tensor, checked (shape, numbers, finite, ``n_clusters``)."""
    schema.check(states, schema.KMEANS, source)
    centers = states["cluster_centers"]
    if isinstance(centers, torch.Tensor):
        kind = "f" if centers.is_floating_point() else "other"
    else:
        centers = np.asarray(centers) if isinstance(centers, (np.ndarray, list, tuple)) else centers
        kind = centers.dtype.kind if isinstance(centers, np.ndarray) else "other"
    if kind not in ("f", "i", "u"):
        schema.fail(source, "cluster_centers", getattr(centers, "dtype", type(centers).__name__),
                    "an array of numbers (float)")
    if centers.ndim != 2:
        raise ValueError(f"{source}: cluster_centers must be [K, d], got shape {list(centers.shape)}")
    rows, dim = (int(n) for n in centers.shape)
    if not (1 <= rows <= schema.MAX_KMEANS_CLUSTERS and 1 <= dim <= schema.MAX_FEATURE_DIM):
        schema.fail(source, "cluster_centers shape", [rows, dim],
                    f"[K, d] with K in 1..{schema.MAX_KMEANS_CLUSTERS} and d in 1..{schema.MAX_FEATURE_DIM}")
    k = states.get("n_clusters", rows)
    if k != rows:
        raise ValueError(f"{source}: n_clusters={k} but cluster_centers has {rows} rows")
    centers = torch.as_tensor(np.asarray(centers, dtype=np.float32) if not isinstance(centers, torch.Tensor)
                              else centers.float())
    check_finite([("cluster_centers", centers)], source)
    return centers


def load_strict(module: nn.Module, weights: dict[str, torch.Tensor], *, source: str) -> None:
    """Load ``weights`` into ``module`` (built on the meta device, or not) after one check naming the
    file and the first missing, unexpected, mis-shaped or non-float weights
    (:func:`spiritlens.checkpoints.validate.check_state_dict`) and any NaN/inf; the tensors are
    assigned (``assign=True``) as float32, so no memory is allocated before the check."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"{source}: quantizer model_weight is not a dict of tensors")
    check_state_dict(module.state_dict(), weights, source=source, what="quantizer")
    check_finite(weights.items(), source)
    module.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True, assign=True)
