"""Stage 7: figures. matplotlib heatmaps and grids, a circuitsvis view (the ``plots`` extra).

Importing this package needs neither matplotlib nor circuitsvis; each plotting call imports its
library and, if it is missing, says ``pip install 'spiritlens[plots]'``.
"""

from spiritlens.figures.alignment import plot_alignment, plot_speech_prompt
from spiritlens.figures.circuits import trace_tokens_html, write_trace_tokens_html
from spiritlens.figures.grid import aie_grid_figure, aie_lines_figure, plot_aie_grid, plot_aie_lines
from spiritlens.figures.heatmap import plot_trace_heatmap, row_labels, trace_heatmap_figure

__all__ = [
    "aie_grid_figure",
    "aie_lines_figure",
    "plot_aie_grid",
    "plot_aie_lines",
    "plot_alignment",
    "plot_speech_prompt",
    "plot_trace_heatmap",
    "row_labels",
    "trace_heatmap_figure",
    "trace_tokens_html",
    "write_trace_tokens_html",
]
