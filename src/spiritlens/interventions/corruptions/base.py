"""The corrupted run's input: what a corruption changes, declared so every backend applies it alike."""

from __future__ import annotations

from typing import Callable, ClassVar

import torch


class Corruption:
    """Base of the corruptions (ROME's "noise the subject" and its alternatives).

    A corruption says how the ``samples`` corrupted rows differ from the clean run: their token ids
    (:meth:`rows`, default: the clean ids repeated) and a TransformerLens hook at ``hook_embed``
    (:meth:`embed_hook`, default: none), and the first position whose input differs
    (``first_position``: restoring the clean run's states before it changes nothing, by causality).
    Subclasses are frozen dataclasses with a ``name`` registered in
    :data:`spiritlens.interventions.corruptions.CORRUPTIONS`.
    """

    name: ClassVar[str] = ""
    samples: int
    first_position: int

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``[samples, T]`` of the corrupted rows, from the clean run's ``[1, T]``."""
        return ids.expand(self.samples, -1)

    def embed_hook(self, copies: int = 1) -> Callable | None:
        """A hook ``fn(act, hook)`` at ``hook_embed`` for ``copies * samples`` rows (the rows of
        ``copies`` interventions run in one batch, each ``samples`` rows), or None."""
        return None

    def baseline(self) -> "Corruption":
        """The corruption ``low_score`` is measured under (itself, except ROME's replace quirk)."""
        return self

    def record(self) -> dict:
        """The settings recorded in results and run keys (JSON-ready)."""
        return {"corruption": self.name, "samples": self.samples}
