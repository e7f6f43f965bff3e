"""The suffix backend: restored runs over the changed suffix only, the arithmetic a causal-tracing cell really needs.

A restored cell sets positions ``P`` (first position ``i = min(P)``) to a source's values at some
block and runs the model on. By causality every position before ``i`` keeps the corrupted run's
state at every layer, and up to the cell's first run block nothing else changes. So a cell runs
only the positions ``i .. T-1`` through blocks ``start .. L-1``, its queries attending to the
corrupted run's cached keys and values for positions ``< i`` and to its own for ``>= i``; the last
block computes only what the scored positions need (keys and values of every suffix position, the
queries, attention output and MLP of the scored ones), and logits are taken there only.
The work is ``S * sum over cells of (T - i) * (L - start)`` token-blocks instead of ROME's
``(S + 1) * T * L`` per cell.

**What it runs** (:func:`plan_cell` turns a :class:`~spiritlens.interventions.spec.Restore` into a
:class:`Cell`): one restore per intervention, of any site, from the clean run or a source run,
whose first position is at or before the first scored position; the model must be a Llama
(:class:`~spiritlens.model.llama.LlamaStack`), unprocessed, with no user hook outside ``hook_embed``
(:mod:`spiritlens.interventions.hooks`). Anything else runs on the reference backend.

**Scored positions.** The run's score (:class:`~spiritlens.interventions.metric.AnswerScore`, the one
softmax score) at its last ``K`` positions ``T-K .. T-1``.

**Key/value cache.** Keys (after rotary) and values of the corrupted run are computed once per
prompt for every layer from the cached corrupted ``resid_pre``: ``2 * L * S * T * d_kv`` elements
(``d_kv = num_key_value_heads * head_dim``, = d_model without grouped-query attention). For a 7B
SpiritLM in bf16 at T = 60, S = 10: 2 * 32 * 10 * 60 * 4096 * 2 bytes = 315 MB (300 MiB).

**Memory per prompt.** Besides the weights: the corrupted run's ``resid_pre`` ((L + 1) S T d) and
``resid_mid`` (L S T d), the clean run's resid_post, attn_out and mlp_out (3 L T d) and the key/value
cache; 7B bf16, T = 60, S = 10: 162 + 157 + 47 + 315 MB = 0.68 GB. A batch's temporaries
(:meth:`SuffixRunner.batch_bytes`) may take ``MEMORY_SHARE`` of the free memory. On paper, for a
24 GB GPU: 13.5 GB of weights + 0.7 GB + 0.3 x (24 - 14.2 - ~0.5 GB CUDA context) = 2.8 GB of batch
gives a peak near 17 GB (on paper: not yet measured on a GPU).

**Numerics.** The blocks are computed by :mod:`spiritlens.model.llama` (HF's eager arithmetic); the
results equal the reference backend's full forwards to float32 rounding
(tests/integration/traces/test_trace_parity.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from spiritlens.interventions.metric import AnswerScore
from spiritlens.model.llama import LlamaStack, apply_rope, causal_mask

# Tokens in flight per batch on a CPU (rows x suffix positions, summed over the batch's cells):
# the fastest of 512 .. 16384 in benchmarks/bench_trace.py --sweep-batch (8 layers x d 512, T = 60,
# hidden) on 1 and on 2 threads; 4096 was 10-20% slower, 16384 20% (the batch falls out of the caches).
CPU_TOKENS_PER_BATCH = 1024
# On a GPU large batches keep the matrix units busy (on paper, not yet measured); the
# free-memory rule bounds them (for a 7B model in bf16 at T = 60, to about 10k tokens on a 24 GB card).
GPU_TOKENS_PER_BATCH = 65536
# Share of the free device memory one batch's temporaries may take.
MEMORY_SHARE = 0.3


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` in bytes (CUDA: the driver's free memory plus what PyTorch's
    caching allocator holds unused, so earlier batches' cached blocks count as free; CPU: the
    available pages)."""
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0] + cached)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4 << 30


@dataclass
class Cell:
    """One restored run as the suffix runner computes it.

    Attributes:
        slot: the caller's index for the cell's score.
        positions: the restored positions P, sorted and unique; the suffix starts at ``positions[0]``.
        start: the first block run, 0 <= start <= L (L: no block, the score comes from ``state``).
        state: ``[S or 1, |P|, d_model]``, the residual stream entering block ``start`` at P;
            every other position enters with the corrupted run's ``resid_pre[start]``.
        restore: ``(block, site, values)`` with block >= start: after block ``block`` computes
            ``site`` (``"attn_out"``, ``"mlp_out"`` or ``"resid_post"``), set it at P to ``values``
            ``[S or 1, |P|, d_model]`` (the rest of a window).
    """

    slot: int
    positions: tuple[int, ...]
    start: int
    state: torch.Tensor
    restore: tuple[tuple[int, str, torch.Tensor], ...] = ()


@dataclass
class _Group:
    """Active rows of a batch whose suffix starts at the same position ``i``."""

    start: int  # i
    rows: torch.Tensor  # [R_i] row indices in the batch
    samples: torch.Tensor  # [R_i] corrupted sample of each row
    tokens: torch.Tensor  # [R_i * (T - i)] token indices, row-major


class SuffixRunner:
    """Runs :class:`Cell` s over the changed suffix, batched by tokens in flight.

    Args:
        stack: the model's :class:`LlamaStack`.
        corrupted_pre: ``L + 1`` tensors ``[S, T, d]``: the corrupted run's ``resid_pre[l]`` for
            l < L and its last block's output at index L (the restored runs' corrupted run).
        metric: the :class:`~spiritlens.interventions.metric.AnswerScore` of the run's last K positions.
    """

    def __init__(self, stack: LlamaStack, corrupted_pre: Sequence[torch.Tensor], metric: AnswerScore):
        self.stack = stack
        self.pre = list(corrupted_pre)
        self.metric = metric
        self.K = metric.n_scored
        self.L = len(self.pre) - 1
        self.S, self.T, self.d = self.pre[0].shape
        if not 1 <= self.K <= self.T:
            raise ValueError(f"the metric scores {self.K} positions of a {self.T}-token run")
        self.dtype = self.pre[0].dtype
        self._masks: dict[tuple[int, torch.device], torch.Tensor] = {}
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.keys, self.values = [], []
        with torch.inference_mode():
            for layer in range(self.L):
                cos, sin = self._rotary(self.pre[layer].device)
                k, v = stack.keys_values(layer, stack.attn_input(layer, self.pre[layer]), cos, sin)
                self.keys.append(k)
                self.values.append(v)

    def _rotary(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """HF's rotary ``cos``, ``sin`` ``[T, head_dim]`` for positions 0..T-1, on ``device``."""
        if device not in self._tables:
            self._tables[device] = self.stack.rotary_tables(self.T, self.pre[0][:1, :1].to(device))
        return self._tables[device]

    # ------------------------------------------------------------------ sizing
    def cache_bytes(self) -> int:
        """Bytes of the key/value cache: ``2 * L * S * T * d_kv`` elements."""
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size()
                   for k, v in zip(self.keys, self.values))

    def batch_bytes(self, rows: int, tokens: int, longest: int) -> int:
        """Peak temporaries of one block on a batch (elements x element size, upper estimate).

        Per token: residual, normed input, q, attention output, o output, MLP output (6 d),
        float32 norm (2 d x 4 bytes), k, v (2 d_kv), and gate, up, activation, product (4 d_mlp).
        Per row: the row's full keys and values (2 T d_kv) and its attention scores, in the model
        dtype, as float32 softmax and cast back (n_heads x longest suffix x T x (2 e + 4)), and the
        logits of its K scored positions (vocabulary, model dtype and float32).
        """
        e = torch.finfo(self.dtype).bits // 8
        s = self.stack
        d_kv = s.n_kv_heads * s.head_dim
        d_mlp = int(getattr(s.config, "intermediate_size", 4 * self.d))
        per_token = e * (6 * self.d + 2 * d_kv + 4 * d_mlp) + 8 * self.d
        per_row = e * 2 * self.T * d_kv + s.n_heads * longest * self.T * (2 * e + 4)
        return tokens * per_token + rows * per_row + rows * self.K * self.stack.vocab * (e + 4)

    def batches(self, cells: Sequence[Cell], max_cells: int | None = None) -> list[list[Cell]]:
        """Split cells into batches by tokens in flight (rows x suffix positions), not cell count.

        Cells are ordered by suffix start, then first block, so a batch holds cells of nearby
        suffix lengths (attention is computed per suffix start; few starts per batch). A batch
        takes cells while its tokens stay within the device's target (``CPU_TOKENS_PER_BATCH``,
        measured; ``GPU_TOKENS_PER_BATCH``) and its :meth:`batch_bytes` within ``MEMORY_SHARE``
        of the free memory; ``max_cells`` caps the cells per batch. A batch has at least one cell.
        """
        device = self.pre[0].device
        target = GPU_TOKENS_PER_BATCH if device.type == "cuda" else CPU_TOKENS_PER_BATCH
        budget = MEMORY_SHARE * available_bytes(device)
        ordered = sorted(cells, key=lambda c: (c.positions[0], c.start))
        out: list[list[Cell]] = []
        current: list[Cell] = []
        tokens = rows = longest = 0
        for cell in ordered:
            n = self.T - cell.positions[0]
            new_tokens, new_rows, new_longest = tokens + self.S * n, rows + self.S, max(longest, n)
            full = current and (new_tokens > target or self.batch_bytes(new_rows, new_tokens, new_longest) > budget
                                or (max_cells is not None and len(current) >= max_cells))
            if full:
                out.append(current)
                current, new_tokens, new_rows, new_longest = [], self.S * n, self.S, n
            current.append(cell)
            tokens, rows, longest = new_tokens, new_rows, new_longest
        if current:
            out.append(current)
        return out

    # ------------------------------------------------------------------ running
    def run(self, cells: Sequence[Cell], *, max_cells: int | None = None,
            done: Callable[[Sequence[Cell]], None] | None = None) -> dict[int, float]:
        """Scores of ``cells`` (slot -> the run's score, module docstring); ``done`` is called with
        each finished batch's cells."""
        late = [c.slot for c in cells if c.positions[0] > self.T - self.K]
        if late:
            raise ValueError(f"cells {late[:5]} restore no position <= {self.T - self.K}, the first scored position")
        scores: dict[int, float] = {}
        with torch.inference_mode():
            for batch in self.batches(cells, max_cells):
                for cell, p in zip(batch, self._run_batch(batch).tolist()):
                    scores[cell.slot] = p
                if done is not None:
                    done(batch)
        return scores

    def _run_batch(self, cells: list[Cell]) -> torch.Tensor:
        """Score per cell ``[len(cells)]`` (float64, CPU), in the given order.

        Token layout: the cells in order of their first block, each S rows x (T - i) positions,
        row-major, so the tokens in flight at block j are a prefix of the batch's tokens and
        cells join by filling their slice when the layer loop reaches their first block.
        """
        S, T, L, K = self.S, self.T, self.L, self.K
        order = sorted(range(len(cells)), key=lambda c: cells[c].start)
        runs = [cells[c] for c in order if cells[c].start < L]
        lengths = [S * (T - c.positions[0]) for c in runs]
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
        row_start = np.repeat([c.positions[0] for c in runs], S).astype(np.int64)  # suffix start i per row
        row_sample = np.tile(np.arange(S), len(runs))
        row_offset = offsets[:-1].repeat(S) + row_sample * (T - row_start)
        restore = self._restore_plan(runs, offsets)
        finals = []
        if runs:
            x = torch.empty((int(offsets[-1]), self.d), dtype=self.dtype, device=self.pre[runs[0].start].device)
            joined, groups = 0, []
            for layer in range(runs[0].start, L):
                device = self.pre[layer].device
                x = x.to(device)
                joining = joined
                while joining < len(runs) and runs[joining].start == layer:
                    x[offsets[joining]:offsets[joining + 1]] = self._initial_tokens(runs[joining])
                    joining += 1
                if joining > joined or (groups and groups[0].rows.device != device):
                    joined = joining
                    rows = slice(0, joined * S)
                    groups = self._groups(row_start[rows], row_sample[rows], row_offset[rows], device)
                plan = {site: (tokens.to(device), values.to(device))
                        for site, (tokens, values) in restore.get(layer, {}).items()}
                n_tokens = int(offsets[joined])
                if layer < L - 1:
                    x[:n_tokens] = self._block(layer, x[:n_tokens], groups, plan)
                else:
                    # Each row's K scored tokens, row-major: [rows * K].
                    ends = row_offset + (T - row_start)
                    last = torch.as_tensor((ends[:, None] - K + np.arange(K)[None]).ravel(), device=device)
                    finals.append(self._block(layer, x[:n_tokens], groups, plan, last=last))
        for c in order[len(runs):]:  # start == L: no block to run, the state entering is final
            final = self.pre[L][:, T - K:].clone()  # [S, K, d]: corrupted, restored at P
            for j, p in enumerate(cells[c].positions):
                if p >= T - K:
                    final[:, p - (T - K)] = cells[c].state[:, j]
            finals.append(final.reshape(-1, self.d))
        final = torch.cat([f.to(self.stack.norm.weight.device) for f in finals])
        logits = self.stack.logits(final).view(len(cells), S, K, -1)
        scores = self.metric.reduce(self.metric.probabilities(logits)).cpu()
        result = torch.empty_like(scores)
        result[torch.as_tensor(order)] = scores
        return result

    def _initial_tokens(self, cell: Cell) -> torch.Tensor:
        """``[S * (T - i), d]``: corrupted ``resid_pre[start]`` over the suffix, P set to ``state``."""
        i = cell.positions[0]
        h = self.pre[cell.start][:, i:].clone()
        h[:, [p - i for p in cell.positions]] = cell.state.to(h.device, h.dtype)
        return h.reshape(-1, self.d)

    def _restore_plan(self, runs: list[Cell], offsets: np.ndarray) -> dict[int, dict[str, tuple]]:
        """block -> site -> (token indices, values ``[n, d]``) set there; at the last block, where only
        the K scored positions are computed, the indices are among the rows' scored tokens and only
        restored positions among the last K count."""
        S, T, L, K = self.S, self.T, self.L, self.K
        plan: dict[int, dict[str, tuple[list, list]]] = {}
        for k, cell in enumerate(runs):
            i, n = cell.positions[0], T - cell.positions[0]
            for block, site, values in cell.restore:
                values = values.expand(S, -1, -1)  # [S, P, d]
                tokens, chosen = plan.setdefault(block, {}).setdefault(site, ([], []))
                if block == L - 1:
                    scored = [j for j, p in enumerate(cell.positions) if p >= T - K]
                    if scored:
                        at = np.array([cell.positions[j] for j in scored]) - (T - K)
                        tokens.append(((k * S + np.arange(S))[:, None] * K + at[None]).ravel())
                        chosen.append(values[:, scored].reshape(-1, self.d))
                    continue
                tokens.append(offsets[k] + (np.arange(S)[:, None] * n + (np.array(cell.positions) - i)[None]).ravel())
                chosen.append(values.reshape(-1, self.d))
        return {block: {site: (torch.as_tensor(np.concatenate(t)), torch.cat(v)) for site, (t, v) in sites.items() if t}
                for block, sites in plan.items()}

    def _groups(self, row_start, row_sample, row_offset, device) -> list[_Group]:
        """The active rows grouped by suffix start, with their token indices (row-major)."""
        groups = []
        for i in np.unique(row_start):
            rows = np.flatnonzero(row_start == i)
            tokens = (row_offset[rows][:, None] + np.arange(self.T - i)[None]).ravel()
            groups.append(_Group(int(i), torch.as_tensor(rows, device=device),
                                 torch.as_tensor(row_sample[rows], device=device),
                                 torch.as_tensor(tokens, device=device)))
        return groups

    def _mask(self, n_queries: int, device: torch.device) -> torch.Tensor | None:
        """The causal mask of the last ``n_queries`` positions (None for one: the last query sees every key)."""
        if n_queries == 1:
            return None
        key = (n_queries, device)
        if key not in self._masks:
            self._masks[key] = causal_mask(n_queries, self.T, self.dtype, device)
        return self._masks[key]

    def _attend(self, layer: int, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: _Group,
                last_only: bool) -> torch.Tensor:
        """Attention output (before ``o_proj``) of one group's queries, ``[R_i * n_q, n_heads * head_dim]``.

        ``h``: normalised inputs ``[R_i * n_q, d]`` of the queried tokens (n_q = T - i, or K with
        ``last_only``); ``k``, ``v``: ``[R_i * (T - i), d_kv]`` for the group's suffix tokens.
        """
        s = self.stack
        i, R = group.start, len(group.rows)
        n = self.T - i
        n_q = self.K if last_only else n
        cos, sin = self._rotary(h.device)
        q = s.queries(layer, h.view(R, n_q, -1), cos[self.T - n_q:], sin[self.T - n_q:])
        k = apply_rope(s.split_heads(k, R, n, s.n_kv_heads), cos[i:], sin[i:])
        v = s.split_heads(v, R, n, s.n_kv_heads)
        keys = torch.cat([self.keys[layer][group.samples, :, :i], k], dim=2)  # [R, n_kv, T, hd]
        values = torch.cat([self.values[layer][group.samples, :, :i], v], dim=2)
        return s.attend(q, keys, values, self._mask(n_q, q.device)).reshape(R * n_q, -1)

    def _block(self, layer: int, x: torch.Tensor, groups: list[_Group], restore: dict,
               last: torch.Tensor | None = None) -> torch.Tensor:
        """Block ``layer`` on the batch's suffix tokens ``x`` ``[N, d]``, setting the planned sites:
        ``[N, d]``; with ``last`` (each row's K scored tokens, row-major), the output at those only
        ``[R * K, d]`` (keys and values of every token, the queries, attention and MLP of the scored ones)."""
        s = self.stack
        h = s.attn_input(layer, x)
        k, v = s.kv_projections(layer, h)  # every suffix token's, before rotary
        if last is not None:
            queried, x = h[last], x[last]
        else:
            queried = h
        z = torch.empty((queried.shape[0], s.n_heads * s.head_dim), dtype=x.dtype, device=x.device)
        for group in groups:
            if last is None:
                queries = group.tokens
            elif self.K == 1:
                queries = group.rows
            else:  # the group's rows' K scored tokens, row-major
                queries = (group.rows[:, None] * self.K + torch.arange(self.K, device=x.device)[None]).reshape(-1)
            z[queries] = self._attend(layer, queried[queries], k[group.tokens], v[group.tokens], group,
                                      last is not None)
        a = s.attn_out(layer, z)
        if "attn_out" in restore:
            a[restore["attn_out"][0]] = restore["attn_out"][1].to(a.dtype)
        x = x + a
        m = s.mlp_out(layer, x)
        if "mlp_out" in restore:
            m[restore["mlp_out"][0]] = restore["mlp_out"][1].to(m.dtype)
        x = x + m
        if "resid_post" in restore:
            x[restore["resid_post"][0]] = restore["resid_post"][1].to(x.dtype)
        return x


# --------------------------------------------------------------- the backend
def unsupported(run, interventions: Sequence, *, hooked: Sequence[str] | None = None) -> str:
    """Why the suffix backend cannot run ``interventions`` on ``run`` (an
    :class:`~spiritlens.interventions.run.InterventionRun`), or ``""`` when it can (module docstring)."""
    from spiritlens.interventions.hooks import blocks_hooks, describe

    hooked = blocks_hooks(run.model) if hooked is None else hooked
    if hooked:
        return f"hooks attached ({describe(list(hooked))})"
    bridge = getattr(run.model, "bridge", None)
    if bridge is not None and (getattr(bridge, "compatibility_mode", False) or getattr(bridge, "_weights_processed", False)):
        return "the bridge's weights are processed (folded norms), the suffix backend reads the raw weights"
    try:
        _stack(run)
    except ValueError as error:
        return str(error)
    first_scored = run.ids.shape[1] - run.metric.n_scored
    for item in interventions:
        if len(item) != 1:
            return f"an intervention of {len(item)} restores (the suffix backend runs one restore each)"
        if min(item[0].positions) > first_scored:
            return f"{item[0].describe()} starts after the first scored position {first_scored}"
    return ""


def _stack(run) -> LlamaStack:
    if getattr(run, "_stack", None) is None:
        run._stack = LlamaStack(run.model.hf_model)
    return run._stack


def runner_of(run) -> SuffixRunner:
    """The suffix runner of an InterventionRun (built on first use: it caches the corrupted keys and values)."""
    if run._suffix is None:
        run._suffix = SuffixRunner(_stack(run), run.corrupted_states["pre"], run.metric)
    return run._suffix


def plan_cell(run, slot: int, restore) -> "Cell | float":
    """The suffix :class:`Cell` of one restore, or its score when it is known without a run: restoring
    the clean run's states only before the corruption's first position (``baseline``), or the last
    block's output at every scored position (``high_score``) or at none of them (``baseline``)."""
    from spiritlens.interventions.spec import CLEAN

    T, L, K = run.ids.shape[1], run.n_layers, run.metric.n_scored
    order = sorted(range(len(restore.positions)), key=lambda j: restore.positions[j])
    positions = tuple(restore.positions[j] for j in order)
    clean = restore.source == CLEAN
    if clean and positions[-1] < run.corruption.first_position:
        return run.baseline

    def values(layer: int) -> torch.Tensor:  # [1, P, d] in the order of ``positions``
        return run.source_values(restore, layer)[order][None]

    first = restore.layers[0]
    if restore.site == "resid_post" and first == L - 1 and clean:
        scored = set(range(T - K, T))
        if scored <= set(positions):
            return run.high_score
        if not scored & set(positions):
            return run.baseline
    if clean:  # every position restored at once, shared by the layer's cells
        state = _first_output(run, restore.site, first)[:, list(positions)]
    else:
        state = _block_output(run, restore.site, first, list(positions), values(first))
    rest = tuple((layer, restore.site, values(layer)) for layer in restore.layers[1:])
    return Cell(slot, positions, first + 1, state, rest)


def _block_output(run, site: str, block: int, positions, values: torch.Tensor) -> torch.Tensor:
    """``resid_post[block]`` at ``positions`` ``[S or 1, P, d]`` when ``site`` is set there to ``values``
    ``[S or 1, P, d]`` in block ``block`` of the corrupted run (nothing before it changed, and the MLP acts
    per position)."""
    prefix = run.corrupted_states
    if site == "resid_post":
        return values
    if site == "mlp_out":
        return prefix["mid"][block][:, positions] + values
    mid = prefix["pre"][block][:, positions] + values  # attn_out: the MLP then acts on the restored mid-stream
    return mid + _stack(run).mlp_out(block, mid)


def _first_output(run, site: str, block: int) -> torch.Tensor:
    """:func:`_block_output` of the clean run's ``site`` at every position ``[S or 1, T, d]`` (cached per run)."""
    cache = run.__dict__.setdefault("_first_outputs", {})
    if (site, block) not in cache:
        T = run.ids.shape[1]
        cache[(site, block)] = _block_output(run, site, block, slice(None), run.clean[site][block][None, :T])
    return cache[(site, block)]


def suffix_scores(run, interventions: Sequence, *, done: Callable[[Sequence[int]], None] | None = None) -> np.ndarray:
    """Scores ``[N]`` (float64) of single-restore ``interventions`` on the suffix backend."""
    values = np.empty(len(interventions), dtype=np.float64)
    cells, known = [], []
    with torch.inference_mode():
        for k, item in enumerate(interventions):
            planned = plan_cell(run, k, item[0])
            if isinstance(planned, Cell):
                cells.append(planned)
            else:
                values[k] = planned
                known.append(k)
    if done is not None and known:
        done(known)
    if cells:
        finished = None if done is None else (lambda batch: done([c.slot for c in batch]))
        for slot, score in runner_of(run).run(cells, max_cells=run.max_batch_cells, done=finished).items():
            values[slot] = score
    return values
