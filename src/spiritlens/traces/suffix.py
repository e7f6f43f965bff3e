"""Restored runs over the changed suffix only: the arithmetic a causal-tracing cell really needs.

A restored cell sets positions ``P`` (first position ``i = min(P)``) to clean values at some
block and runs the model on. By causality every position before ``i`` keeps the corrupted run's
state at every layer, and up to the cell's first run block nothing else changes. So a cell runs
only the positions ``i .. T-1`` through blocks ``start .. L-1``, its queries attending to the
corrupted run's cached keys and values for positions ``< i`` and to its own for ``>= i``; the last
block computes only what the scored positions need (keys and values of every suffix position, the
queries, attention output and MLP of the scored ones), and logits are taken there only.
The work is ``S * sum over cells of (T - i) * (L - start)`` token-blocks instead of ROME's
``(S + 1) * T * L`` per cell.

**Scored positions.** The score is the probability of ``answer_ids`` ``t_1..t_K`` at the last
``K`` positions ``T-K .. T-1`` (float32 softmax over the full vocabulary), multiplied over the K
positions (in float64) when K > 1, then averaged over the S rows: ROME's metric for K = 1, the
whole target's teacher-forced probability for a traced sequence ``prompt + t_1..t_{K-1}`` (the
engine's ``target_rule="sequence"``). Restored positions are the prompt's, all ``<= T-K``, so every
suffix covers the scored positions.

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

**Numerics.** The blocks are computed here from the weights of the wrapped
``transformers.LlamaForCausalLM`` with the operations and rounding points of its eager attention
(``transformers.models.llama.modeling_llama`` as installed): RMSNorm in float32 then cast back and
scaled; ``q/k/v/o`` projections; HF's rotary formula with its ``cos``/``sin`` in the model dtype;
scores ``(q @ k^T) * head_dim**-0.5`` plus an additive causal mask, softmax in float32 cast back
to the model dtype; grouped-query attention (``num_key_value_heads < num_attention_heads``) by
grouping each key/value head's queries, which is HF's ``repeat_kv`` without the copy; gated MLP
``down(act(gate(x)) * up(x))``. The results equal the plain per-cell ``run_with_hooks`` loop to
float32 rounding (tests/integration/test_trace_parity.py).

**Hooks.** The restored runs do not pass through the TransformerBridge, so hooks that users add
to the bridge do not fire in them; while any are attached to a decoder block, the final norm or
the unembedding the tracer scores every cell by a full forward instead (:mod:`spiritlens.traces.plain`;
a hook on ``hook_embed`` acts in the clean and corrupted runs, which do go through the bridge).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from spiritlens.model.llama import LlamaStack, linear, rms_norm, apply_rope

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
    """One restored run, in ROME's terms one (row, layer) cell of the scores table.

    Attributes:
        slot: the caller's index for the cell's score.
        positions: the restored positions P, sorted and unique; the suffix starts at ``positions[0]``.
        start: the first block run, 0 <= start <= L (L: no block, the score comes from ``state``).
        state: ``[S or 1, |P|, d_model]``, the residual stream entering block ``start`` at P;
            every other position enters with the corrupted run's ``resid_pre[start]``.
        restore: blocks (each >= start) whose output of the restored kind is set at P to its
            clean value (``hook_attn_out`` / ``hook_mlp_out``: the rest of a window).
    """

    slot: int
    positions: tuple[int, ...]
    start: int
    state: torch.Tensor
    restore: tuple[int, ...] = ()


def mean_score(probs: torch.Tensor) -> torch.Tensor:
    """The score of ``[..., S, K]`` probabilities (S rows, K scored positions): ``[...]``, float64.

    K = 1: the mean over the rows (in float32, as ROME's mean probability). K > 1: each row's
    product over the K positions in float64, then the mean over the rows (a mean of products, not
    a product of means).
    """
    if probs.shape[-1] == 1:
        return probs[..., 0].mean(dim=-1).double()
    return probs.double().prod(dim=-1).mean(dim=-1)


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
        clean: kind -> ``L`` tensors ``[T, d]`` of the clean run (``attn``, ``mlp`` outputs).
        answer_ids: ``K >= 1`` token ids scored at the last K positions (module docstring): one
            answer, or a teacher-forced target's pieces.
    """

    def __init__(self, stack: LlamaStack, corrupted_pre: Sequence[torch.Tensor],
                 clean: dict[str, Sequence[torch.Tensor]], answer_ids: Sequence[int]):
        self.stack = stack
        self.pre = list(corrupted_pre)
        self.clean = clean
        self.answer_ids = tuple(int(a) for a in answer_ids)
        self.K = len(self.answer_ids)
        self.L = len(self.pre) - 1
        self.S, self.T, self.d = self.pre[0].shape
        if not 1 <= self.K <= self.T:
            raise ValueError(f"answer_ids must hold 1..{self.T} ids (one per scored position), got {self.K}")
        self.dtype = self.pre[0].dtype
        self._masks: dict[tuple[int, torch.device], torch.Tensor] = {}
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.keys, self.values = [], []
        with torch.inference_mode():
            for layer in range(self.L):
                k, v = stack.key_value(layer, self.pre[layer], *self._rotary(self.pre[layer].device))
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
    def run(self, cells: Sequence[Cell], kind: str, *, max_cells: int | None = None,
            done: Callable[[Sequence[Cell]], None] | None = None) -> dict[int, float]:
        """Scores of ``cells`` (slot -> mean over the S rows of the score, module docstring).

        ``kind``: "hidden", "mlp" or "attn" (which output ``Cell.restore`` sets); ``done`` is
        called with each finished batch's cells.
        """
        late = [c.slot for c in cells if c.positions[0] > self.T - self.K]
        if late:
            raise ValueError(f"cells {late[:5]} restore no position <= {self.T - self.K}, the first scored position")
        scores: dict[int, float] = {}
        with torch.inference_mode():
            for batch in self.batches(cells, max_cells):
                probs = self._run_batch(batch, kind)
                for cell, p in zip(batch, probs.tolist()):
                    scores[cell.slot] = p
                if done is not None:
                    done(batch)
        return scores

    def _run_batch(self, cells: list[Cell], kind: str) -> torch.Tensor:
        """Mean score per cell ``[len(cells)]`` (float64, CPU), in the given order.

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
                plan = restore.get(layer)
                if plan is not None:
                    plan = (plan[0].to(device), plan[1].to(device))
                n_tokens = int(offsets[joined])
                if layer < L - 1:
                    x[:n_tokens] = self._block(layer, x[:n_tokens], groups, plan, kind)
                else:
                    # Each row's K scored tokens, row-major: [rows * K].
                    ends = row_offset + (T - row_start)
                    last = torch.as_tensor((ends[:, None] - K + np.arange(K)[None]).ravel(), device=device)
                    finals.append(self._block(layer, x[:n_tokens], groups, plan, kind, last=last))
        for c in order[len(runs):]:  # start == L: no block to run, the state entering is final
            final = self.pre[L][:, T - K:].clone()  # [S, K, d]: corrupted, restored at P
            for j, p in enumerate(cells[c].positions):
                if p >= T - K:
                    final[:, p - (T - K)] = cells[c].state[:, j]
            finals.append(final.reshape(-1, self.d))
        device = self.stack.norm.weight.device
        final = torch.cat([f.to(device) for f in finals])
        probs = self.stack.answer_probs(final, self.answer_ids).view(len(cells), S, K)
        probs = mean_score(probs).cpu()
        result = torch.empty_like(probs)
        result[torch.as_tensor(order)] = probs
        return result

    def _initial_tokens(self, cell: Cell) -> torch.Tensor:
        """``[S * (T - i), d]``: corrupted ``resid_pre[start]`` over the suffix, P set to ``state``."""
        i = cell.positions[0]
        h = self.pre[cell.start][:, i:].clone()
        h[:, [p - i for p in cell.positions]] = cell.state.to(h.device)
        return h.reshape(-1, self.d)

    def _restore_plan(self, runs: list[Cell], offsets: np.ndarray) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """block -> (token indices, clean positions) restored there; at the last block, where
        only the K scored positions are computed, (indices among the rows' scored tokens, clean
        positions) of the restored positions among the last K."""
        S, T, L, K = self.S, self.T, self.L, self.K
        plan: dict[int, tuple[list, list]] = {}
        for k, cell in enumerate(runs):
            i, n = cell.positions[0], T - cell.positions[0]
            for block in cell.restore:
                tokens, positions = plan.setdefault(block, ([], []))
                if block == L - 1:
                    scored = [p for p in cell.positions if p >= T - K]
                    if scored:
                        rel = ((k * S + np.arange(S))[:, None] * K + (np.array(scored) - (T - K))[None]).ravel()
                        tokens.append(rel)
                        positions.append(np.tile(scored, S))
                    continue
                rel = (np.arange(S)[:, None] * n + (np.array(cell.positions) - i)[None]).ravel()
                tokens.append(offsets[k] + rel)
                positions.append(np.tile(cell.positions, S))
        return {block: (torch.as_tensor(np.concatenate(t)), torch.as_tensor(np.concatenate(p)))
                for block, (t, p) in plan.items() if t}

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

    def _mask(self, i: int, device: torch.device) -> torch.Tensor:
        """Additive causal mask ``[groups * (T - i), T]`` for queries at positions i..T-1."""
        key = (i, device)
        if key not in self._masks:
            queries = torch.arange(i, self.T, device=device)[:, None]
            keys = torch.arange(self.T, device=device)[None]
            mask = torch.zeros((self.T - i, self.T), dtype=self.dtype, device=device)
            mask.masked_fill_(keys > queries, torch.finfo(self.dtype).min)
            self._masks[key] = mask.repeat(self.stack.groups, 1)
        return self._masks[key]

    def _attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: _Group,
                last_only: bool) -> torch.Tensor:
        """Attention output (before ``o_proj``) of one group's queries, ``[R_i * n_q, n_heads * head_dim]``.

        ``q``: ``[R_i * n_q, n_heads * head_dim]`` (n_q = T - i, or K with ``last_only``);
        ``k``, ``v``: ``[R_i * (T - i), d_kv]`` for the group's suffix tokens.
        """
        s = self.stack
        i, R = group.start, len(group.rows)
        n = self.T - i
        n_q = self.K if last_only else n
        cos, sin = self._rotary(q.device)
        q = apply_rope(q.view(R, n_q, s.n_heads, s.head_dim).transpose(1, 2), cos[self.T - n_q:], sin[self.T - n_q:])
        k = apply_rope(k.view(R, n, s.n_kv_heads, s.head_dim).transpose(1, 2), cos[i:], sin[i:])
        v = v.view(R, n, s.n_kv_heads, s.head_dim).transpose(1, 2)
        keys = torch.cat([self.keys[layer][group.samples, :, :i], k], dim=2)  # [R, n_kv, T, hd]
        values = torch.cat([self.values[layer][group.samples, :, :i], v], dim=2)
        # Each key/value head's query heads side by side: HF's repeat_kv, without the copy.
        q = q.reshape(R, s.n_kv_heads, s.groups * n_q, s.head_dim)
        scores = torch.matmul(q, keys.transpose(2, 3)) * s.scaling
        if n_q > 1:  # a single last query sees every key
            scores = scores + self._mask(self.T - n_q, scores.device)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(weights, values)  # [R, n_kv, groups * n_q, hd]
        out = out.view(R, s.n_heads, n_q, s.head_dim).transpose(1, 2)
        return out.reshape(R * n_q, s.n_heads * s.head_dim)

    def _block(self, layer: int, x: torch.Tensor, groups: list[_Group], restore, kind: str,
               last: torch.Tensor | None = None) -> torch.Tensor:
        """Block ``layer`` on the batch's suffix tokens ``x`` ``[N, d]``, restoring ``kind`` where
        planned: ``[N, d]``; with ``last`` (each row's K scored tokens, row-major), the output at
        those only ``[R * K, d]`` (keys and values of every token, the queries, attention and MLP of
        the scored ones)."""
        s = self.stack
        block = s.layers[layer]
        attn = block.self_attn
        h = rms_norm(x, block.input_layernorm.weight, s.eps)
        k, v = linear(h, attn.k_proj), linear(h, attn.v_proj)
        if last is not None:
            h, x = h[last], x[last]
        q = linear(h, attn.q_proj)
        z = torch.empty_like(q)
        for group in groups:
            if last is None:
                queries = group.tokens
            elif self.K == 1:
                queries = group.rows
            else:  # the group's rows' K scored tokens, row-major
                queries = (group.rows[:, None] * self.K + torch.arange(self.K, device=x.device)[None]).reshape(-1)
            z[queries] = self._attend(layer, q[queries], k[group.tokens], v[group.tokens], group, last is not None)
        a = linear(z, attn.o_proj)
        if restore is not None and kind == "attn":
            a[restore[0]] = self.clean["attn"][layer][restore[1]]
        x = x + a
        m = s.mlp_out(layer, x)
        if restore is not None and kind == "mlp":
            m[restore[0]] = self.clean["mlp"][layer][restore[1]]
        return x + m
