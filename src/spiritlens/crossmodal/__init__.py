"""Cross-modal analyses: does the speech pathway use the text mechanism? (beyond the paper)

A fact is run twice, as text and as speech, with its positions paired by the alignment
(:class:`CrossModalFact`). Three analyses, one module each:

- :func:`cross_modal_patching` (``patching.py``): restore a noised run with the *other*
  modality's hidden state, per layer, against restoring its own;
- :func:`representation_geometry` (``geometry.py``): cosine, distance and norms of a word's text
  and speech states per layer, against mismatched words;
- :func:`speech_logit_lens` (``logit_lens.py``): ranks of the subject's text tokens when the
  model's head reads its speech positions.

:func:`summarize` averages them over facts; :func:`analyze_fact`, :func:`write_fact_outputs` and
:func:`run_experiment_dir` run them for one fact or an experiment directory; :func:`report_section`
gives the experiment report's section. Figures: ``spiritlens.figures.crossmodal``.
"""

from spiritlens.crossmodal.fact import CleanRun, CrossModalFact, Word
from spiritlens.crossmodal.geometry import GeometryResult, representation_geometry
from spiritlens.crossmodal.logit_lens import LogitLensResult, speech_logit_lens
from spiritlens.crossmodal.patching import (
    PATCH_DIRECTIONS,
    PATCH_MODES,
    PatchCurve,
    PatchingResult,
    cross_modal_patching,
)
from spiritlens.crossmodal.analyses import ANALYSES, analyze_fact
from spiritlens.crossmodal.summary import Band, CrossModalSummary, summarize

__all__ = [
    "ANALYSES", "PATCH_DIRECTIONS", "PATCH_MODES", "Band", "CleanRun", "CrossModalFact", "CrossModalSummary", "GeometryResult",
    "LogitLensResult", "PatchCurve", "PatchingResult", "Word", "analyze_fact", "cross_modal_patching",
    "representation_geometry", "speech_logit_lens",
    "summarize",
]
