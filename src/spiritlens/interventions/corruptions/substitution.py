"""Corruption by token substitution: the corrupted run reads other tokens at some positions
(e.g. another subject of the same length), one row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from spiritlens.interventions.corruptions.base import Corruption


@dataclass(frozen=True)
class TokenSubstitution(Corruption):
    """Replace the token at each of ``positions`` by the id at the same index of ``ids`` (one corrupted
    row). Raises ValueError for no position, negative or repeated positions, or lists of other lengths."""

    name: ClassVar[str] = "substitution"
    positions: tuple[int, ...]
    ids: tuple[int, ...]
    samples: int = 1

    def __post_init__(self):
        positions, ids = tuple(int(p) for p in self.positions), tuple(int(i) for i in self.ids)
        if not positions or min(positions) < 0 or len(set(positions)) != len(positions):
            raise ValueError(f"substituted positions must be distinct integers >= 0, got {list(self.positions)}")
        if len(ids) != len(positions):
            raise ValueError(f"{len(positions)} substituted positions but {len(ids)} replacement ids")
        if self.samples != 1:
            raise ValueError("a token substitution has one corrupted row (samples=1)")
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "ids", ids)

    @property
    def first_position(self) -> int:  # type: ignore[override]
        return min(self.positions)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        out = ids.clone()
        if max(self.positions) >= out.shape[1]:
            raise ValueError(f"substituted position {max(self.positions)} is outside the run's {out.shape[1]} tokens")
        out[:, list(self.positions)] = torch.as_tensor(self.ids, device=out.device)
        return out

    def record(self) -> dict:
        return {"corruption": self.name, "samples": 1, "positions": list(self.positions), "ids": list(self.ids)}
