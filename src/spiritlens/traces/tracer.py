"""The causal tracing engine: ROME's numbers, with restored runs over the changed suffix only.

For one prompt (ROME's causal tracing: Meng et al. 2022, ``experiments/causal_trace.py``):
1. clean run (batch 1, through the TransformerBridge): answer ``a`` = top-1 (or a given target),
   ``high_score = p0[a]``, and the clean ``resid_post`` / ``attn_out`` / ``mlp_out`` of every
   layer are cached;
2. corrupted run (``samples`` rows, noise added at ``hook_embed`` on the subject's positions,
   through the bridge): ``low_score``, and the corrupted ``resid_pre`` / ``resid_mid`` of every
   layer are cached;
3. restored runs: cell (row, layer) restores the row's positions to their clean values, at
   ``blocks.l.hook_resid_post`` (hidden) or at ``hook_mlp_out`` / ``hook_attn_out`` of every
   layer of the window (mlp / attn). ``scores[row, layer]`` is the mean over the samples of the
   softmax probability of ``a`` at the last position.

**Whole-target score** (``target_rule="sequence"``, :mod:`spiritlens.traces.answer`): for prompt
ids P (length T0) and target pieces t_1..t_K (K >= 2) every run traces the teacher-forced
sequence ``P + t_1..t_{K-1}`` (noise on the subject's embeddings as usual), and a run's score is
the mean over its S rows of ``prod_k p(t_k | position T0-1+k-1)`` (float32 softmax over the full
vocabulary, product in float64: a mean of products, not a product of means); ``high_score`` and
``low_score`` are that score for the clean and the corrupted run. The rows of the table (what is
restored) are the prompt's positions 0..T0-1 (or its groups), never the appended pieces.

Speed-ups that keep the numbers: clean and corrupted runs once per prompt
and shared by every kind; cells before the first corrupted position are not run (their score is
``low_score`` by causality), nor is the hidden kind's last layer (low, or high at the last
position); each restored run starts after its first patched block and covers only the positions
from the row's first one on, attending to the corrupted run's cached keys and values
(:mod:`spiritlens.traces.suffix`, which computes the blocks from the Llama weights: hooks added to
the bridge do not fire there, so while any are attached to the blocks every cell runs as a full
forward instead, :mod:`spiritlens.traces.plain`);
cells are batched by tokens in flight; the last block and the logits are computed for the scored
positions only (the last one, or the K target positions).
"""

from __future__ import annotations

import inspect

from typing import Any, Callable, Collection, Sequence

import numpy as np
import torch

from spiritlens.checkpoints.schema import check_samples
from spiritlens.model import hook_names
from spiritlens.traces.answer import AnswerRule, resolve_answer
from spiritlens.traces.noise import NoiseSpec, draw_noise, noise_scale, parse_noise, subject_sigma
from spiritlens.tokens.trace_prompt import Row
from spiritlens.traces.result import TraceResult
from spiritlens.traces.suffix import Cell, SuffixRunner, mean_score
from spiritlens.model.llama import LlamaStack
from spiritlens.traces.expected import warn_if_unexpected
from spiritlens.traces.plain import attached_hooks, plain_scores
from spiritlens.tokens.trace_prompt import TracePrompt, prepare_prompt
from spiritlens.traces.window import check_window, layer_window
from spiritlens.traces.attribution import (attribution_scores, check_cells, check_method, check_verify_rank,
                                           check_verify_top, graddrop_magnitudes, normalise_cells, top_cells,
                                           verification_record)

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
    """Clean and corrupted runs of one prompt, then restored runs for any kind.

    Build once per prompt; :meth:`scores` for each kind reuses the clean and corrupted caches.
    ``ids`` ``[1, T0 + K - 1]`` is the traced sequence: the prompt's T0 ids, followed by the first
    K - 1 pieces of a ``target_rule="sequence"`` target (K = 1 otherwise); ``answer_ids`` are the K
    ids scored at positions T0-1 .. T0+K-2 (module docstring).
    """

    def __init__(self, model, prompt: TracePrompt, *, samples: int = 10, noise: NoiseSpec | float | str = "3s",
                 seed: int = 1, sigma: float | None = None, replace: bool = False,
                 low_score_follows_replace: bool = False, target: int | str | None = None,
                 max_batch_cells: int | None = None):
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
        check_samples(samples)
        if max_batch_cells is not None and max_batch_cells < 1:
            raise ValueError(f"max_batch_cells must be >= 1, got {max_batch_cells}")
        self.model = model
        self.prompt = prompt
        self.samples = samples
        self.spec = noise if isinstance(noise, NoiseSpec) else parse_noise(noise)
        if replace and self.spec.kind == "uniform":
            raise ValueError("replace mode takes Gaussian noise, not a uniform rule")
        self.sigma = sigma
        self.scale = noise_scale(self.spec, sigma=sigma, model=model, modality=prompt.modality)
        self.seed = seed
        self.replace = replace
        self.low_score_follows_replace = low_score_follows_replace
        self.max_batch_cells = max_batch_cells
        self._runner: SuffixRunner | None = None
        self._stack: LlamaStack | None = None
        self.n_layers = model.cfg.n_layers
        target = resolve_target(model, target)
        rule = target if isinstance(target, AnswerRule) else resolve_answer(model, prompt, target)
        self.n_prompt = len(prompt.input_ids)  # T0
        forced = list(rule.target_ids[:-1]) if rule.rule == "target_sequence" else []
        self.ids = torch.tensor([list(prompt.input_ids) + forced], device=model.device)
        if self.ids.shape[1] > model.cfg.n_ctx:
            extra = f" (with {len(forced)} target pieces)" if forced else ""
            raise ValueError(f"prompt has {self.ids.shape[1]} tokens{extra}, more than the model's context of "
                             f"{model.cfg.n_ctx}")
        b, e = prompt.subject_range
        z = draw_noise(self.spec, self.scale, samples, e - b, model.cfg.d_model, seed)
        self._noise = torch.from_numpy(z).to(model.device)  # float64, [S, e-b, d]
        with torch.no_grad():
            self._clean_run(rule)
            self._corrupted_runs()

    # ----------------------------------------------------------------- base runs
    def _noise_hook(self, replace: bool) -> Callable:
        b, e = self.prompt.subject_range

        def corrupt(act, hook):
            if replace:
                act[:, b:e] = self._noise.to(act.dtype)
            else:
                act[:, b:e] += self._noise  # float64 sum, rounded once to act's dtype
            return act

        return corrupt

    def _score(self, logits: torch.Tensor) -> float:
        """A run's score from its logits ``[R, T0 + K - 1, V]``: the mean over the R rows of the
        product of the answer ids' probabilities at the K scored positions (K = 1: ROME's metric)."""
        K = len(self.answer_ids)
        probs = torch.softmax(logits[:, self.n_prompt - 1:].float(), dim=-1)  # [R, K, V]
        return float(mean_score(probs[:, torch.arange(K), torch.tensor(self.answer_ids)]))

    def _clean_run(self, rule: AnswerRule) -> None:
        L = self.n_layers
        wanted = {hook_names.resid_post(l) for l in range(L)} | {hook_names.mlp_out(l) for l in range(L)} \
            | {hook_names.attn_out(l) for l in range(L)}
        logits, cache = self.model.run_with_cache(self.ids, names_filter=lambda n: n in wanted)
        probs = torch.softmax(logits[0, self.n_prompt - 1].float(), dim=-1)
        # The output modality's top-1 (= greedy generation's first token) or the given target.
        self.answer_rule = rule
        self.answer_id = rule.choose(self.model, probs)
        sequence = rule.rule == "target_sequence"
        self.answer_ids = tuple(rule.target_ids) if sequence else (self.answer_id,)
        self.prompt.extra.update(rule.record())  # recorded in every result of this prompt
        self.high_score = self._score(logits)
        self._clean = {kind: [cache[hook_names.BY_KIND[kind](l)][0] for l in range(L)] for kind in KINDS}

    def _corrupted_forward(self, replace: bool, keep_prefix: bool):
        ids = self.ids.expand(self.samples, -1)
        L = self.n_layers
        wanted = {hook_names.resid_pre(l) for l in range(L)} | {hook_names.resid_mid(l) for l in range(L)} \
            | {hook_names.resid_post(L - 1)} if keep_prefix else set()
        with self.model.hooks(fwd_hooks=[(hook_names.EMBED, self._noise_hook(replace))]):
            logits, cache = self.model.run_with_cache(ids, names_filter=lambda n: n in wanted)
        low = self._score(logits)
        if not keep_prefix:
            return low, None
        # "pre"[l] is the input of block l, and "pre"[L] the output of the last block.
        prefix = {"pre": [cache[hook_names.resid_pre(l)] for l in range(L)] + [cache[hook_names.resid_post(L - 1)]],
                  "mid": [cache[hook_names.resid_mid(l)] for l in range(L)]}
        return low, prefix

    def _corrupted_runs(self) -> None:
        low_replace = self.replace and self.low_score_follows_replace
        self.low_score, prefix = self._corrupted_forward(low_replace, keep_prefix=low_replace == self.replace)
        # The restored runs' own unrestored score: what cells that restore nothing are worth.
        self._baseline = self.low_score
        if prefix is None:  # ROME's quirk: low with additive noise, restored runs with replace
            self._baseline, prefix = self._corrupted_forward(self.replace, keep_prefix=True)
        self._corrupted_prefix = prefix["pre"]  # resid_pre[l] for l < L, resid_post[L-1] at L: [S, T, d]
        self._corrupted_mid = prefix["mid"]  # resid_mid[l]: [S, T, d]

    # ----------------------------------------------------------- restored runs
    def _restored_runs(self) -> SuffixRunner:
        """The suffix runner over this prompt's corrupted run (built on first use: it caches the
        corrupted keys and values of every layer)."""
        if self._runner is None:
            self._stack = LlamaStack(self.model.hf_model)
            clean = {kind: self._clean[kind] for kind in ("attn", "mlp")}
            self._runner = SuffixRunner(self._stack, self._corrupted_prefix, clean, self.answer_ids)
        return self._runner

    def _first_block_output(self, kind: str, block: int) -> torch.Tensor:
        """``resid_post[block]`` of a cell whose first patched block is ``block``, at every position
        as if it were restored: ``[1, T, d]`` (hidden) or ``[S, T, d]``.

        Up to that output only the restored positions differ from the corrupted run (the MLP acts
        per position), so restored runs start at ``block + 1`` with these values at P.
        """
        if kind == "hidden":
            return self._clean["hidden"][block][None]
        if kind == "mlp":
            return self._corrupted_mid[block] + self._clean["mlp"][block]
        mid = self._corrupted_prefix[block] + self._clean["attn"][block]
        return mid + self._stack.mlp_out(block, mid)

    def scores(self, kind: str, rows: Sequence[Row], *, window: int | None = None,
               progress: Callable | None = None, cells: Collection[tuple[int, int]] | None = None) -> np.ndarray:
        """``[R, L]`` restored scores for ``rows`` (each a group of the prompt's positions 0..T0-1).

        Every live cell runs over the changed suffix only (:mod:`spiritlens.traces.suffix`), in
        batches sized by tokens in flight; ``max_batch_cells`` caps the cells per batch.
        ``progress(1)`` is called once per layer when all of its cells are done. ``cells``: only
        these ``(row, layer)`` cells are traced (e.g. a screen's top cells,
        :mod:`spiritlens.traces.attribution`); every other cell is NaN. With hooks attached to the
        model's blocks, final norm or unembedding (an ablation, a spliced SAE), every cell is a full
        forward in which they act (:mod:`spiritlens.traces.plain`: exact, slower, logged).
        Raises ValueError for an unknown kind, a bad window, positions outside the prompt or cells
        outside the table.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        window = check_window(window, self.n_layers)
        T, L = self.n_prompt, self.n_layers  # rows restore prompt positions only
        sequence = len(self.answer_ids) > 1
        for row in rows:
            if not row.positions or not all(0 <= p < T for p in row.positions):
                raise ValueError(f"row {row.label!r} has positions outside the prompt's 0..{T - 1}: "
                                 f"{row.positions}")
        wanted = None if cells is None else check_cells(cells, len(rows), L)
        if attached_hooks(self.model.bridge):  # hooks must act in every run: full forwards, slower
            scores = plain_scores(self, kind, rows, lambda layer: [layer] if kind == "hidden"
                                  else layer_window(layer, window, L), progress)
            if wanted is not None:  # unscreened cells are NaN, as on the fast path
                mask = np.zeros(scores.shape, dtype=bool)
                for row, layer in wanted:
                    mask[row, layer] = True
                scores[~mask] = np.nan
            return scores
        b = self.prompt.subject_range[0]
        # Rows before the subject restore states equal to the corrupted ones: by causality their
        # score is the corrupted baseline (low_score, unless ROME's replace quirk is on).
        scores = np.full((len(rows), L), self._baseline, dtype=np.float64)
        live = [i for i, row in enumerate(rows) if max(row.positions) >= b]
        runner = self._restored_runs() if live else None
        cells: list[Cell] = []
        copies: dict[int, int] = {}  # truncated windows repeat near the edges of small models
        first_of: dict[tuple[int, ...], int] = {}
        pending: dict[int, int] = {}  # layer -> cells not yet scored
        with torch.inference_mode():
            for layer in range(L):
                if kind == "hidden" and layer == L - 1 and not sequence:
                    # The last block's output at the last position is the clean one (high), elsewhere
                    # it cannot reach the logits (low).
                    for i in live:
                        scores[i, layer] = self.high_score if T - 1 in rows[i].positions else self._baseline
                    continue
                patched = (layer,) if kind == "hidden" else tuple(layer_window(layer, window, L))
                if patched in first_of and wanted is None:
                    copies[layer] = first_of[patched]
                    continue
                first_of[patched] = layer
                if not live:
                    continue
                first_block = patched[0]
                state = self._first_block_output(kind, first_block)
                # With a whole target, the last block's output at the prompt's last position is
                # clean and the target positions' are corrupted; other positions cannot reach the
                # logits (the baseline).
                reaching = [i for i in live if (kind != "hidden" or layer < L - 1 or T - 1 in rows[i].positions)
                            and (wanted is None or (i, layer) in wanted)]
                for i in reaching:
                    positions = tuple(sorted(set(rows[i].positions)))
                    cells.append(Cell(slot=i * L + layer, positions=positions, start=first_block + 1,
                                      state=state[:, list(positions)], restore=patched[1:]))
                if reaching:
                    pending[layer] = len(reaching)
            finished = [layer for layer in range(L) if layer not in pending]

            def done(batch: Sequence[Cell]) -> None:
                for cell in batch:
                    layer = cell.slot % L
                    pending[layer] -= 1
                    if pending[layer] == 0 and progress is not None:
                        progress(1)

            if progress is not None:
                for _ in finished:
                    progress(1)
            if cells:
                for slot, p in runner.run(cells, kind, max_cells=self.max_batch_cells, done=done).items():
                    scores[slot // L, slot % L] = p
        for layer, source in copies.items():
            scores[live, layer] = scores[live, source]
        if wanted is not None:  # unscreened cells are NaN
            keep = np.full(scores.shape, np.nan)
            for cell in wanted:
                keep[cell] = scores[cell]
            scores = keep
        return scores

    def result(self, kind: str, rows: Sequence[Row] | None = None, *, window: int | None = None,
               subject_rows: tuple[int, int] | None = None, ignored_rows: Sequence[int] = (),
               attribute: str | None = None, progress: Callable | None = None, name: str = "",
               method: str = "exact", cells: Collection[tuple[int, int]] | None = None) -> TraceResult:
        """Trace one kind into a :class:`TraceResult` (rows default to one per position).

        ``method``: ``"exact"`` (restored runs), ``"attribution"`` or ``"attribution_qk"`` (first-order
        estimates, :mod:`spiritlens.traces.attribution`); ``cells`` (exact only): the cells traced,
        the others NaN (:meth:`scores`)."""
        prompt = self.prompt
        if rows is None:
            rows = [Row(t, [i]) for i, t in enumerate(prompt.tokens)]
            subject_rows = prompt.subject_range
        window = check_window(window, self.n_layers)
        extra = dict(self.prompt.extra)
        if check_method(method) == "exact":
            scores = self.scores(kind, rows, window=window, progress=progress, cells=cells)
            if cells is not None:
                extra["cells"] = sorted([int(r), int(c)] for r, c in cells)
        else:
            if cells is not None:
                raise ValueError(f"cells restricts the exact method's restored runs; method {method!r} estimates "
                                 "every cell at once")
            scores = attribution_scores(self, kind, rows, window=window, qk_fix=method == "attribution_qk")
            for _ in range(self.n_layers if progress is not None else 0):
                progress(1)
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


ROW_MODES = ("auto", "positions", "groups", "mean")


def resolve_row_mode(row_mode: str, has_groups: bool) -> str:
    """``"auto"`` (the default everywhere): ``"groups"`` for a prompt with position groups (a
    spoken prompt: the speech tokens of each text token restored together), else ``"positions"``."""
    if row_mode not in ROW_MODES:
        raise ValueError(f"unknown row_mode {row_mode!r}; use one of {', '.join(ROW_MODES)}")
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
                max_batch_cells: int | None = None, progress: bool = False, name: str = "",
                method: str = "exact", cells: Any = None, verify_top: int | None = None,
                verify_rank: str = "estimate") -> dict[str, TraceResult]:
    """Trace several kinds of one prompt, sharing its clean and corrupted runs; see :func:`trace`."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if row_mode not in ROW_MODES:
        raise ValueError(f"unknown row_mode {row_mode!r}; use one of {', '.join(ROW_MODES)}")
    check_method(method)
    check_verify_rank(verify_rank)
    if verify_top is not None:
        check_verify_top(verify_top)
        if method == "exact":
            raise ValueError("verify_top checks a screen: give method='attribution' or 'attribution_qk'")
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
    tracer = Tracer(model, prepared, samples=samples, noise=spec, seed=seed, sigma=sigma, replace=replace,
                    low_score_follows_replace=low_score_follows_replace, target=answer,
                    max_batch_cells=max_batch_cells)
    bar = None
    if progress:
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
            ``"mean"``); ``attribute`` (sets ``correct_prediction``), ``max_batch_cells``,
            ``progress``, ``name``; ``method`` (``"exact"``, the default; ``"attribution"``: AtP's
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
