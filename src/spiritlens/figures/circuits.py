"""Interactive per-token view of one trace with circuitsvis (the ``plots`` extra).

Each row label (subject rows marked ``*``) is coloured by its indirect effect
``IE[r, l] = scores[r, l] - low_score`` (an IE within the result's numerical floor, float32 rounding,
shown as 0); buttons switch between the maximum over layers and each single layer. The colour
bounds are given to circuitsvis (at least :data:`MIN_BOUND`): left to itself it rounds bounds
under 5e-7 to 0 and divides by them, and an all-zero trace showed empty boxes. Such a trace shows
its tokens on white and says "no effect" above them. The HTML is self-contained (circuitsvis's
bundled JavaScript), so it opens offline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from spiritlens.figures.escape import html_text
from spiritlens._io import write_atomic
from spiritlens.aggregates.aie import describe, parse_result, row_effects
from spiritlens.figures._render import PLOTS_EXTRA_HINT
from spiritlens.figures.heatmap import row_labels

MIN_BOUND = 1e-5  # smallest colour bound (p(answer)); circuitsvis keeps 6 decimals of a bound


def indirect_effects(result: Mapping) -> tuple[np.ndarray, list[str]]:
    """Values [R, L+1] (max over layers, then layers 0..L-1) of ``scores - low_score``, and their names.
    Cells a ``cells=`` trace left untraced count as no effect (0)."""
    parsed = parse_result(result, allow_untraced=True)
    effects = np.nan_to_num(row_effects(parsed, range(parsed.scores.shape[0])), nan=0.0)  # [R, L]
    values = np.concatenate([effects.max(axis=1, keepdims=True), effects], axis=1)
    names = ["max over layers"] + [f"layer {layer}" for layer in range(effects.shape[1])]
    return values, names


def trace_tokens_html(result: Mapping) -> str:
    """A standalone HTML page with the circuitsvis ``colored_tokens_multi`` view of one result."""
    try:
        from circuitsvis.utils.render import render  # ColoredTokensMulti, with bounds its wrapper cannot pass
    except ImportError as error:
        raise ImportError(f"the circuitsvis view needs circuitsvis, which is missing: {PLOTS_EXTRA_HINT}") from error
    values, names = indirect_effects(result)
    # circuitsvis puts each token into the page as HTML (innerHTML): escaped, a "<s>" label shows as "<s>"
    tokens = [html_text(label) for label in row_labels(result)]
    rendered = render("ColoredTokensMulti", tokens=tokens, values=values.tolist(), labels=names,
                      positiveBounds=np.maximum(values.max(axis=0), MIN_BOUND).tolist(),
                      negativeBounds=np.minimum(values.min(axis=0), -MIN_BOUND).tolist())
    title = html_text(f"spiritlens trace {describe(result)} ({result['kind']}): indirect effect per row")
    note = "" if values.any() else "<p>No effect: every indirect effect is within float32 rounding of 0.</p>\n"
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
        f"<body><h3>{title}</h3>\n{note}{rendered.local_src}\n</body></html>\n"
    )


def write_trace_tokens_html(result: Mapping, path: str | os.PathLike) -> Path:
    """Write ``trace_tokens_html(result)`` to ``path`` atomically and return the path."""
    return write_atomic(path, trace_tokens_html(result))
