"""Run the three cross-modal analyses (patching, geometry, logit lens) for one fact and summarise result files."""

from __future__ import annotations

from typing import Mapping, Sequence
from spiritlens.crossmodal.fact import CrossModalFact, ResultFile
from spiritlens.crossmodal.geometry import GeometryResult, representation_geometry
from spiritlens.crossmodal.logit_lens import LogitLensResult, speech_logit_lens
from spiritlens.crossmodal.patching import (
    DEFAULT_MAX_BATCH_ROWS,
    PATCH_DIRECTIONS,
    PATCH_MODES,
    PatchingResult,
    check_choices,
    cross_modal_patching,
)
from spiritlens.crossmodal.summary import CrossModalSummary, summarize


ANALYSES = ("patching", "geometry", "logit_lens")


RESULT_TYPES: dict[str, type[ResultFile]] = {"patching": PatchingResult, "geometry": GeometryResult,
                                             "logit_lens": LogitLensResult}


def analyze_fact(model, fact: CrossModalFact, *, analyses: Sequence[str] = ANALYSES, noise: float | str = "3s",
                 sigma: float | Mapping[str, float] | None = None, samples: int = 10, seed: int = 1,
                 modes: Sequence[str] = PATCH_MODES, directions: Sequence[str] = PATCH_DIRECTIONS,
                 target: int | Mapping[str, int | None] | None = None, max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS) -> dict[str, ResultFile]:
    """The chosen analyses of one fact (``"patching"``, ``"geometry"``, ``"logit_lens"``), sharing
    its clean runs. Patching arguments as :func:`~spiritlens.crossmodal.patching.cross_modal_patching`."""
    analyses = check_choices("analyses", analyses, ANALYSES)
    results: dict[str, ResultFile] = {}
    for analysis in analyses:
        if analysis == "patching":
            results[analysis] = cross_modal_patching(model, fact, noise=noise, sigma=sigma, samples=samples, seed=seed,
                                                     modes=modes, directions=directions, target=target,
                                                     max_batch_rows=max_batch_rows)
        elif analysis == "geometry":
            results[analysis] = representation_geometry(model, fact)
        else:
            results[analysis] = speech_logit_lens(model, fact)
    return results


def summarize_results(results: Mapping[str, Sequence[ResultFile]]) -> CrossModalSummary:
    """:func:`~spiritlens.crossmodal.summary.summarize` of results grouped by analysis name."""
    return summarize(results.get("patching", ()), results.get("geometry", ()), results.get("logit_lens", ()))
