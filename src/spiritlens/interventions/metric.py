"""The score of a run: the probability of the answer, the one place a softmax score is computed.

ROME's metric (``experiments/causal_trace.py``, ``trace_with_patch``): the softmax over the **full**
vocabulary of the last position's logits of each corrupted row, averaged over the rows as
probabilities (not logits), taken at the answer id. With a whole target ``t_1..t_K`` (K >= 2; the
tracer's ``target_rule="sequence"``) a run is the teacher-forced sequence ``prompt + t_1..t_{K-1}``
and a row's score is ``prod_k p(t_k)`` at the last K positions (float32 softmax, product in
float64): the run's score is the mean of the rows' products, not a product of means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AnswerScore:
    """The probability of ``answer_ids`` (K >= 1 pieces) at a run's last K positions.

    ``answer_ids``: one answer id (ROME), or a whole target's K pieces, scored at positions
    ``T-K .. T-1`` of the run's sequence ``[T]``.
    """

    answer_ids: tuple[int, ...]

    def __post_init__(self):
        ids = tuple(int(a) for a in self.answer_ids)
        if not ids:
            raise ValueError("an answer score needs at least one answer id")
        object.__setattr__(self, "answer_ids", ids)

    @property
    def n_scored(self) -> int:
        """K: how many of the run's last positions are scored."""
        return len(self.answer_ids)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``[..., K]`` float32 probabilities of the K pieces from logits ``[..., K, d_vocab]`` (the
        run's last K positions; any dtype): softmax over the full vocabulary in float32."""
        probs = torch.softmax(logits.float(), dim=-1)
        index = torch.as_tensor(self.answer_ids, device=probs.device)
        return probs[..., torch.arange(self.n_scored, device=probs.device), index]

    def row_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Each row's score ``[...]`` from ``[..., K, d_vocab]``: the piece's probability (K = 1,
        float32) or the product of the K pieces' probabilities (float64). Differentiable."""
        probs = self.probabilities(logits)
        return probs[..., 0] if self.n_scored == 1 else probs.double().prod(dim=-1)

    def reduce(self, probs: torch.Tensor) -> torch.Tensor:
        """The score ``[...]`` (float64) of per-row probabilities ``[..., S, K]``: K = 1, the mean
        over the S rows in float32 (ROME's mean probability); K > 1, the mean of the rows' products."""
        if probs.shape[-1] == 1:
            return probs[..., 0].mean(dim=-1).double()
        return probs.double().prod(dim=-1).mean(dim=-1)

    def score(self, logits: torch.Tensor) -> float:
        """A run's score from its logits ``[S, T, d_vocab]`` (or its last K positions' ``[S, K, d_vocab]``)."""
        return float(self.reduce(self.probabilities(self.scored(logits))))

    def scored(self, logits: torch.Tensor) -> torch.Tensor:
        """The scored positions' logits ``[..., K, d_vocab]`` of ``[..., T, d_vocab]``."""
        return logits[..., logits.shape[-2] - self.n_scored:, :]

    def piece_probabilities(self, logits: torch.Tensor) -> list[float]:
        """Each piece's probability, averaged over the rows, from logits ``[S, T, d_vocab]``."""
        return [float(p) for p in self.probabilities(self.scored(logits)).double().mean(dim=0)]

    def record(self) -> dict:
        return {"metric": "answer_probability", "answer_ids": list(self.answer_ids)}
