"""Causal tracing (ROME's, Meng et al. 2022, ``experiments/causal_trace.py``) as specifications over
the intervention core (:mod:`spiritlens.interventions`).

For one prompt a :class:`Tracer` holds an :class:`~spiritlens.interventions.run.InterventionRun`:
the clean run (answer ``a`` = the output modality's top-1 or a given target, ``high_score``), the
corrupted run (``samples`` rows, ROME's noise at ``hook_embed`` on the subject's positions,
``low_score``), shared by every kind. A table of kind ``k`` is rows x layers of
:class:`~spiritlens.interventions.spec.Restore` s: cell (row, layer) restores the row's positions at
``blocks.l.hook_resid_post`` (hidden) or at ``hook_mlp_out`` / ``hook_attn_out`` of every layer of
the window (mlp / attn); ``scores[row, layer]`` is the run's score with it
(:class:`~spiritlens.interventions.metric.AnswerScore`: the mean over the samples of the softmax
probability of ``a`` at the last position).

**Whole-target score** (``target_rule="sequence"``, :mod:`spiritlens.traces.answer`): for prompt
ids P (length T0) and target pieces t_1..t_K (K >= 2) every run traces the teacher-forced
sequence ``P + t_1..t_{K-1}`` (noise on the subject's embeddings as usual), and a run's score is
the mean over its S rows of ``prod_k p(t_k | position T0-1+k-1)``; the rows of the table (what is
restored) are the prompt's positions 0..T0-1 (or its groups), never the appended pieces.

The core picks the backend: the suffix engine (restored runs over the changed suffix only; cells
before the first corrupted position and the hidden kind's last layer known without a run) unless
hooks are attached, where every cell is a full forward through the hooked model (ROME's loop).
The method registry (:mod:`spiritlens.traces.methods`) says how cells are computed: ``exact``
(here) or attribution patching's estimates (:mod:`spiritlens.traces.attribution`).
"""

from __future__ import annotations

import inspect

from typing import Any, Callable, Collection, Sequence

import numpy as np
import torch

from spiritlens.checkpoints.schema import check_samples
from spiritlens.interventions import AnswerScore, InterventionRun, KIND_SITE, Restore
from spiritlens.traces.answer import AnswerRule, resolve_answer
from spiritlens.traces.noise import NoiseSpec, embedding_noise, noise_scale, parse_noise, subject_sigma
from spiritlens.traces.streams import STREAM_ROW_MODE, check_streams, stream_noise, stream_rows
from spiritlens.tokens.trace_prompt import Row
from spiritlens.traces.result import TraceResult
from spiritlens.traces.expected import warn_if_unexpected
from spiritlens.progress import shows_progress
from spiritlens.traces.methods import METHODS, method as trace_method
from spiritlens.tokens.trace_prompt import TracePrompt, prepare_prompt
from spiritlens.traces.window import check_window, layer_window
from spiritlens.traces.attribution import (check_cells, check_verify_rank, check_verify_top, graddrop_magnitudes,
                                           normalise_cells, top_cells, verification_record)

from spiritlens.terms import KINDS



def resolve_target(model, target: "AnswerRule | int | str | None") -> "AnswerRule | int | str | None":
    """Check a target before the runs: an :class:`~spiritlens.traces.answer.AnswerRule` passes, an
    id must be a token of the vocabulary, a string must not be blank (it is tokenised after the
    prompt by :func:`~spiritlens.traces.answer.resolve_answer`), None means the modality's top-1."""
    if target is None or isinstance(target, AnswerRule):
        return target
    if isinstance(target, str):
        if not target.strip():
            raise ValueError(f"target {target!r} tokenises to nothing")
        return target
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise ValueError(f"target must be a token id or a string, got {type(target).__name__}")
    model.check_token_ids([int(target)], where="target id")
    return int(target)


class Tracer:
    """One prompt's clean and corrupted runs (an :class:`~spiritlens.interventions.run.InterventionRun`,
    ``tracer.run``), then tables of restored cells for any kind.

    Build once per prompt; :meth:`scores` for each kind reuses the runs. ``ids`` ``[1, T0 + K - 1]`` is
    the traced sequence: the prompt's T0 ids, followed by the first K - 1 pieces of a
    ``target_rule="sequence"`` target (K = 1 otherwise); ``answer_ids`` are the K ids scored at
    positions T0-1 .. T0+K-2 (module docstring). ``corruption``: another corruption than ROME's noise
    (:mod:`spiritlens.interventions.corruptions`); ``noise``, ``seed``, ``sigma`` and ``replace`` are then unused.
    """

    def __init__(self, model, prompt: TracePrompt, *, samples: int = 10, noise: NoiseSpec | float | str = "3s",
                 seed: int = 1, sigma: float | None = None, replace: bool = False,
                 low_score_follows_replace: bool = False, target: int | str | None = None,
                 max_batch_cells: int | None = None, corruption=None):
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
        check_samples(samples)
        if max_batch_cells is not None and max_batch_cells < 1:
            raise ValueError(f"max_batch_cells must be >= 1, got {max_batch_cells}")
        self.model = model
        self.prompt = prompt
        self.spec = noise if isinstance(noise, NoiseSpec) else parse_noise(noise)
        if replace and self.spec.kind == "uniform":
            raise ValueError("replace mode takes Gaussian noise, not a uniform rule")
        self.sigma = sigma
        self.seed = seed
        self.replace = replace
        self.low_score_follows_replace = low_score_follows_replace
        self.n_layers = model.cfg.n_layers
        target = resolve_target(model, target)
        rule = target if isinstance(target, AnswerRule) else resolve_answer(model, prompt, target)
        self.n_prompt = len(prompt.input_ids)  # T0
        forced = list(rule.target_ids[:-1]) if rule.rule == "target_sequence" else []
        ids = list(prompt.input_ids) + forced
        if len(ids) > model.cfg.n_ctx:
            extra = f" (with {len(forced)} target pieces)" if forced else ""
            raise ValueError(f"prompt has {len(ids)} tokens{extra}, more than the model's context of {model.cfg.n_ctx}")
        if corruption is None:
            self.scale = noise_scale(self.spec, sigma=sigma, model=model, modality=prompt.modality)
            corruption = embedding_noise(self.spec, self.scale, samples=samples, seed=seed,
                                         subject_range=prompt.subject_range, d_model=model.cfg.d_model,
                                         replace=replace, low_score_follows_replace=low_score_follows_replace)
        else:
            self.scale = float(getattr(corruption, "scale", 0.0))
        self.corruption = corruption
        self.samples = corruption.samples
        self.answer_rule = rule
        sequence = rule.rule == "target_sequence"

        def metric(last_probs: torch.Tensor) -> AnswerScore:
            # The output modality's top-1 (= greedy generation's first token) or the given target.
            self.answer_id = rule.choose(model, last_probs)
            return AnswerScore(tuple(rule.target_ids) if sequence else (self.answer_id,))

        self.run = InterventionRun(model, ids, corruption, metric, max_batch_cells=max_batch_cells)
        self.ids = self.run.ids
        self.answer_ids = self.run.metric.answer_ids
        self.high_score = self.run.high_score
        self.prompt.extra.update(rule.record())  # recorded in every result of this prompt

    @property
    def low_score(self) -> float:
        return self.run.low_score

    def clean_states(self, kind: str) -> list[torch.Tensor]:
        """The clean run's ``[T, d]`` states of ``kind``'s site at every layer."""
        return self.run.clean[KIND_SITE[kind]]

    def cell_layers(self, kind: str, layer: int, window: int) -> tuple[int, ...]:
        """The layers a cell at ``layer`` restores: itself (hidden) or ROME's window (mlp, attn)."""
        return (layer,) if kind == "hidden" else tuple(layer_window(layer, window, self.n_layers))

    def check_rows(self, rows: Sequence[Row]) -> None:
        T = self.n_prompt  # rows restore prompt positions only
        for row in rows:
            if not row.positions or not all(0 <= p < T for p in row.positions):
                raise ValueError(f"row {row.label!r} has positions outside the prompt's 0..{T - 1}: "
                                 f"{row.positions}")

    def scores(self, kind: str, rows: Sequence[Row], *, window: int | None = None,
               progress: Callable | None = None, cells: Collection[tuple[int, int]] | None = None) -> np.ndarray:
        """``[R, L]`` restored scores for ``rows`` (each a group of the prompt's positions 0..T0-1).

        ``progress(1)`` is called once per layer when all of its cells are done. ``cells``: only
        these ``(row, layer)`` cells are traced (e.g. a screen's top cells,
        :mod:`spiritlens.traces.attribution`); every other cell is NaN. The core runs the cells on
        the suffix engine, or, with hooks attached (an ablation, a spliced SAE, a plain PyTorch hook),
        as full forwards in which they act (exact, slower, logged).
        Raises ValueError for an unknown kind, a bad window, positions outside the prompt or cells
        outside the table.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        window = check_window(window, self.n_layers)
        L = self.n_layers
        self.check_rows(rows)
        wanted = None if cells is None else check_cells(cells, len(rows), L)
        table = [(i, layer) for layer in range(L) for i in range(len(rows))
                 if wanted is None or (i, layer) in wanted]
        restores = [Restore(KIND_SITE[kind], self.cell_layers(kind, layer, window), tuple(sorted(set(rows[i].positions))))
                    for i, layer in table]
        pending = {layer: 0 for layer in range(L)}
        for _, layer in table:
            pending[layer] += 1
        if progress is not None:
            for layer in range(L):
                if pending[layer] == 0:
                    progress(1)

        def done(indices: Sequence[int]) -> None:
            for k in indices:
                layer = table[k][1]
                pending[layer] -= 1
                if pending[layer] == 0 and progress is not None:
                    progress(1)

        values = self.run.scores(restores, done=done)
        scores = np.full((len(rows), L), np.nan)
        for (i, layer), value in zip(table, values):
            scores[i, layer] = value
        return scores

    def result(self, kind: str, rows: Sequence[Row] | None = None, *, window: int | None = None,
               subject_rows: tuple[int, int] | None = None, ignored_rows: Sequence[int] = (),
               attribute: str | None = None, progress: Callable | None = None, name: str = "",
               method: str = "exact", cells: Collection[tuple[int, int]] | None = None) -> TraceResult:
        """Trace one kind into a :class:`TraceResult` (rows default to one per position).

        ``method``: a registered method (:mod:`spiritlens.traces.methods`: ``"exact"`` restored runs,
        ``"attribution"`` or ``"attribution_qk"`` first-order estimates); ``cells`` (exact only): the
        cells traced, the others NaN (:meth:`scores`)."""
        prompt = self.prompt
        if rows is None:
            rows = [Row(t, [i]) for i, t in enumerate(prompt.tokens)]
            subject_rows = prompt.subject_range
        window = check_window(window, self.n_layers)
        extra = dict(self.prompt.extra)
        chosen = trace_method(method)
        if cells is not None and chosen.estimate:
            raise ValueError(f"cells restricts the exact method's restored runs; method {method!r} estimates "
                             "every cell at once")
        scores = chosen.function()(self, kind, rows, window=window, cells=cells, progress=progress)
        if cells is not None:
            extra["cells"] = sorted([int(r), int(c)] for r, c in cells)
        extra.update(corruption=self.corruption.name)
        answer = self.model.tokenizer.decode(list(self.answer_ids))  # a whole target: all its pieces
        return TraceResult(
            input_ids=list(prompt.input_ids), tokens=list(prompt.tokens), subject_range=prompt.subject_range,
            answer_id=self.answer_id, answer=answer, high_score=self.high_score, low_score=self.low_score,
            scores=scores, kind=kind, window=window, noise=self.scale, noise_rule=self.spec.text,
            sigma=self.sigma, samples=self.samples, seed=self.seed, replace=self.replace,
            low_score_follows_replace=self.low_score_follows_replace, rows=list(rows),
            subject_rows=subject_rows, ignored_rows=list(ignored_rows),
            correct_prediction=None if attribute is None else answer.strip() == attribute.strip(),
            modality=prompt.modality, prompt=prompt.prompt, subject=prompt.subject, name=name,
            extra=extra, method=method,
        )


def exact_scores(tracer: Tracer, kind: str, rows: Sequence[Row], *, window: int, cells=None,
                 progress: Callable | None = None) -> np.ndarray:
    """The ``exact`` method (:mod:`spiritlens.traces.methods`): restored runs, :meth:`Tracer.scores`."""
    return tracer.scores(kind, rows, window=window, progress=progress, cells=cells)


ROW_MODES = ("auto", "positions", "groups", "mean")


def resolve_row_mode(row_mode: str, has_groups: bool) -> str:
    """``"auto"`` (the default everywhere): ``"groups"`` for a prompt with position groups (a
    spoken prompt: the speech tokens of each text token restored together), else ``"positions"``.
    ``"streams"`` (a spoken Expressive prompt): the subject's groups split by stream
    (:mod:`spiritlens.traces.streams`)."""
    if row_mode not in ROW_MODES + (STREAM_ROW_MODE,):
        raise ValueError(f"unknown row_mode {row_mode!r}; use one of {', '.join(ROW_MODES + (STREAM_ROW_MODE,))}")
    if row_mode == "auto":
        return "groups" if has_groups else "positions"
    if row_mode != "positions" and not has_groups:
        raise ValueError(f"row_mode {row_mode!r} needs a prompt with position groups (a speech prompt)")
    return row_mode


def trace_kinds(model, prompt: Any, subject: str | None = None, *, kinds: Sequence[str] = KINDS,
                samples: int = 10, noise: float | str = "3s", seed: int = 1, window: int | None = None,
                sigma: float | None = None, subjects: Sequence[str] | None = None,
                replace: bool = False, low_score_follows_replace: bool = False,
                target: int | str | None = None, target_rule: str | None = None,
                subject_range: tuple[int, int] | None = None,
                occurrence: str = "unique", row_mode: str = "auto", attribute: str | None = None,
                max_batch_cells: int | None = None, progress: bool | None = None, name: str = "",
                method: str = "exact", cells: Any = None, verify_top: int | None = None,
                verify_rank: str = "estimate", noise_streams: Sequence[str] | None = None) -> dict[str, TraceResult]:
    """Trace several kinds of one prompt, sharing its clean and corrupted runs; see :func:`trace`."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if row_mode not in ROW_MODES + (STREAM_ROW_MODE,):
        raise ValueError(f"unknown row_mode {row_mode!r}; use one of {', '.join(ROW_MODES + (STREAM_ROW_MODE,))}")
    if noise_streams is not None:
        noise_streams = check_streams(noise_streams)
    trace_method(method)
    check_verify_rank(verify_rank)
    if verify_top is not None:
        check_verify_top(verify_top)
        if not trace_method(method).estimate:
            screens = [name for name, m in METHODS.items() if m.estimate]
            raise ValueError(f"verify_top checks a screen: give method={' or '.join(map(repr, screens))}")
    cells = normalise_cells(cells, kinds)
    if (cells is not None or verify_top is not None) and row_mode == "mean":
        raise ValueError("cells and verify_top index the traced rows; row_mode='mean' averages them afterwards "
                         "(use 'positions' or 'groups')")
    window = check_window(window, model.cfg.n_layers)
    prepared = prepare_prompt(model, prompt, subject, subject_range=subject_range, occurrence=occurrence)
    answer = resolve_answer(model, prepared, resolve_target(model, target), target_rule)
    spec = parse_noise(noise)
    if spec.needs_sigma and sigma is None and subjects is not None:
        sigma = subject_sigma(model, subjects, modality=prepared.modality)
    row_mode = resolve_row_mode(row_mode, prepared.groups is not None)
    split = stream_rows(model, prepared) if row_mode == STREAM_ROW_MODE else None
    corruption = None
    if noise_streams is not None:  # the subject's positions of these streams only (spiritlens.traces.streams)
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
        scale = noise_scale(spec, sigma=sigma, model=model, modality=prepared.modality)
        corruption = stream_noise(model, prepared, noise_streams, spec, scale, samples=samples, seed=seed,
                                  replace=replace, low_score_follows_replace=low_score_follows_replace)
    tracer = Tracer(model, prepared, samples=samples, noise=spec, seed=seed, sigma=sigma, replace=replace,
                    low_score_follows_replace=low_score_follows_replace, target=answer,
                    max_batch_cells=max_batch_cells, corruption=corruption)
    bar = None
    if shows_progress(progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(kinds) * model.cfg.n_layers, desc="tracing", unit="layer")
    results = {}
    try:
        for kind in kinds:
            update = bar.update if bar is not None else None
            chosen = None if cells is None else cells[kind]
            if row_mode == "groups":
                result = tracer.result(kind, prepared.groups, window=window,
                                       subject_rows=prepared.group_subject_rows,
                                       ignored_rows=prepared.group_ignored_rows, attribute=attribute,
                                       progress=update, name=name, method=method, cells=chosen)
            elif split is not None:
                result = tracer.result(kind, split.rows, window=window, subject_rows=split.subject_rows,
                                       ignored_rows=split.ignored_rows, attribute=attribute, progress=update,
                                       name=name, method=method, cells=chosen)
                result.extra.update(split.record())
            else:
                result = tracer.result(kind, window=window, attribute=attribute, progress=update, name=name,
                                       method=method, cells=chosen)
                if row_mode == "mean":
                    result = result.grouped(prepared.groups, subject_rows=prepared.group_subject_rows,
                                            ignored_rows=prepared.group_ignored_rows)
            if verify_top is not None:  # the screen's top cells, traced exactly
                magnitudes = None if verify_rank == "estimate" else graddrop_magnitudes(tracer, kind, result.rows,
                                                                                        window=window)
                top = top_cells(result, verify_top, magnitudes)
                exact = tracer.scores(kind, result.rows, window=window, cells=top)
                result.extra["verification"] = verification_record(result, exact, top, verify_rank)
            if corruption is not None:
                result.extra.update(noise_streams=list(noise_streams), noised_positions=list(corruption.positions))
            results[kind] = result
    finally:
        if bar is not None:
            bar.close()
    if attribute is None and target is None:  # a toy's known fact answered otherwise: say so
        warn_if_unexpected(model, prepared, next(iter(results.values())).answer)
    return results


def trace(model, prompt: Any, subject: str | None = None, *, kind: str = "hidden", samples: int = 10,
          noise: float | str = "3s", seed: int = 1, window: int | None = None, **kwargs) -> TraceResult:
    """Causal trace of one prompt for one kind (``"hidden"``, ``"mlp"`` or ``"attn"``).

    Args:
        model: a :class:`~spiritlens.HookedSpiritLM`.
        prompt: a string, ``(modality, content)`` pairs, token ids ``[T]`` (with
            ``subject_range``), a :class:`TracePrompt`, or a speech prompt object.
        subject: the subject's text in the prompt; located by character offsets.
        samples: corrupted rows S. noise: absolute float, ``"3s"`` (3 sigma; give ``sigma=`` or
            ``subjects=``), ``"3v"`` (3 x embedding std) or ``"u0.1"``. seed: numpy RandomState seed.
        window: layers restored together for mlp/attn (ignored for hidden); default
            :func:`default_window`: ROME's and the paper's 10 of SpiritLM's 32 layers, scaled to the
            model's depth (10 for SpiritLM itself, 3 for an 8-layer toy).
        **kwargs: ``sigma``, ``subjects``, ``replace``, ``low_score_follows_replace``;
            ``target`` (default None: the clean top-1 among the tokens the output modality allows,
            i.e. greedy generation's first token; an id; or a string tokenised after the prompt)
            and ``target_rule`` (``"first_token"`` or ``"sequence"``: the whole target's
            teacher-forced probability is traced, module docstring; required for a multi-token
            target string), see :mod:`spiritlens.traces.answer`; ``subject_range``,
            ``occurrence``; ``row_mode`` (default ``"auto"``: text-token groups for a spoken prompt
            with groups, one row per position otherwise; or ``"positions"``, ``"groups"``,
            ``"mean"``; ``"streams"`` for a spoken Expressive prompt: the subject's rows split into its
            HuBERT, pitch and style positions, :mod:`spiritlens.traces.streams`); ``noise_streams``
            (a spoken Expressive prompt; default None, the subject's range ``[b, e)``): noise only the
            subject's positions of these streams, e.g. ``("pitch",)``, recorded as ``noise_streams``
            and ``noised_positions``; ``attribute`` (sets ``correct_prediction``), ``max_batch_cells``,
            ``progress`` (a bar per layer: True, False, or None: only on a terminal, :mod:`spiritlens.progress`), ``name``; ``method`` (``"exact"``, the default; ``"attribution"``: AtP's
            first-order estimate of every cell from one backward pass; ``"attribution_qk"``: with
            AtP*'s QK fix; :mod:`spiritlens.traces.attribution`), recorded in the result;
            ``cells`` (exact method): ``(row, layer)`` pairs, or a dict kind -> pairs, to trace only
            those cells, every other cell NaN; ``verify_top`` (attribution methods): trace the
            screen's top-K cells exactly and record the comparison in ``extra["verification"]``;
            ``verify_rank``: ``"estimate"`` (top estimated indirect effects, the default) or
            ``"graddrop"`` (top GradDrop magnitudes, :func:`~spiritlens.traces.attribution.graddrop_magnitudes`).

    Returns:
        TraceResult with ``scores`` ``[rows, n_layers]``, ``low_score``, ``high_score``, ``answer``
        and ``answer_rule`` (how the answer was chosen).

    Raises:
        ValueError for bad input (one line naming it).
    """
    unknown = sorted(set(kwargs) - set(inspect.signature(trace_kinds).parameters) | {"kinds"} & set(kwargs))
    if unknown:
        raise TypeError(f"trace() got an unexpected keyword argument {unknown[0]!r} (see help(spiritlens.trace))")
    return trace_kinds(model, prompt, subject, kinds=(kind,), samples=samples, noise=noise, seed=seed,
                       window=window, **kwargs)[kind]
