"""What an intervention restores, as data (ROME's "restore one state in the corrupted run").

A :class:`Restore` sets, in every corrupted row of a run, the activation at one hook site of some
layers and positions to a source run's values there: the same prompt's clean run (causal tracing,
ROME's ``trace_with_patch``), or the clean run of another prompt added to the
:class:`~spiritlens.interventions.run.InterventionRun` (cross-modal patching, "restore from another
prompt"), at the paired ``source_positions``. An intervention (one cell of a trace) is a tuple of
restores applied together in one run. Sites are TransformerLens' hook points
(:mod:`spiritlens.model.hook_names`): ``resid_post`` = ``blocks.{l}.hook_resid_post`` (ROME's hidden
state), ``mlp_out`` = ``blocks.{l}.hook_mlp_out``, ``attn_out`` = ``blocks.{l}.hook_attn_out``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from spiritlens.model import hook_names

SITES: tuple[str, ...] = tuple(hook_names.BY_SITE)
# causal tracing's kinds (spiritlens.terms.KINDS) and the site each restores
KIND_SITE: dict[str, str] = {"hidden": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}
CLEAN = "clean"


def site_hook(site: str, layer: int) -> str:
    """The TransformerLens hook name of ``site`` at ``layer``."""
    return hook_names.BY_SITE[site](layer)


@dataclass(frozen=True)
class Restore:
    """Set ``site`` at ``layers`` and ``positions`` (token positions of the run) to the ``source`` run's
    values at ``source_positions`` (default: the same positions), in every corrupted row.

    ``source``: ``"clean"`` (this prompt's clean run) or the name of a source run.
    Raises ValueError for an unknown site, no layer or position, negative or repeated positions,
    or source positions of another length.
    """

    site: str
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    source: str = CLEAN
    source_positions: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.site not in SITES:
            raise ValueError(f"unknown restore site {self.site!r}; use one of {', '.join(SITES)}")
        layers, positions = _ints("layers", self.layers), _ints("positions", self.positions)
        if len(set(positions)) != len(positions):
            raise ValueError(f"restore positions {list(positions)} repeat a position")
        source = positions if self.source_positions is None else _ints("source_positions", self.source_positions)
        if len(source) != len(positions):
            raise ValueError(f"restore has {len(positions)} positions but {len(source)} source positions")
        object.__setattr__(self, "layers", tuple(sorted(set(layers))))
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "source_positions", source)

    def describe(self) -> str:
        layers = f"{self.layers[0]}" if len(self.layers) == 1 else f"{self.layers[0]}..{self.layers[-1]}"
        return f"{self.site}[{layers}] at {list(self.positions)} from {self.source}"


def _ints(what: str, values: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"restore {what} must be integers, got {values!r}") from None
    if not out or min(out) < 0:
        raise ValueError(f"restore {what} must be a non-empty list of integers >= 0, got {list(values)!r}")
    return out


Intervention = tuple[Restore, ...]


def as_intervention(value: "Restore | Sequence[Restore]") -> Intervention:
    """One restore or several applied together, as a tuple."""
    if isinstance(value, Restore):
        return (value,)
    items = tuple(value)
    if not items or not all(isinstance(r, Restore) for r in items):
        raise ValueError(f"an intervention is a Restore or a non-empty sequence of them, got {value!r}")
    return items
