"""Interactive per-token view of one trace with circuitsvis (the ``plots`` extra).

Each row label (subject rows marked ``*``) is coloured by its indirect effect
``IE[r, l] = scores[r, l] - low_score``; buttons switch between the maximum over layers and
each single layer. The HTML is self-contained (circuitsvis's bundled JavaScript), so it opens offline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from spiritlens.figures.escape import html_text
from spiritlens._io import write_atomic
from spiritlens.aggregates.aie import parse_result, describe
from spiritlens.figures._render import PLOTS_EXTRA_HINT
from spiritlens.figures.heatmap import row_labels


def indirect_effects(result: Mapping) -> tuple[np.ndarray, list[str]]:
    """Values [R, L+1] (max over layers, then layers 0..L-1) of ``scores - low_score``, and their names.
    Cells a ``cells=`` trace left untraced count as no effect (0)."""
    parsed = parse_result(result, allow_untraced=True)
    effects = np.nan_to_num(parsed.scores - parsed.low, nan=0.0)  # [R, L]
    values = np.concatenate([effects.max(axis=1, keepdims=True), effects], axis=1)
    names = ["max over layers"] + [f"layer {layer}" for layer in range(effects.shape[1])]
    return values, names


def trace_tokens_html(result: Mapping) -> str:
    """A standalone HTML page with the circuitsvis ``colored_tokens_multi`` view of one result."""
    try:
        from circuitsvis.tokens import colored_tokens_multi
    except ImportError as error:
        raise ImportError(f"the circuitsvis view needs circuitsvis, which is missing: {PLOTS_EXTRA_HINT}") from error
    import torch

    values, names = indirect_effects(result)
    # circuitsvis puts each token into the page as HTML (innerHTML): escaped, a "<s>" label shows as "<s>"
    tokens = [html_text(label) for label in row_labels(result)]
    rendered = colored_tokens_multi(tokens=tokens, values=torch.from_numpy(values), labels=names)
    title = html_text(f"spiritlens trace {describe(result)} ({result['kind']}): indirect effect per row")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
        f"<body><h3>{title}</h3>\n{rendered.local_src}\n</body></html>\n"
    )


def write_trace_tokens_html(result: Mapping, path: str | os.PathLike) -> Path:
    """Write ``trace_tokens_html(result)`` to ``path`` atomically and return the path."""
    return write_atomic(path, trace_tokens_html(result))
