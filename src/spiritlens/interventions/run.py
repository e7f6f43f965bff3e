"""One prompt's clean and corrupted runs, and interventions on the corrupted run, on one of three backends.

:class:`InterventionRun` holds what every analysis of one prompt shares: the clean run (through the
hooked model; its ``resid_post``, ``mlp_out`` and ``attn_out`` of every layer cached), the score
(:class:`~spiritlens.interventions.metric.AnswerScore`, possibly chosen from the clean run), the
corruption (:mod:`spiritlens.interventions.corruptions`) and, on first use, the corrupted run.
:meth:`InterventionRun.scores` runs interventions (:mod:`spiritlens.interventions.spec`) with

- ``"suffix"`` (:mod:`spiritlens.interventions.suffix`): the fast exact path, for what it supports;
- ``"reference"`` (:mod:`spiritlens.interventions.reference`): full forwards through the hooked model,
  for everything;
- ``"auto"`` (default): suffix where it supports the model and the interventions, else reference,
  with the reason logged (logger ``"spiritlens"``; a warning when it is the user's hooks).

:meth:`InterventionRun.gradients` is the gradient pass of attribution patching through the hooked
model (:mod:`spiritlens.interventions.gradients`); when it is asked for first, it is the run's one
corrupted forward.

Numbers: ROME's three runs (``experiments/causal_trace.py``): ``high_score`` the clean run's score,
``low_score`` the corrupted run's (under :meth:`Corruption.baseline`, ROME's replace quirk), and
``baseline`` the score of the corrupted run the interventions restore into (= ``low_score`` unless the
quirk applies). By causality an intervention that restores the clean run's own states only before the
corruption's first position changes nothing: without user hooks it is not run (its score is
``baseline``); with hooks every intervention runs (a hook need not be causal).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch

from spiritlens.interventions.corruptions import Corruption
from spiritlens.interventions.hooks import blocks_hooks, describe
from spiritlens.interventions.metric import AnswerScore
from spiritlens.interventions.reference import DEFAULT_MAX_ROWS, reference_scores
from spiritlens.interventions.spec import CLEAN, SITES, Intervention, Restore, as_intervention
from spiritlens.model import hook_names

logger = logging.getLogger("spiritlens")
BACKENDS = ("auto", "suffix", "reference")


def _site_cache(model, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
    """Logits ``[1, T, V]`` and every layer's ``SITES`` ``[T, d]`` of a clean forward of ``ids`` ``[1, T]``."""
    L = model.cfg.n_layers
    logits, cache = forward(model, ids, None, {hook_names.BY_SITE[site](l) for site in SITES for l in range(L)})
    return logits, {site: [cache[hook_names.BY_SITE[site](l)][0] for l in range(L)] for site in SITES}


def forward(model, ids: torch.Tensor, corruption: Corruption | None = None, names: set[str] = frozenset()):
    """``(logits, cache)`` of ``ids`` ``[1, T]`` through the hooked model, as ``corruption``'s rows
    (its ids and ``hook_embed`` hook; None: the clean run), caching the hook points ``names``."""
    hooks, rows = [], ids
    if corruption is not None:
        rows = corruption.rows(ids)
        embed = corruption.embed_hook()
        if embed is not None:
            hooks.append((hook_names.EMBED, embed))
    with torch.inference_mode():
        with model.hooks(fwd_hooks=hooks):
            return model.run_with_cache(rows, names_filter=lambda n: n in names)


class InterventionRun:
    """Clean and corrupted runs of one sequence, and interventions on the corrupted run (module docstring).

    Args:
        model: a :class:`~spiritlens.HookedSpiritLM` (TransformerLens API: ``cfg``, ``run_with_cache``,
            ``run_with_hooks``, ``hooks``).
        ids: the run's token ids ``[T]`` (a prompt, and a whole target's first K-1 pieces).
        corruption: what the corrupted rows change.
        metric: an :class:`AnswerScore`, or a function of the clean run's last-position probabilities
            ``[d_vocab]`` (float32) returning one (the answer chosen from the clean run).
        max_batch_cells: cap on interventions per batch of the suffix backend.
        max_rows: rows per forward of the reference backend without user hooks.

    Raises ValueError for a sequence longer than the model's context.
    """

    def __init__(self, model, ids: Sequence[int] | torch.Tensor, corruption: Corruption,
                 metric: "AnswerScore | Callable[[torch.Tensor], AnswerScore]", *,
                 max_batch_cells: int | None = None, max_rows: int = DEFAULT_MAX_ROWS):
        self.model = model
        ids = torch.as_tensor(ids).reshape(1, -1).to(model.device)
        if ids.shape[1] > model.cfg.n_ctx:
            raise ValueError(f"the run has {ids.shape[1]} tokens, more than the model's context of {model.cfg.n_ctx}")
        self.ids = ids
        self.corruption = corruption
        self.max_batch_cells = max_batch_cells
        self.max_rows = max_rows
        self.n_layers = model.cfg.n_layers
        logits, self.clean = _site_cache(model, ids)
        if not isinstance(metric, AnswerScore):
            metric = metric(torch.softmax(logits[0, -1].float(), dim=-1))
        self.metric = metric
        self.high_score = metric.score(logits)
        self.clean_logits = logits[0, -metric.n_scored:].float()  # [K, d_vocab]
        self._sources: dict[str, dict[str, list[torch.Tensor]]] = {}
        self._low: float | None = None
        self._baseline: float | None = None
        self._prefix: dict | None = None
        self._gradients = None
        self._suffix = None

    # ------------------------------------------------------------------ sources
    def add_source(self, name: str, ids: Sequence[int] | torch.Tensor | None = None, *,
                   activations: dict[str, Sequence[torch.Tensor]] | None = None) -> None:
        """A run restorations may copy from (:class:`Restore` ``source=name``): the clean run of ``ids``
        (computed here), or ``activations`` already computed (site -> L tensors ``[T', d]``)."""
        if name == CLEAN:
            raise ValueError(f"source name {CLEAN!r} is this run's own clean run")
        if activations is None:
            if ids is None:
                raise ValueError("add_source needs ids or activations")
            _, activations = _site_cache(self.model, torch.as_tensor(ids).reshape(1, -1).to(self.model.device))
        self._sources[name] = {site: list(values) for site, values in activations.items()}

    def source_values(self, restore: Restore, layer: int) -> torch.Tensor:
        """``[P, d]``: the values ``restore`` writes at ``layer`` (its source run at its source positions)."""
        run = self.clean if restore.source == CLEAN else self._sources.get(restore.source)
        if run is None:
            raise ValueError(f"unknown restore source {restore.source!r}; add it with add_source first")
        if restore.site not in run:
            raise ValueError(f"source {restore.source!r} has no {restore.site} states")
        return run[restore.site][layer][list(restore.source_positions)]

    # --------------------------------------------------------------- corrupted
    def _corrupted(self) -> None:
        """The corrupted run the interventions restore into: its score (``baseline``) and its states
        (``resid_pre`` of every layer and the last block's output, ``resid_mid``); taken from the
        gradient pass when that came first."""
        if self._prefix is not None:
            return
        if self._gradients is not None:
            g = self._gradients
            self._prefix, self._baseline = {"pre": g.pre, "mid": g.mid}, g.score
        else:
            self._baseline, self._prefix = self._corrupted_forward(self.corruption, keep=True)

    def _corrupted_forward(self, corruption: Corruption, keep: bool) -> tuple[float, dict | None]:
        L = self.n_layers
        wanted = ({hook_names.resid_pre(l) for l in range(L)} | {hook_names.resid_mid(l) for l in range(L)}
                  | {hook_names.resid_post(L - 1)}) if keep else set()
        logits, cache = forward(self.model, self.ids, corruption, wanted)
        score = self.metric.score(logits)
        if not keep:
            return score, None
        return score, {"pre": [cache[hook_names.resid_pre(l)] for l in range(L)] + [cache[hook_names.resid_post(L - 1)]],
                       "mid": [cache[hook_names.resid_mid(l)] for l in range(L)]}

    @property
    def low_score(self) -> float:
        """The corrupted run's score (ROME's ``low_score``), under :meth:`Corruption.baseline`."""
        if self._low is None:
            base = self.corruption.baseline()
            self._low = self.baseline if base == self.corruption else self._corrupted_forward(base, keep=False)[0]
        return self._low

    @property
    def baseline(self) -> float:
        """The score of the corrupted run that interventions restore into (``low_score`` unless ROME's quirk)."""
        self._corrupted()
        return self._baseline

    @property
    def corrupted_states(self) -> dict:
        """``{"pre": L + 1 tensors [S, T, d], "mid": L tensors}`` of the corrupted run interventions restore into."""
        self._corrupted()
        return self._prefix

    def gradients(self, *, keep_graph: bool = False):
        """The gradient pass (:class:`~spiritlens.interventions.gradients.HookedGradients`), computed on
        first use (again once with ``keep_graph`` when GradDrop asks for it)."""
        from spiritlens.interventions.gradients import HookedGradients

        if self._gradients is None or (keep_graph and self._gradients._live is None):
            self._gradients = HookedGradients(self, keep_graph=keep_graph)
        return self._gradients

    # ------------------------------------------------------------------ scores
    def scores(self, interventions: Sequence["Intervention | Restore"], *, backend: str = "auto",
               done: Callable[[Sequence[int]], None] | None = None) -> np.ndarray:
        """Scores ``[N]`` (float64) of the corrupted run with each intervention applied.

        ``backend``: ``"auto"``, ``"suffix"`` (ValueError naming why when it cannot) or ``"reference"``.
        Identical interventions are run once. ``done(indices)`` is called as interventions finish.
        """
        from spiritlens.interventions.suffix import suffix_scores, unsupported

        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        items = [as_intervention(i) for i in interventions]
        for item in items:
            self._check(item)
        unique: dict[Intervention, int] = {}
        index = [unique.setdefault(item, len(unique)) for item in items]
        distinct = list(unique)

        def finished(which: Sequence[int]) -> None:
            if done is not None and which:
                chosen = set(which)
                done([k for k, u in enumerate(index) if u in chosen])

        hooked = blocks_hooks(self.model)
        reason = unsupported(self, distinct, hooked=hooked) if backend != "reference" else "asked for"
        if backend == "suffix" and reason:
            raise ValueError(f"the suffix backend cannot run these interventions: {reason}")
        if reason:
            if hooked:
                logger.warning("the model has hooks attached (%s): interventions run as full forwards with them, "
                               "slower than the suffix engine", describe(hooked))
            else:
                logger.info("interventions run on the reference backend: %s", reason)
            values = self._reference(distinct, hooked, finished)
        else:
            values = suffix_scores(self, distinct, done=finished)
        return values[index]

    def _reference(self, distinct: list[Intervention], hooked: list[str], finished) -> np.ndarray:
        values = np.empty(len(distinct))
        todo = list(range(len(distinct)))
        if not hooked:  # by causality these restore nothing
            first = self.corruption.first_position
            noop = [k for k in todo if all(r.source == CLEAN and max(r.positions) < first for r in distinct[k])]
            values[noop] = self.baseline
            todo = [k for k in todo if k not in set(noop)]
            finished(noop)
        if todo:
            values[todo] = reference_scores(self, [distinct[k] for k in todo], batch=not hooked, max_rows=self.max_rows,
                                            done=lambda chunk: finished([todo[c] for c in chunk]))
        return values

    def _check(self, intervention: Intervention) -> None:
        T, L = self.ids.shape[1], self.n_layers
        for restore in intervention:
            if max(restore.layers) >= L:
                raise ValueError(f"restore {restore.describe()}: layer {max(restore.layers)} is outside 0..{L - 1}")
            if max(restore.positions) >= T:
                raise ValueError(f"restore {restore.describe()}: position {max(restore.positions)} is outside "
                                 f"the run's 0..{T - 1}")
            if restore.source != CLEAN:
                source = self._sources.get(restore.source)
                if source is None:
                    raise ValueError(f"unknown restore source {restore.source!r}; add it with add_source first")
                length = source[restore.site][0].shape[0]
                if max(restore.source_positions) >= length:
                    raise ValueError(f"restore {restore.describe()}: source position {max(restore.source_positions)} "
                                     f"is outside {restore.source!r}'s 0..{length - 1}")
