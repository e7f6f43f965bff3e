"""The window of MLP/attention layers restored per cell (ROME: 10 layers centred on the row's layer), scaled to the model's depth."""

from __future__ import annotations

import math


PAPER_WINDOW, PAPER_LAYERS = 10, 32  # the paper traces SpiritLM (32 layers) with ROME's window of 10


def default_window(n_layers: int) -> int:
    """The MLP/attention window for an ``n_layers`` model when none is given: ROME's and the paper's
    10 restored layers of SpiritLM's 32, scaled to the depth, ``max(1, floor(10 * L / 32 + 1/2))``
    (32 layers: 10; 8 layers: 3; 4 layers: 1)."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    return max(1, math.floor(PAPER_WINDOW * n_layers / PAPER_LAYERS + 0.5))


WINDOW_RULE = "max(1, floor(10 * n_layers / 32 + 1/2)): the paper's 10 of SpiritLM's 32 layers, scaled"


def check_window(window: int | None, n_layers: int) -> int:
    """``window``, or :func:`default_window` for None; ValueError unless an integer >= 1. A window wider
    than the model is allowed: as in ROME, each cell's window is truncated at the first and last layer."""
    if window is None:
        return default_window(n_layers)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    return window


def layer_window(layer: int, window: int, n_layers: int) -> range:
    """ROME's window around ``layer``: [l - w//2, l + ceil(w/2) - 1], truncated at the edges."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))
