"""Mean-embedding ablation: the subject's token embeddings replaced by one mean embedding (one row).

The mean is taken over a set of token ids' embedding rows (default: every text piece of the
vocabulary), the usual "mean ablation" reference (e.g. Wang et al. 2022, IOI) applied at
``hook_embed``. An example of a corruption added as one file plus one registry line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import torch

from spiritlens.interventions.corruptions.base import Corruption


@dataclass(frozen=True)
class MeanEmbedding(Corruption):
    """Write ``mean`` ``[d_model]`` over positions ``[start, end)`` at ``hook_embed`` (one row)."""

    name: ClassVar[str] = "mean"
    start: int
    end: int
    mean: torch.Tensor = field(compare=False)
    over: str = "text vocabulary"
    samples: int = 1

    def __post_init__(self):
        if not 0 <= self.start < self.end:
            raise ValueError(f"ablated positions [{self.start}, {self.end}) are empty or negative")
        if self.mean.dim() != 1 or not bool(torch.isfinite(self.mean).all()):
            raise ValueError(f"the mean embedding must be a finite [d_model] vector, got shape {tuple(self.mean.shape)}")

    @classmethod
    def of_tokens(cls, model, start: int, end: int, ids: Sequence[int] | None = None, over: str = "") -> "MeanEmbedding":
        """The mean of the embedding rows ``W_E[ids]`` (default: the model's text pieces, no markers
        or speech tokens)."""
        if ids is None:
            forbidden = set(model.forbidden_token_ids("text"))
            ids = [i for i in range(model.cfg.d_vocab) if i not in forbidden]
            over = over or "text vocabulary"
        weight = model.hf_model.get_input_embeddings().weight
        with torch.no_grad():
            mean = weight[torch.as_tensor(list(ids), device=weight.device)].float().mean(dim=0)
        return cls(start, end, mean, over or f"{len(ids)} tokens")

    @property
    def first_position(self) -> int:  # type: ignore[override]
        return self.start

    def embed_hook(self, copies: int = 1) -> Callable:
        b, e, mean = self.start, self.end, self.mean

        def ablate(act, hook):
            act[:, b:e] = mean.to(device=act.device, dtype=act.dtype)
            return act

        return ablate

    def record(self) -> dict:
        return {"corruption": self.name, "samples": 1, "positions": [self.start, self.end], "mean_over": self.over}
