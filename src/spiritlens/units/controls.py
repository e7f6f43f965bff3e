"""Prosody controls of a SpiritLM Expressive utterance: its pitch or style stream changed, re-merged.

A control keeps the HuBERT stream as it is and changes the per-code pitch stream (one code per 80 ms,
12.5 Hz) or style stream (one code per second), then interleaves the three streams again with
:func:`spiritlens.units.expressive.merge_units`, the one place SpiritLM's ``units_to_string`` rule
lives (deduplication of HuBERT and pitch runs, time ``index / rate``, ties style < pitch < HuBERT).
So the controlled token sequence is exactly what SpiritLM's tokenizer would write for those streams.

=================  ========  ===================================================================
control            stream    what it does (per-code streams, before deduplication)
=================  ========  ===================================================================
``original``       none      nothing (the merge is re-run and must give the same tokens)
``flat_pitch``     pitch     every code set to one code (``code``; default the utterance's most
                             frequent pitch code, the smallest on ties): a monotone voice. After
                             deduplication the pitch stream is one token at time 0 spanning the
                             whole utterance, so it overlaps every word.
``shuffled_pitch`` pitch     the runs (a code and its length in codes) put in a seeded random order
                             (``numpy.random.RandomState(seed).permutation``): the same codes for
                             the same total time, no longer under the same words; runs of one code
                             that become neighbours merge, as SpiritLM's deduplication merges them.
``other_pitch``    pitch     another recording's pitch codes, index by index (both grids start at
                             sample 0 at 12.5 Hz, so index j is the same 80 ms of both), truncated
                             to this utterance's length or padded with the donor's last code.
                             Padding by the last code adds no token after deduplication (it only
                             lengthens the last run): no code of this speaker remains and no code
                             is invented.
``style_code``     style     every style code set to one code (``code``; default the smallest code
                             this utterance does not use).
``other_style``    style     another recording's style codes, index by index (one second each),
                             truncated or padded with its last code (style is not deduplicated, so
                             a padded second repeats the donor's last style token).
=================  ========  ===================================================================

Controls need an utterance encoded as one chunk (under SpiritLM's 100 s chunk), the case of every
spoken prompt; a longer one is refused rather than re-chunked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from spiritlens.units.expressive import ExpressiveUnits, merge_units, stream_runs

CONTROLS = ("original", "flat_pitch", "shuffled_pitch", "other_pitch", "style_code", "other_style")
CONTROL_STREAM = {"original": None, "flat_pitch": "pitch", "shuffled_pitch": "pitch", "other_pitch": "pitch",
                  "style_code": "style", "other_style": "style"}
NEEDS_DONOR = ("other_pitch", "other_style")
CONTROL_LABELS = {"original": "original", "flat_pitch": "pitch flattened", "shuffled_pitch": "pitch shuffled",
                  "other_pitch": "pitch of another prompt", "style_code": "style set to one code",
                  "other_style": "style of another prompt"}


@dataclass(frozen=True)
class ProsodyControl:
    """One control (module docstring). ``code``: the code of ``flat_pitch`` / ``style_code`` (None: the
    default rule); ``seed``: the shuffle's seed. Raises ValueError for an unknown name, a negative code,
    a code given to a control that takes none, or a negative seed."""

    name: str
    code: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.name not in CONTROLS:
            raise ValueError(f"unknown prosody control {self.name!r}; use one of {', '.join(CONTROLS)}")
        if self.code is not None:
            if self.name not in ("flat_pitch", "style_code"):
                raise ValueError(f"prosody control {self.name!r} takes no code (only flat_pitch and style_code do)")
            if isinstance(self.code, bool) or not isinstance(self.code, (int, np.integer)) or self.code < 0:
                raise ValueError(f"prosody control {self.name!r}: code must be an integer >= 0, got {self.code!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2**32:
            raise ValueError(f"prosody control {self.name!r}: seed must be an integer in [0, 2**32), got {self.seed!r}")

    @property
    def stream(self) -> str | None:
        """The stream it changes (``"pitch"``, ``"style"``; None for ``original``)."""
        return CONTROL_STREAM[self.name]

    @property
    def needs_donor(self) -> bool:
        return self.name in NEEDS_DONOR

    def record(self) -> dict:
        """JSON-ready settings (results and run keys)."""
        return {"control": self.name, "code": None if self.code is None else int(self.code),
                "seed": int(self.seed) if self.name == "shuffled_pitch" else None}


def as_control(control: "ProsodyControl | str") -> ProsodyControl:
    return control if isinstance(control, ProsodyControl) else ProsodyControl(str(control))


def _one_chunk(units: ExpressiveUnits, what: str) -> None:
    if not (len(units.hubert.chunks) == len(units.pitch_chunks) == len(units.style_chunks) == 1):
        raise ValueError(f"{what}: prosody controls need an utterance encoded as one chunk (under 100 s); this one "
                         f"has {len(units.hubert.chunks)} chunks")


def _index_aligned(codes: list[int], donor: list[int], what: str) -> list[int]:
    """``donor`` cut or padded (with its last code) to ``len(codes)``."""
    if not donor:
        raise ValueError(f"{what}: the donor recording has no codes")
    return list(donor[:len(codes)]) + [donor[-1]] * max(0, len(codes) - len(donor))


def controlled_streams(units: ExpressiveUnits, control: "ProsodyControl | str",
                       donor: ExpressiveUnits | None = None) -> dict[str, list[int]]:
    """The per-code streams ``{"hubert", "pitch", "style"}`` after ``control`` (module docstring); the
    streams it does not change are the utterance's own. ``donor``: the recording whose stream
    ``other_pitch`` / ``other_style`` take. Raises ValueError for a missing or unneeded donor, or an
    utterance of more than one chunk."""
    control = as_control(control)
    _one_chunk(units, f"control {control.name}")
    if control.needs_donor and donor is None:
        raise ValueError(f"prosody control {control.name!r} needs a donor recording (another prompt's units)")
    if donor is not None and not control.needs_donor:
        raise ValueError(f"prosody control {control.name!r} takes no donor")
    streams = units.streams()
    pitch, style = streams["pitch"], streams["style"]
    if control.name == "flat_pitch":
        counts = Counter(pitch)
        code = control.code if control.code is not None else min(counts, key=lambda c: (-counts[c], c))
        streams["pitch"] = [int(code)] * len(pitch)
    elif control.name == "shuffled_pitch":
        runs = stream_runs(pitch, dedup=True)
        order = np.random.RandomState(control.seed).permutation(len(runs))
        streams["pitch"] = [runs[k][0] for k in order for _ in range(runs[k][2] - runs[k][1])]
    elif control.name == "other_pitch":
        _one_chunk(donor, "the donor of other_pitch")
        streams["pitch"] = _index_aligned(pitch, donor.pitch, "other_pitch")
    elif control.name == "style_code":
        used = set(style)
        code = control.code if control.code is not None else next(c for c in range(len(used) + 1) if c not in used)
        streams["style"] = [int(code)] * len(style)
    elif control.name == "other_style":
        _one_chunk(donor, "the donor of other_style")
        streams["style"] = _index_aligned(style, donor.style, "other_style")
    return streams


def apply_control(units: ExpressiveUnits, control: "ProsodyControl | str",
                  donor: ExpressiveUnits | None = None) -> ExpressiveUnits:
    """``units`` with ``control`` applied and the three streams re-merged by SpiritLM's rule
    (:func:`~spiritlens.units.expressive.merge_units`): tokens, their frame and time spans. The F0 track
    (``f0``, ``vuv``) is dropped: it no longer describes the codes. Raises ValueError as
    :func:`controlled_streams`, or when re-merging this utterance's own streams does not give back its
    tokens (units not made by :class:`~spiritlens.units.expressive.ExpressiveTokenizer`)."""
    control = as_control(control)
    streams = controlled_streams(units, control, donor)
    end = [units.hubert.num_samples]
    merge = dict(pitch_chunks=units.pitch_chunks, style_chunks=units.style_chunks, chunk_ends=end,
                 pitch_code_samples=units.pitch_code_samples, style_code_samples=units.style_code_samples)
    again = merge_units(units.hubert, units.pitch, units.style, **merge)
    if again.tokens != units.tokens:
        raise ValueError("these Expressive units do not re-merge to their own tokens (not made by SpiritLM's "
                         "tokenizer rule, or cut at another chunk end): refusing to re-merge a control")
    if control.name == "original":
        return again
    return merge_units(units.hubert, streams["pitch"], streams["style"], **merge)


__all__ = ["CONTROLS", "CONTROL_LABELS", "CONTROL_STREAM", "NEEDS_DONOR", "ProsodyControl", "apply_control",
           "as_control", "controlled_streams"]
