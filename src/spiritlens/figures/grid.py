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

**SpiritLM Expressive, per stream** (``streams=``: ``{kind: KindAggregate}`` of results traced with
``row_mode="streams"``, :func:`spiritlens.aggregates.aggregate_streams`): the grid gets three more
rows, "S→T Expressive: HuBERT", "…: pitch", "…: style", each with the subject categories of that stream
("First subject token / pitch", ...) and the three unsplit categories after the subject, on the same
colour scale per kind as the other rows. :func:`stream_controls_figure` draws the same per-stream panels
for one kind under each prosody control (rows: controls; columns: streams).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spiritlens.aggregates.aie import (CATEGORIES, CATEGORY_LABELS, KINDS, SUBJECT_CATEGORIES, KindAggregate,
                                      group_labels)
from spiritlens.traces.streams import STREAM_LABELS, STREAMS
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


STREAM_COLUMN = "S→T Expressive"


def stream_panel_categories(stream: str) -> tuple[str, ...]:
    """The categories of one stream's panel: its subject categories, then the three after the subject."""
    return tuple(f"{c}/{stream}" for c in SUBJECT_CATEGORIES) + CATEGORIES[3:]


def _kinds_in(groups: Groups, streams: Mapping[str, KindAggregate] | None = None) -> list[str]:
    if (not groups or not any(groups.values())) and not streams:
        raise ValueError("nothing to plot: no aggregates given")
    return [kind for kind in KINDS if any(kind in kinds for kinds in groups.values()) or kind in (streams or {})]


def _group_rows(groups: Groups, streams: Mapping[str, KindAggregate] | None) -> list[tuple[str, Mapping, tuple]]:
    """(title, {kind: KindAggregate}, categories) per row of the grid: the groups (the backbone's T→T,
    SpiritLM's T→T, S→T), then one row per Expressive stream."""
    labels = group_labels(list(groups))
    rows = [(labels[m], groups[m], CATEGORIES) for m in groups]
    if streams:
        rows += [(f"{STREAM_COLUMN}: {STREAM_LABELS[s]}", streams, stream_panel_categories(s)) for s in STREAMS]
    return rows


def _finite_max(matrices: list[np.ndarray]) -> float:
    values = [m[np.isfinite(m)] for m in matrices]
    values = [v for v in values if v.size]
    return float(max(v.max() for v in values)) if values else math.nan


def aie_grid_figure(groups: Groups, *, scale: str = "log", epsilon: float = DEFAULT_EPSILON,
                    streams: Mapping[str, KindAggregate] | None = None) -> Figure:
    """Build the grid Figure: rows = groups (module docstring), columns = kinds, each panel the per-prompt
    AIE [6 categories, L layers]; with ``streams`` (``{kind: KindAggregate}`` over
    :data:`~spiritlens.aggregates.STREAM_CATEGORIES`) three more rows, one per stream."""
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r} is not one of {', '.join(SCALES)}")
    if not (isinstance(epsilon, (int, float)) and epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
    kinds, grouped = _kinds_in(groups, streams), _group_rows(groups, streams)
    rows = [[(kind, title, aggs.get(kind), categories) for kind in kinds] for title, aggs, categories in grouped]
    fig = new_figure(3.6 * len(kinds) + 1.6, 1.9 * len(rows) + 0.9, layout="constrained")
    title = _draw_panels(fig, rows, scale=scale, epsilon=epsilon)
    note = _estimate_note(groups, streams)
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=9)
    return fig


def stream_controls_figure(by_control: Mapping[str, KindAggregate], kind: str, *, scale: str = "log",
                           epsilon: float = DEFAULT_EPSILON, labels: Mapping[str, str] | None = None) -> Figure:
    """Per-stream panels of one ``kind`` under each prosody control: rows = controls (``by_control``:
    control name -> its ``"streams"`` aggregate, in order; ``labels``: their titles), columns = HuBERT,
    pitch, style, one colour scale for all."""
    if not by_control:
        raise ValueError("nothing to plot: no aggregates given")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    rows = [[(kind, f"{(labels or {}).get(control, control)}\n{STREAM_LABELS[s]}", agg, stream_panel_categories(s))
             for s in STREAMS] for control, agg in by_control.items()]  # two title lines: long control names
    fig = new_figure(3.4 * len(STREAMS) + 2.2, 2.1 * len(rows) + 0.7, layout="constrained")
    title = _draw_panels(fig, rows, scale=scale, epsilon=epsilon)
    note = estimate_note({m for agg in by_control.values() for m in agg.methods})
    fig.suptitle(f"{KIND_NAMES[kind]}, per stream, under each prosody control\n{title}" + (f"\n{note}" if note else ""),
                 fontsize=9)
    return fig


def _draw_panels(fig, rows: list[list[tuple]], *, scale: str, epsilon: float) -> str:
    """Draw a grid of AIE panels; ``rows[i][j] = (kind, title, KindAggregate or None, categories)``; one
    colour scale and one colour bar per kind, shared by every panel of that kind. Returns the scale's
    title line."""
    from matplotlib.colors import LogNorm, Normalize

    matrices = {(i, j): agg.effect_matrix(categories) for i, row in enumerate(rows)
                for j, (_, _, agg, categories) in enumerate(row) if agg is not None}
    if scale == "log":
        vmax = _finite_max(list(matrices.values()))
        vmax = vmax if vmax > epsilon else 10 * epsilon
        norm = LogNorm(vmin=epsilon, vmax=vmax)
        shown = {key: np.where(np.isnan(a), np.nan, np.maximum(a, epsilon)) for key, a in matrices.items()}
        title = f"Average indirect effect over per-prompt effects, log colour scale (AIE clipped at ε = {epsilon:g})"
    else:
        hidden = [a for (i, j), a in matrices.items() if rows[i][j][0] == "hidden"]
        vmax = _finite_max(hidden or list(matrices.values()))
        vmax = vmax if vmax > 0 else 1.0
        norm = Normalize(vmin=0.0, vmax=vmax)
        shown = {key: np.where(np.isnan(a), np.nan, np.clip(a, 0, None)) for key, a in matrices.items()}
        title = "Average indirect effect over per-prompt effects, clip(AIE, 0); colour max = hidden-state max"

    axes = fig.subplots(len(rows), len(rows[0]), squeeze=False, sharex="col")
    meshes: dict[str, list] = {}  # kind -> [(mesh, axes, no effect)] of its panels
    for i, row in enumerate(rows):
        for j, (kind, name, agg, categories) in enumerate(row):
            ax = axes[i, j]
            ax.set_facecolor("0.85")  # NaN (empty category) cells stay grey
            if agg is None:
                ax.set_title(f"{name}: no {kind} results", fontsize=8)
                ax.set_yticks([])
                continue
            data = shown[(i, j)]
            mesh = ax.pcolormesh(data, cmap=KIND_CMAPS[kind], norm=norm)
            meshes.setdefault(kind, []).append((mesh, ax, agg.no_effect))
            if agg.no_effect:
                ax.text(data.shape[1] / 2, len(categories) / 2, NO_EFFECT, ha="center", va="center", fontsize=7,
                        color="0.25")
            for r in np.flatnonzero(np.isnan(data).all(axis=1)):
                ax.text(data.shape[1] / 2, r + 0.5, "no rows", ha="center", va="center", fontsize=6, color="0.3")
            ax.invert_yaxis()
            ax.set_yticks(np.arange(len(categories)) + 0.5)
            labelled = j == 0 or categories != row[j - 1][3]  # labels wherever the categories change
            ax.set_yticklabels([CATEGORY_LABELS[c] for c in categories] if labelled else [], fontsize=7)
            set_layer_ticks(ax, agg.n_layers)
            ax.set_title(f"{name}: {_KIND_TITLES[kind]} (n = {agg.count})", fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel("layer" if kind == "hidden" else "layer (centre of window)", fontsize=8)
    for kind, drawn in meshes.items():  # one bar per kind: the same scale in every panel of that kind
        mesh = drawn[-1][0]
        colorbar = fig.colorbar(mesh, ax=[ax for _, ax, _ in drawn], fraction=0.05, pad=0.02, aspect=30)
        colorbar.ax.tick_params(labelsize=6)
        colorbar.set_label(f"AIE ({KIND_NAMES[kind]})", fontsize=7)
        if all(flat for _, _, flat in drawn):  # every panel of the kind is exactly 0: one value, not a range
            one_value_colorbar(colorbar, mesh.norm.vmin, "0: no effect" if scale == "linear" else "≤ ε: no effect")
        elif scale == "linear":  # (a log bar's decades are distinct already)
            ticks = [t for t in colorbar.get_ticks() if mesh.norm.vmin <= t <= mesh.norm.vmax]
            colorbar.set_ticks(ticks, labels=distinct_labels(ticks))
    return title


def plot_aie_grid(
    groups: Groups, path: str | os.PathLike, *, scale: str = "log", epsilon: float = DEFAULT_EPSILON,
    streams: Mapping[str, KindAggregate] | None = None,
) -> Path:
    """Write the AIE grid as a PNG (atomically); ``epsilon`` and ``scale`` go into the PNG text chunks;
    ``streams``: the Expressive per-stream panels (:func:`aie_grid_figure`)."""
    fig = aie_grid_figure(groups, scale=scale, epsilon=epsilon, streams=streams)
    metadata = {"Title": "spiritlens AIE grid", "scale": scale}
    if scale == "log":
        metadata["epsilon"] = repr(float(epsilon))
    return save_png(fig, path, metadata)


def plot_stream_controls(by_control: Mapping[str, KindAggregate], kind: str, path: str | os.PathLike, *,
                         scale: str = "log", epsilon: float = DEFAULT_EPSILON,
                         labels: Mapping[str, str] | None = None) -> Path:
    """Write :func:`stream_controls_figure` as a PNG (atomically)."""
    fig = stream_controls_figure(by_control, kind, scale=scale, epsilon=epsilon, labels=labels)
    metadata = {"Title": f"spiritlens per-stream AIE under prosody controls ({kind})", "scale": scale}
    if scale == "log":
        metadata["epsilon"] = repr(float(epsilon))
    return save_png(fig, path, metadata)


def _estimate_note(groups: Groups, streams: Mapping[str, KindAggregate] | None = None) -> str:
    """What the panels show when any aggregate holds attribution estimates (:mod:`spiritlens.traces.methods`)."""
    aggs = [agg for kinds in groups.values() for agg in kinds.values()] + list((streams or {}).values())
    return estimate_note({m for agg in aggs for m in agg.methods})


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
