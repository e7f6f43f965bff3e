"""Shared plotting plumbing: the optional matplotlib import, kind colours, atomic PNG saving."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

from spiritlens._io import write_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOTS_EXTRA_HINT = "pip install 'spiritlens[plots]'"
# ROME's colour maps: hidden states purple, MLP green, attention red.
KIND_CMAPS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
KIND_NAMES = {"hidden": "hidden state", "mlp": "MLP", "attn": "Attn"}


def new_figure(width: float, height: float, dpi: int = 200, layout: str | None = None) -> Figure:
    """A pyplot-free matplotlib Figure (no global state, nothing to close); clear error without the extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(f"figures need matplotlib, which is missing: {PLOTS_EXTRA_HINT}") from error
    return Figure(figsize=(width, height), dpi=dpi, layout=layout)


def set_layer_ticks(ax, n_layers: int) -> None:
    """Layer ticks at cell centres: every 5th layer as ROME draws them, every layer for small models."""
    import numpy as np

    step = 5 if n_layers > 12 else 1
    ax.set_xticks(np.arange(0, n_layers, step) + 0.5)
    ax.set_xticklabels([str(layer) for layer in range(0, n_layers, step)], fontsize=7)


def plain_label(text: str) -> str:
    """Escape ``$`` so a token such as "$" is not read as mathtext."""
    return text.replace("$", r"\$")


def save_png(fig: Figure, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write ``fig`` as a PNG atomically; ``metadata`` goes into PNG text chunks (e.g. ``epsilon``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": "spiritlens", **(metadata or {})})
    return write_atomic(path, buffer.getvalue())
