"""Per-prompt causal-trace heatmap, read like ROME's ``plot_trace_heatmap``.

Rows are the result's rows (tokens, or for speech the listed position groups) with the subject
rows marked ``*``; columns are layers; the colour is p(answer) after restoring that (row, layer)
cell, on ROME's scale: the colour bar starts at the corrupted run's ``low_score``. A cell within the
result's numerical floor of ``low_score`` (:func:`spiritlens.aggregates.aie.numerical_floor`, float32
rounding) is drawn as ``low_score``; a map with no other cell is flat: its colour bar shows that one
value, "no effect", and the tick labels of any other bar carry the digits that tell them apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spiritlens.aggregates.aie import MODALITY_LABELS, describe, numerical_floor, parse_result
from spiritlens.traces.methods import estimate_note, value_label
from spiritlens.figures._render import (
    KIND_CMAPS,
    KIND_NAMES,
    distinct_labels,
    new_figure,
    one_value_colorbar,
    plain_label,
    save_png,
    set_layer_ticks,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def row_labels(result: Mapping) -> list[str]:
    """One label per row of ``scores`` ([R]): ``rows[i].label`` or ``tokens[i]``, subject rows ending in ``*``."""
    parsed = parse_result(result, allow_untraced=True)
    n_rows = parsed.scores.shape[0]
    if result.get("rows") is not None:
        labels = [str(row.get("label", i)) if isinstance(row, Mapping) else str(row) for i, row in enumerate(result["rows"])]
    elif result.get("tokens") is not None and len(result["tokens"]) == n_rows:
        labels = [str(token) for token in result["tokens"]]
    else:
        labels = [str(i) for i in range(n_rows)]
    return [label + "*" if parsed.b <= i < parsed.e else label for i, label in enumerate(labels)]


def trace_heatmap_figure(result: Mapping, model_name: str = "SpiritLM") -> Figure:
    """Build the heatmap Figure of one result (``scores`` [R, L]); see ``plot_trace_heatmap``."""
    parsed = parse_result(result, allow_untraced=True)
    scores = parsed.scores
    n_rows, n_layers = scores.shape
    kind, window = parsed.kind, result.get("window", 10)
    fig = new_figure(3.8 + 0.03 * max(0, n_layers - 32), max(2.4, 0.17 * n_rows + 1.3), layout="constrained")
    ax = fig.add_subplot()
    floor = numerical_floor(parsed)
    shown = np.where(np.abs(scores - parsed.low) <= floor, parsed.low, scores)  # rounding is no effect
    flat = not np.any(np.abs(shown[np.isfinite(shown)] - parsed.low) > 0)
    vmax = max(float(np.nanmax(shown)) if np.isfinite(shown).any() else parsed.low, parsed.low + max(floor, 1e-12))
    # cells a cells= trace left untraced are NaN: drawn blank
    mesh = ax.pcolormesh(np.ma.masked_invalid(shown), cmap=KIND_CMAPS[kind], vmin=parsed.low, vmax=vmax)
    ax.invert_yaxis()
    ax.set_yticks(np.arange(n_rows) + 0.5)
    ax.set_yticklabels([plain_label(label) for label in row_labels(result)], fontsize=7)
    for row in parsed.ignored:  # rows in no category (e.g. silence): greyed out
        ax.get_yticklabels()[row].set_color("0.6")
    set_layer_ticks(ax, n_layers)
    method = str(result.get("method", "exact"))
    estimate = estimate_note([method])  # an attribution screen's heatmap says so in its title
    impact = "Estimated impact" if estimate else "Impact"
    if kind == "hidden":
        ax.set_title(f"{impact} of restoring state after corrupted input", fontsize=9)
        ax.set_xlabel(f"single restored layer within {model_name}", fontsize=8)
    else:
        ax.set_title(f"{impact} of restoring {KIND_NAMES[kind]} after corrupted input", fontsize=9)
        ax.set_xlabel(f"center of interval of {window} restored {KIND_NAMES[kind]} layers", fontsize=8)
    answer = str(result.get("answer", "")).strip() or f"id {result.get('answer_id')}"
    modality = MODALITY_LABELS.get(parsed.modality, parsed.modality)
    fig.suptitle(
        plain_label(f"{modality}: answer {answer!r}; p clean {parsed.high:.3g}, corrupted (low) {parsed.low:.3g}"
                    + (f"\n{estimate}" if estimate else "")),
        fontsize=7,
    )
    colorbar = fig.colorbar(mesh, ax=ax)
    if flat:  # one value everywhere: say so once
        one_value_colorbar(colorbar, parsed.low, f"{parsed.low:.3g} = low\nevery cell:\nno effect")
    else:  # the bar starts at low_score (ROME's vmin); label that end explicitly
        ticks = [t for t in colorbar.get_ticks() if parsed.low + 0.08 * (vmax - parsed.low) < t <= vmax]
        labels = distinct_labels([parsed.low, *ticks])
        colorbar.set_ticks([parsed.low, *ticks], labels=[f"{labels[0]} low", *labels[1:]])
    colorbar.ax.tick_params(labelsize=7)
    colorbar.set_label(plain_label(value_label(method).replace("p(answer)", f"p({answer})")), fontsize=8)
    return fig


def plot_trace_heatmap(result, path: str | os.PathLike, model_name: str = "SpiritLM") -> Path:
    """Write one result's heatmap as a PNG at ``path`` (atomically) and return the path.

    ``result``: a :class:`~spiritlens.traces.TraceResult` or its JSON dict (``to_json()``).

    Title and x label follow ROME (hidden: single restored layer; mlp/attn: centre of a window of
    ``window`` restored layers); a second line gives the modality, the answer, and the clean and
    corrupted probabilities. Raises ValueError naming the prompt if the result is malformed.
    """
    if hasattr(result, "to_json"):
        result = result.to_json()
    fig = trace_heatmap_figure(result, model_name=model_name)
    return save_png(fig, path, {"Title": f"causal trace {describe(result)}", "kind": str(result["kind"])})
