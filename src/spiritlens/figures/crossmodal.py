"""Figures of the cross-modal analyses (``spiritlens.crossmodal``): PNGs, written atomically.

- :func:`plot_patching`: per-layer indirect effect of cross-modal patching against the
  within-modality restoration of the same positions, one panel per direction x mode;
- :func:`plot_geometry`: cosine and Euclidean distance of matched words against the
  mismatched-word baseline, and the norms of both modalities;
- :func:`plot_logit_lens`: one fact's heatmap of the best rank of the subject's text tokens,
  speech positions (and the text reference) x layers;
- :func:`plot_mrr`: the mean reciprocal rank per layer over facts, with its text reference and chance
  (log axis: a band reaching zero is drawn down to half the smallest value shown).

Curves are means over facts; the shaded band around each is its 95% CI (the project's one formula,
``t_{0.975,n-1}·s/√n`` over facts, :mod:`spiritlens.aggregates.ci`), named in the legend with the
fact count. With one fact there is no band. Legends sit below the panels, outside every axes, so
they never cover a curve or a band. Layers are ticked on whole numbers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from spiritlens.aggregates.ci import ci_formula
from spiritlens.figures._render import new_figure, plain_label, save_png
from spiritlens.crossmodal.analyses import ANALYSES
from spiritlens.crossmodal.analyses import summarize_results
from spiritlens.crossmodal.fact import ResultFile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from spiritlens.crossmodal.logit_lens import LogitLensResult
    from spiritlens.crossmodal.summary import Band, CrossModalSummary

_TITLES = {"text_to_speech": "text state → noised spoken run", "speech_to_text": "speech state → noised text run"}
_MODES = {"last": "last subject position", "groups": "subject tokens ↔ aligned speech groups"}


def _tab10() -> tuple:
    from matplotlib import colormaps

    return colormaps["tab10"].colors


def _layer_axis(ax, n_layers: int) -> None:
    step = 1 if n_layers <= 16 else 2 if n_layers <= 40 else 5
    ax.set_xticks(np.arange(0, n_layers, step))
    ax.set_xlim(-0.3, n_layers - 0.7)
    ax.set_xlabel("layer (output of block l, resid_post)", fontsize=8)
    ax.tick_params(labelsize=7)


def _band(ax, band: Band, label: str, color, style: str = "-", floor: float | None = None):
    """A mean line with its 95% CI band (its lower edge raised to ``floor`` if given, for a log
    axis); returns one legend handle covering both, and its label."""
    layers = np.arange(len(band.mean))
    (line,) = ax.plot(layers, band.mean, style, color=color, linewidth=1.4, marker="o", markersize=2.5)
    if np.isfinite(band.ci).any():
        low = band.low if floor is None else np.maximum(band.low, floor)
        patch = ax.fill_between(layers, low, band.high, color=color, alpha=0.2, linewidth=0)
        return (line, patch), f"{label} (mean of {band.n}, 95% CI band)"
    return line, f"{label} ({'one fact' if band.n == 1 else f'mean of {band.n}'}, no CI)"


def _legend(fig, handles: list, fontsize: float = 7, ncol: int = 2) -> None:
    """One legend for the figure, below its panels (constrained layout makes room): entries in order,
    each label once, and the band's formula when a band is drawn."""
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.patches import Patch

    seen: dict[str, object] = {}
    for handle, label in handles:
        seen.setdefault(label, handle)
    if any(isinstance(handle, tuple) for handle in seen.values()):
        seen[f"shaded: 95% CI, {ci_formula('facts')}"] = Patch(color="0.6", alpha=0.2, linewidth=0)
    fig.legend(list(seen.values()), [plain_label(label) for label in seen], fontsize=fontsize, frameon=False,
               handler_map={tuple: HandlerTuple(ndivide=None, pad=0)}, loc="outside lower center",
               ncol=min(ncol, len(seen)))


def patching_figure(summary: CrossModalSummary) -> Figure:
    """Rows: directions; columns: modes. Indirect effect on p(answer) (score - low_score) per layer."""
    keys = list(summary.patching)
    if not keys:
        raise ValueError("the summary has no patching curves to plot")
    directions = list(dict.fromkeys(k.split("/")[0] for k in keys))
    modes = list(dict.fromkeys(k.split("/")[1] for k in keys))
    colors = _tab10()
    fig = new_figure(4.6 * len(modes), 3.2 * len(directions) + 0.5, layout="constrained")
    axes = fig.subplots(len(directions), len(modes), squeeze=False)
    handles = []
    for i, direction in enumerate(directions):
        for j, mode in enumerate(modes):
            ax = axes[i, j]
            bands = summary.patching.get(f"{direction}/{mode}")
            if bands is None:
                ax.set_axis_off()
                continue
            handles += [_band(ax, bands["cross"], "the other modality's state patched in (cross-modal)", colors[0]),
                        _band(ax, bands["self"], "the run's own state restored (within-modality)", colors[1], "--")]
            total = bands["total_effect"]
            ci = total.ci[0] if abs(total.ci[0]) > 1e-12 else 0.0  # rounding noise of equal effects
            ax.set_title(f"{_TITLES[direction]}, {_MODES[mode]}\ntotal effect (high − low) "
                         f"{total.mean[0]:.3g}" + (f" ± {ci:.2g}" if np.isfinite(ci) else ""), fontsize=8)
            ax.axhline(0, color="0.7", linewidth=0.6)
            _layer_axis(ax, summary.n_layers)
            ax.set_ylabel("indirect effect on p(answer)", fontsize=8)
    _legend(fig, handles)
    fig.suptitle("Cross-modal patching: restoring a noised run with the other modality's hidden state", fontsize=9)
    return fig


def geometry_figure(summary: CrossModalSummary) -> Figure:
    """Three panels against layer: cosine, Euclidean distance (matched vs mismatched words), norms."""
    geometry = summary.geometry
    if not geometry:
        raise ValueError("the summary has no geometry to plot")
    colors = _tab10()
    fig = new_figure(13.5, 3.8, layout="constrained")
    axes = fig.subplots(1, 3)
    handles = []
    panels = [
        ("cosine similarity", [("cosine", "same word: text vs speech", colors[0], "-"),
                               ("mismatched_cosine", "different words (baseline)", colors[7], "--")]),
        ("Euclidean distance", [("distance", "same word: text vs speech", colors[0], "-"),
                                ("mismatched_distance", "different words (baseline)", colors[7], "--")]),
        ("norm of the mean state", [("text_norm", "text tokens", colors[2], "-"),
                                    ("speech_norm", "aligned speech tokens", colors[3], "-")]),
    ]
    for ax, (title, lines) in zip(axes, panels):
        handles += [_band(ax, geometry[name], label, color, style) for name, label, color, style in lines]
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(title, fontsize=8)
        _layer_axis(ax, summary.n_layers)
    _legend(fig, handles, ncol=3)
    n = geometry["cosine"].n
    fig.suptitle(f"Text vs speech representations of the same word, per layer ({n} fact{'s' * (n != 1)})",
                 fontsize=9)
    return fig


def logit_lens_figure(result: LogitLensResult) -> Figure:
    """Heatmap of the best rank of the subject's text tokens: speech positions (top) and the text
    reference positions (bottom) x layers; log colour scale, rank 1 darkest; ranks written in cells."""
    from matplotlib.colors import LogNorm

    speech, text = result.best_rank, result.text_ranks.min(axis=-1)
    L, n = result.n_layers, result.n_text_tokens
    rows = len(speech) + len(text)
    fig = new_figure(max(4.5, 1.6 + 0.42 * L + 1.6), max(2.6, 0.24 * rows + 1.4), layout="constrained")
    axes = fig.subplots(2, 1, height_ratios=[max(1, len(speech)), max(1, len(text))], sharex=True)
    norm = LogNorm(vmin=1, vmax=max(2, n))
    text_labels = [f"{p}: {t.strip() or repr(t)}" for p, t in zip(result.text_positions, result.subject_tokens)]
    for ax, data, labels, title in ((axes[0], speech, result.position_labels, "spoken run: subject speech positions"),
                                    (axes[1], text, text_labels, "text run: subject token positions (reference)")):
        mesh = ax.pcolormesh(data, cmap="magma", norm=norm)
        ax.invert_yaxis()
        ax.set_yticks(np.arange(len(labels)) + 0.5)
        ax.set_yticklabels([plain_label(label) for label in labels], fontsize=7)
        ax.set_title(title, fontsize=8)
        if data.size <= 600:
            for (r, c), value in np.ndenumerate(data):
                ax.text(c + 0.5, r + 0.5, str(value), ha="center", va="center", fontsize=5.5,
                        color="white" if value < np.sqrt(n) else "black")
    axes[1].set_xticks(np.arange(L) + 0.5)
    axes[1].set_xticklabels([str(l) for l in range(L)], fontsize=7)
    axes[1].set_xlabel("layer (output of block l, resid_post)", fontsize=8)
    bar = fig.colorbar(mesh, ax=list(axes), fraction=0.05)
    bar.set_label(f"best rank of the subject's text tokens (1 = top of {n} text tokens)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    tokens = ", ".join(repr(t) for t in result.subject_tokens)
    fig.suptitle(plain_label(f"Logit lens, {result.name}: subject tokens {tokens}"), fontsize=8)
    return fig


def mrr_figure(summary: CrossModalSummary) -> Figure:
    """Mean reciprocal rank per layer: speech positions, text positions (reference), chance; log y."""
    lens = summary.logit_lens
    if not lens:
        raise ValueError("the summary has no logit-lens numbers to plot")
    colors = _tab10()
    fig = new_figure(5.6, 4.2, layout="constrained")
    ax = fig.add_subplot()
    values = np.concatenate([lens["speech"].mean, lens["text"].mean, [lens["chance"]]])
    floor = 0.5 * values[np.isfinite(values) & (values > 0)].min()  # a band reaching 0 ends at the axis floor
    handles = [_band(ax, lens["speech"], "subject speech positions", colors[3], floor=floor),
               _band(ax, lens["text"], "subject text positions (reference)", colors[0], "--", floor=floor)]
    line = ax.axhline(lens["chance"], color="0.4", linestyle=":", linewidth=1)
    handles.append((line, f"chance (random ranking) = {lens['chance']:.2g}"))
    ax.set_yscale("log")
    ax.set_ylabel("mean reciprocal rank of the subject's text tokens", fontsize=8)
    _layer_axis(ax, summary.n_layers)
    _legend(fig, handles, ncol=1)
    ax.set_title("Logit lens: do speech positions decode to the subject's text tokens?", fontsize=9)
    return fig


def plot_patching(summary: CrossModalSummary, path: str | os.PathLike) -> Path:
    """Write :func:`patching_figure` as a PNG; returns the path."""
    return save_png(patching_figure(summary), path, {"Title": "spiritlens cross-modal patching"})


def plot_geometry(summary: CrossModalSummary, path: str | os.PathLike) -> Path:
    """Write :func:`geometry_figure` as a PNG; returns the path."""
    return save_png(geometry_figure(summary), path, {"Title": "spiritlens cross-modal geometry"})


def plot_logit_lens(result: LogitLensResult, path: str | os.PathLike) -> Path:
    """Write :func:`logit_lens_figure` as a PNG; returns the path."""
    return save_png(logit_lens_figure(result), path, {"Title": f"spiritlens logit lens {result.name}"})


def plot_mrr(summary: CrossModalSummary, path: str | os.PathLike) -> Path:
    """Write :func:`mrr_figure` as a PNG; returns the path."""
    return save_png(mrr_figure(summary), path, {"Title": "spiritlens logit lens MRR"})


SUMMARY_FIGURES = {"patching": "patching.png", "geometry": "geometry.png", "logit_lens": "logit_lens_mrr.png"}


def write_figures(summary: CrossModalSummary, out: str | os.PathLike, sample_lens: LogitLensResult | None = None,
                  sample_name: str = "logit_lens.png", analyses: Sequence[str] = ANALYSES) -> list[str]:
    """The summary's figures of ``analyses`` (those it has numbers for) and a sample logit-lens
    heatmap, in ``out``; the file names written."""
    from spiritlens.figures.crossmodal import plot_geometry, plot_logit_lens, plot_mrr, plot_patching

    out = Path(out)
    written = []
    for analysis, plot in (("patching", plot_patching), ("geometry", plot_geometry), ("logit_lens", plot_mrr)):
        if analysis in analyses and getattr(summary, analysis):
            plot(summary, out / SUMMARY_FIGURES[analysis])
            written.append(SUMMARY_FIGURES[analysis])
    if sample_lens is not None:
        plot_logit_lens(sample_lens, out / sample_name)
        written.append(sample_name)
    return written


def write_fact_outputs(results: Mapping[str, ResultFile], out: str | os.PathLike) -> list[Path]:
    """One fact's results as ``<analysis>.json``, its ``summary.json`` and figures in ``out``."""
    out = Path(out)
    paths = [result.save(out / f"{analysis}.json") for analysis, result in results.items()]
    summary = summarize_results({analysis: [result] for analysis, result in results.items()})
    paths.append(summary.save(out / "summary.json"))
    # For one fact the heatmap shows the logit lens; a reciprocal-rank curve adds nothing.
    names = write_figures(summary, out, results.get("logit_lens"), analyses=("patching", "geometry"))
    return paths + [out / name for name in names]
