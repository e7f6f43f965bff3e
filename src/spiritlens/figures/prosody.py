"""The prosody controls' figure: p(answer) under each control, and each stream's total effect.

Input: :func:`spiritlens.aggregates.prosody.control_effects`. Left panel: the mean p(answer) of each
control over prompts with its 95% CI (error bars; none with one prompt), the original's mean as a dashed
line. Right panel: per control, the total effect of noising the subject's positions of one stream alone
(HuBERT, pitch, style side by side), mean ± 95% CI. The legend sits below the panels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spiritlens.aggregates.ci import ci_formula
from spiritlens.aggregates.prosody import ControlEffect
from spiritlens.figures._render import new_figure, save_png
from spiritlens.traces.streams import STREAM_LABELS, STREAMS
from spiritlens.units.controls import CONTROL_LABELS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STREAM_COLORS = {"hubert": 0, "pitch": 1, "style": 2}  # tab10 indices


def _bar(estimate) -> tuple[float, float]:
    mean = estimate.mean if math.isfinite(estimate.mean) else np.nan
    return mean, estimate.ci if math.isfinite(estimate.ci) else 0.0


def controls_figure(effects: Mapping[str, ControlEffect]) -> Figure:
    """Build the two-panel figure (module docstring). Raises ValueError for no controls."""
    if not effects:
        raise ValueError("nothing to plot: no control effects given")
    from matplotlib import colormaps

    colors = colormaps["tab10"].colors
    names = list(effects)
    x = np.arange(len(names))
    fig = new_figure(2.0 + 1.3 * len(names) * 2, 3.6, layout="constrained")
    left, right = fig.subplots(1, 2)
    means, errors = zip(*(_bar(effects[n].p_answer) for n in names))
    means = np.asarray(means, dtype=float)
    errors = np.asarray(errors, dtype=float)
    below = np.minimum(errors, np.clip(means, 0.0, None))  # a probability's interval drawn within [0, 1]
    above = np.minimum(errors, np.clip(1.0 - means, 0.0, None))
    left.errorbar(x, means, yerr=np.stack([below, above]), fmt="o", color="0.2", capsize=3,
                  label="mean p(answer) ± 95% CI, drawn within [0, 1]")
    if "original" in effects and math.isfinite(effects["original"].p_answer.mean):
        left.axhline(effects["original"].p_answer.mean, color="0.5", linestyle="--", linewidth=0.8,
                     label="original's mean")
    left.set_ylabel("p(answer), clean run", fontsize=8)
    left.set_title("Answer probability under each control", fontsize=9)
    width = 0.8 / len(STREAMS)
    for k, stream in enumerate(STREAMS):
        values, errs = zip(*(_bar(effects[n].stream_te.get(stream)) if stream in effects[n].stream_te
                             else (np.nan, 0.0) for n in names))
        right.bar(x + (k - 1) * width, values, width, yerr=errs, capsize=2, color=colors[STREAM_COLORS[stream]],
                  label=f"noise only the subject's {STREAM_LABELS[stream]} tokens")
    right.axhline(0.0, color="0.5", linewidth=0.6)
    right.set_ylabel("total effect (p clean − p noised)", fontsize=8)
    right.set_title("Total effect of one stream's subject tokens", fontsize=9)
    for ax in (left, right):
        ax.set_xticks(x)
        ax.set_xticklabels([CONTROL_LABELS.get(n, n) for n in names], rotation=30, ha="right", fontsize=7)
        ax.tick_params(labelsize=7)
    handles, labels = [], []
    for ax in (left, right):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.append(handle)
            labels.append(label)
    labels = [label + (f" ({ci_formula('prompts')})" if label.startswith("mean p") else "") for label in labels]
    fig.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False, fontsize=7)
    return fig


def plot_controls(effects: Mapping[str, ControlEffect], path: str | os.PathLike) -> Path:
    """Write :func:`controls_figure` as a PNG (atomically)."""
    return save_png(controls_figure(effects), path, {"Title": "spiritlens prosody controls"})


__all__ = ["controls_figure", "plot_controls"]
