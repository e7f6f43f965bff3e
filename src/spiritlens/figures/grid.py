"""Figure-2-style AIE grids (groups x kinds, each panel categories x layers) and ROME's line plots.

Input everywhere is ``groups = {group: {kind: KindAggregate}}`` as returned by
``spiritlens.aggregates.aggregate_by_modality``; rows follow its group order, as the paper's Figure 2:
the backbone's T→T (when the experiment traced one), SpiritLM's T→T, SpiritLM's S→T; columns follow
``KINDS`` (hidden, mlp, attn). Labels: :func:`spiritlens.aggregates.aie.group_labels`.

What is drawn is the per-prompt AIE (``KindAggregate.effect``: each prompt's rows against its own
corrupted score, IE within the numerical floor counted as 0, then the mean over prompts;
:mod:`spiritlens.aggregates.aie`), so a kind without effect draws as zero, marked "no effect".
The line plots' bands are its 95% CI over prompts (:mod:`spiritlens.aggregates.ci`), drawn only
where they have a width, and their legend sits below the panels.

Two colour scales for the grids:

- ``"log"`` (the SpiritLM factual-recall paper): a log colour norm from ε to the largest AIE of all
  panels, on ``max(AIE, ε)``; AIE ≤ ε shows as the lightest colour. ε is written in the suptitle
  and in the PNG's ``epsilon`` text chunk.
- ``"linear"`` (ROME's rollup): ``clip(AIE, 0)`` from 0 to the largest hidden-kind AIE (over all
  groups), shared by mlp and attn, so those saturate where they exceed it.

Either way a kind has one colour scale across all rows, with one colour bar per kind (column). A colour
bar whose panels have no effect anywhere shows one tick, "0: no effect". Empty categories (no rows in
any prompt) are NaN: grey cells marked "no rows".
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spiritlens.aggregates.aie import CATEGORIES, CATEGORY_LABELS, KINDS, KindAggregate, group_labels
from spiritlens.aggregates.ci import ci_formula
from spiritlens.traces.methods import estimate_note
from spiritlens.figures._render import (
    KIND_CMAPS,
    KIND_NAMES,
    distinct_labels,
    new_figure,
    one_value_colorbar,
    save_png,
    set_layer_ticks,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Groups = Mapping[str, Mapping[str, KindAggregate]]
DEFAULT_EPSILON = 1e-4
SCALES = ("log", "linear")
# ROME's line-plot colours: tab10 indices per category, in CATEGORIES order.
LINE_COLORS = (0, 1, 2, 4, 5, 3)
_KIND_TITLES = {"hidden": "hidden states", "mlp": "MLP (window)", "attn": "Attn (window)"}
BAND_LABEL = f"shaded: 95% CI, {ci_formula('prompts')}"
NO_EFFECT = "no effect (every |IE| within the numerical floor)"


def _kinds_in(groups: Groups) -> list[str]:
    if not groups or not any(groups.values()):
        raise ValueError("nothing to plot: no aggregates given")
    return [kind for kind in KINDS if any(kind in kinds for kinds in groups.values())]


def _finite_max(matrices: list[np.ndarray]) -> float:
    values = [m[np.isfinite(m)] for m in matrices]
    values = [v for v in values if v.size]
    return float(max(v.max() for v in values)) if values else math.nan


def aie_grid_figure(groups: Groups, *, scale: str = "log", epsilon: float = DEFAULT_EPSILON) -> Figure:
    """Build the grid Figure: one panel per (kind, modality), each AIE [6 categories, L layers]."""
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r} is not one of {', '.join(SCALES)}")
    if not (isinstance(epsilon, (int, float)) and epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
    from matplotlib.colors import LogNorm, Normalize

    kinds, modalities = _kinds_in(groups), list(groups)
    matrices = {(k, m): groups[m][k].effect_matrix() for m in modalities for k in kinds if k in groups[m]}
    if scale == "log":
        vmax = _finite_max(list(matrices.values()))
        vmax = vmax if vmax > epsilon else 10 * epsilon
        norm = LogNorm(vmin=epsilon, vmax=vmax)
        shown = {key: np.where(np.isnan(a), np.nan, np.maximum(a, epsilon)) for key, a in matrices.items()}
        title = f"Average indirect effect over per-prompt effects, log colour scale (AIE clipped at ε = {epsilon:g})"
    else:
        hidden = [a for (k, _), a in matrices.items() if k == "hidden"]
        vmax = _finite_max(hidden or list(matrices.values()))
        vmax = vmax if vmax > 0 else 1.0
        norm = Normalize(vmin=0.0, vmax=vmax)
        shown = {key: np.where(np.isnan(a), np.nan, np.clip(a, 0, None)) for key, a in matrices.items()}
        title = "Average indirect effect over per-prompt effects, clip(AIE, 0); colour max = hidden-state max"

    labels = group_labels(modalities)
    fig = new_figure(3.6 * len(kinds) + 1.6, 1.9 * len(modalities) + 0.9, layout="constrained")
    axes = fig.subplots(len(modalities), len(kinds), squeeze=False, sharex="col")
    for j, kind in enumerate(kinds):
        mesh, flat = None, True
        for i, modality in enumerate(modalities):
            ax = axes[i, j]
            ax.set_facecolor("0.85")  # NaN (empty category) cells stay grey
            agg = groups[modality].get(kind)
            name = labels[modality]
            if agg is None:
                ax.set_title(f"{name}: no {kind} results", fontsize=8)
                ax.set_yticks([])
                continue
            data = shown[(kind, modality)]
            mesh = ax.pcolormesh(data, cmap=KIND_CMAPS[kind], norm=norm)
            flat = flat and agg.no_effect
            if agg.no_effect:
                ax.text(data.shape[1] / 2, len(CATEGORIES) / 2, NO_EFFECT, ha="center", va="center", fontsize=7,
                        color="0.25")
            for row in np.flatnonzero(np.isnan(data).all(axis=1)):
                ax.text(data.shape[1] / 2, row + 0.5, "no rows", ha="center", va="center", fontsize=6, color="0.3")
            ax.invert_yaxis()
            ax.set_yticks(np.arange(len(CATEGORIES)) + 0.5)
            ax.set_yticklabels([CATEGORY_LABELS[c] for c in CATEGORIES] if j == 0 else [], fontsize=7)
            set_layer_ticks(ax, agg.n_layers)
            ax.set_title(f"{name}: {_KIND_TITLES[kind]} (n = {agg.count})", fontsize=8)
            if i == len(modalities) - 1:
                ax.set_xlabel("layer" if kind == "hidden" else "layer (centre of window)", fontsize=8)
        if mesh is not None:  # one bar per kind: the same scale in every row
            colorbar = fig.colorbar(mesh, ax=list(axes[:, j]), fraction=0.05, pad=0.02, aspect=30)
            colorbar.ax.tick_params(labelsize=6)
            colorbar.set_label(f"AIE ({KIND_NAMES[kind]})", fontsize=7)
            if flat:  # every panel of the column is exactly 0: one value, not a range
                one_value_colorbar(colorbar, mesh.norm.vmin, "0: no effect" if scale == "linear" else "≤ ε: no effect")
            elif scale == "linear":  # (a log bar's decades are distinct already)
                ticks = [t for t in colorbar.get_ticks() if mesh.norm.vmin <= t <= mesh.norm.vmax]
                colorbar.set_ticks(ticks, labels=distinct_labels(ticks))
    note = _estimate_note(groups)
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=9)
    return fig


def plot_aie_grid(
    groups: Groups, path: str | os.PathLike, *, scale: str = "log", epsilon: float = DEFAULT_EPSILON
) -> Path:
    """Write the AIE grid as a PNG (atomically); ``epsilon`` and ``scale`` go into the PNG text chunks."""
    fig = aie_grid_figure(groups, scale=scale, epsilon=epsilon)
    metadata = {"Title": "spiritlens AIE grid", "scale": scale}
    if scale == "log":
        metadata["epsilon"] = repr(float(epsilon))
    return save_png(fig, path, metadata)


def _estimate_note(groups: Groups) -> str:
    """What the panels show when any aggregate holds attribution estimates (:mod:`spiritlens.traces.methods`)."""
    return estimate_note({m for kinds in groups.values() for agg in kinds.values() for m in agg.methods})


def aie_lines_figure(groups: Groups) -> Figure:
    """ROME's line plots: AIE per layer for each category with a 95% band, rows = groups (as the grid's),
    columns = kinds.

    The per-prompt AIE (``KindAggregate.effect``), unclipped, band ±``KindAggregate.ci`` (the t-interval
    over per-prompt effects, labelled in the legend as :data:`BAND_LABEL`), drawn only where it has a
    width; a kind without effect draws flat at 0, marked "no effect", with no band. x ticks on whole
    layers; empty categories are left out; the legend is below the panels, outside every axes.
    """
    kinds, modalities = _kinds_in(groups), list(groups)
    labels = group_labels(modalities)
    fig = new_figure(4.2 * len(kinds), 2.9 * len(modalities) + 0.6, layout="constrained")
    axes = fig.subplots(len(modalities), len(kinds), squeeze=False, sharey="row")
    from matplotlib import colormaps

    colors = colormaps["tab10"].colors
    for i, modality in enumerate(modalities):
        for j, kind in enumerate(kinds):
            ax = axes[i, j]
            agg = groups[modality].get(kind)
            ax.set_title(f"{labels[modality]}: AIE of {_KIND_TITLES[kind]}", fontsize=9)
            if agg is None:
                continue
            layers = np.arange(agg.n_layers)
            for category, color_index in zip(CATEGORIES, LINE_COLORS):
                if agg.row_counts[category] == 0:
                    continue
                y, err = agg.effect[category], agg.ci[category]
                color = colors[color_index]
                width = np.isfinite(err) & (err > 0)
                if width.any():
                    ax.fill_between(layers, y - err, y + err, where=width, interpolate=True, alpha=0.3, color=color,
                                    linewidth=0, label="_band")
                ax.plot(layers, y, color=color, label=CATEGORY_LABELS[category], linewidth=1.2)
            ax.axhline(0.0, color="0.5", linewidth=0.6)
            if agg.no_effect:
                ax.text(0.5, 0.62, NO_EFFECT, transform=ax.transAxes, ha="center", va="center", fontsize=7,
                        color="0.25")
            step = 5 if agg.n_layers > 12 else 1  # whole layers only (ROME ticks every 5th of 48)
            ax.set_xticks(np.arange(0, agg.n_layers, step))
            ax.set_xlim(-0.2, agg.n_layers - 0.8)
            ax.set_xlabel("layer" if kind == "hidden" else "layer (centre of window)", fontsize=8)
            if j == 0:
                ax.set_ylabel("AIE on p(answer)", fontsize=8)
            ax.tick_params(labelsize=7)
    handles, labels = [], []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        from matplotlib.patches import Patch

        if any(collection.get_label() == "_band" for ax in axes.flat for collection in ax.collections):
            handles.append(Patch(color="0.6", alpha=0.3, linewidth=0))
            labels.append(BAND_LABEL)
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), frameon=False, fontsize=7)
    note = _estimate_note(groups)
    if note:
        fig.suptitle(note, fontsize=8)
    return fig


def plot_aie_lines(groups: Groups, path: str | os.PathLike) -> Path:
    """Write ROME-style line plots with 95% bands as a PNG (atomically)."""
    return save_png(aie_lines_figure(groups), path, {"Title": "spiritlens AIE line plots"})
