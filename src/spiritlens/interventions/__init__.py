"""The intervention core: every analysis says what it does as data, and one module does it.

- :mod:`~spiritlens.interventions.spec`: :class:`Restore` (site, layers, positions, source run) and
  interventions (restores applied together);
- :mod:`~spiritlens.interventions.corruptions`: what the corrupted run changes (ROME's embedding noise,
  token substitution, mean-embedding ablation), registered by name;
- :mod:`~spiritlens.interventions.metric`: :class:`AnswerScore`, the one softmax score;
- :mod:`~spiritlens.interventions.run`: :class:`InterventionRun`, one prompt's clean and corrupted
  runs and ``scores(interventions, backend=...)`` on the reference backend (full forwards through the
  hooked model), the suffix backend (the fast exact path) or ``"auto"``; ``gradients()`` for
  attribution patching, through the hooked model;
- :mod:`~spiritlens.interventions.hooks`: which hooks a user attached (TransformerLens and PyTorch).

Causal tracing (:mod:`spiritlens.traces`), attribution patching, cross-modal patching
(:mod:`spiritlens.crossmodal.patching`) and sequence probability are specifications over it.
"""

from spiritlens.interventions.corruptions import CORRUPTIONS, Corruption, EmbeddingNoise, MeanEmbedding, \
    TokenSubstitution
from spiritlens.interventions.hooks import user_hooks
from spiritlens.interventions.metric import AnswerScore
from spiritlens.interventions.run import BACKENDS, InterventionRun
from spiritlens.interventions.spec import CLEAN, KIND_SITE, SITES, Restore

__all__ = ["AnswerScore", "BACKENDS", "CLEAN", "CORRUPTIONS", "Corruption", "EmbeddingNoise", "InterventionRun",
           "KIND_SITE", "MeanEmbedding", "Restore", "SITES", "TokenSubstitution", "user_hooks"]
