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


def distinct_labels(values, digits: int = 2) -> list[str]:
    """Labels of ``values`` with the fewest significant digits (at least ``digits``, at most 10) that
    tell every two different values apart: no colour bar shows "0.99" six times."""
    values = [float(v) for v in values]
    wanted = len(set(values))
    for width in range(digits, 11):
        labels = [f"{v:.{width}g}" for v in values]
        if len(set(labels)) == wanted:
            return labels
    return labels


def one_value_colorbar(colorbar, value: float, text: str) -> None:
    """A colour bar of a flat map at the norm's lower end ``value``: only that colour is shown, with one
    tick labelled ``text`` (not a gradient with a range of equal labels)."""
    norm = colorbar.mappable.norm
    top = value * (norm.vmax / value) ** 1e-3 if getattr(colorbar, "_scale", None) == "log" or norm.__class__.__name__ == "LogNorm" \
        else value + 1e-3 * (norm.vmax - value)
    colorbar.ax.set_ylim(value, top)
    colorbar.set_ticks([value], labels=[text])
    colorbar.ax.minorticks_off()


def outside_legend(ax, handles, labels, *, fontsize: float = 6.5, **kwargs):
    """The legend of ``ax`` below its axes (below the x label), never over the data; handles may be tuples."""
    from matplotlib.legend_handler import HandlerTuple

    return ax.legend(handles, labels, fontsize=fontsize, handler_map={tuple: HandlerTuple(ndivide=None, pad=0)},
                     loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, borderaxespad=0.0, **kwargs)
