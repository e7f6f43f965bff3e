"""ROME's corruption: noise added to (or written over) the subject's token embeddings.

``numpy.random.RandomState(seed).randn(samples, e - b, d_model)`` (float64, C order; ``.uniform(-1,
1, …)`` for a ``u`` rule), times the absolute scale, drawn once per prompt and shared by every cell
(ROME re-creates the generator in every forward, which is the same draw). Added **in place** in
float64 at ``hook_embed`` on rows' positions ``[b, e)``, so the sum is rounded once to the
activation dtype (CAUSAL_TRACING §2 of the project notes; ROME ``trace_with_patch``). With
``replace`` the embeddings are overwritten instead; ROME's quirk measures ``low_score`` with additive
noise even then, unless ``low_score_follows_replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace as copy_with
from typing import Callable, ClassVar

import numpy as np
import torch

from spiritlens.interventions.corruptions.base import Corruption

DISTRIBUTIONS = ("normal", "uniform")
# Noise beyond this overflows float32 activations (max 3.4e38) after a block's matrix products; ROME's 3 sigma
# of a Llama's embeddings is about 0.05.
MAX_SCALE = 1e6


@dataclass(frozen=True)
class EmbeddingNoise(Corruption):
    """Noise of absolute ``scale`` at positions ``[start, end)`` of ``samples`` rows (module docstring).

    ``positions``: the noised positions when they are not one range (e.g. a spoken subject's tokens of
    one Expressive stream), sorted and unique; the draw is then ``[samples, len(positions), d_model]`` in
    that order (for a range, the same draw as ``[start, end)``); ``start``/``end`` are their first and
    one past their last. ``distribution``: ``"normal"`` (z ~ N(0, 1)) or ``"uniform"`` (u ~ U(-1, 1)); ``rule``: the noise
    rule as given (``"3s"``, ``"0.1"``...), recorded. Raises ValueError for samples < 1, an empty or
    negative range, a negative or non-finite scale, or replace with uniform noise.
    """

    name: ClassVar[str] = "noise"
    scale: float
    samples: int
    seed: int
    start: int
    end: int
    d_model: int
    distribution: str = "normal"
    replace: bool = False
    low_score_follows_replace: bool = False
    rule: str = ""
    positions: tuple[int, ...] | None = None
    _draw: list = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self):
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {self.samples!r}")
        if self.positions is not None:
            positions = tuple(sorted({int(p) for p in self.positions}))
            if not positions or positions[0] < 0 or (self.start, self.end) != (positions[0], positions[-1] + 1):
                raise ValueError(f"noised positions {list(self.positions)} must be non-negative and span "
                                 f"[start, end) = [{self.start}, {self.end})")
            object.__setattr__(self, "positions", positions)
        if not 0 <= self.start < self.end:
            raise ValueError(f"noised positions [{self.start}, {self.end}) are empty or negative")
        if not np.isfinite(self.scale) or not 0 <= self.scale <= MAX_SCALE:
            raise ValueError(f"noise scale must be a number in 0..{MAX_SCALE:g}, got {self.scale!r} (larger noise "
                             "overflows float32 activations: every score would be NaN)")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown noise distribution {self.distribution!r}; use one of {', '.join(DISTRIBUTIONS)}")
        if self.replace and self.distribution == "uniform":
            raise ValueError("replace mode takes Gaussian noise, not a uniform rule")

    @property
    def first_position(self) -> int:  # type: ignore[override]
        return self.start

    def draw(self) -> np.ndarray:
        """``[samples, end - start, d_model]`` float64, already scaled (drawn once, then kept)."""
        if not self._draw:
            rng = np.random.RandomState(self.seed)
            shape = (self.samples, len(self.noised), self.d_model)
            z = rng.uniform(-1, 1, shape) if self.distribution == "uniform" else rng.randn(*shape)
            self._draw.append(self.scale * z)
        return self._draw[0]

    @property
    def noised(self) -> tuple[int, ...] | range:
        """The noised positions, in the draw's order."""
        return self.positions if self.positions is not None else range(self.start, self.end)

    def embed_hook(self, copies: int = 1) -> Callable:
        where = slice(self.start, self.end) if self.positions is None else list(self.positions)
        replace = self.replace
        z = torch.from_numpy(self.draw())
        if copies > 1:
            z = z.repeat(copies, 1, 1)  # every intervention's S rows get the same draw
        on_device: dict = {}

        def corrupt(act, hook):
            noise = on_device.get(act.device)
            if noise is None:
                noise = on_device[act.device] = z.to(act.device)
            if replace:
                act[:, where] = noise.to(act.dtype)
            else:
                act[:, where] += noise  # float64 sum, rounded once to act's dtype
            return act

        return corrupt

    def baseline(self) -> "EmbeddingNoise":
        if self.replace and not self.low_score_follows_replace:
            return copy_with(self, replace=False)  # ROME's quirk: low_score with additive noise
        return self

    def record(self) -> dict:
        return {"corruption": self.name, "noise": self.scale, "noise_rule": self.rule, "samples": self.samples,
                "seed": self.seed, "distribution": self.distribution, "replace": self.replace,
                "low_score_follows_replace": self.low_score_follows_replace,
                "positions": list(self.positions) if self.positions is not None else [self.start, self.end]}
