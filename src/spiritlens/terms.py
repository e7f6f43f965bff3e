"""The shared vocabulary of spiritlens: one definition, and one name, for each concept.

- ``KINDS``: what causal tracing restores (ROME): the residual stream after a block (``hidden``), an MLP
  output or an attention output over a window of layers.
- ``MODALITIES``: the modality of a prompt segment or token: ``text`` or ``speech``.
  ``OUTPUT_MODALITIES``: what a prompt asks for next (SpiritLM's ``[Text]``/``[Speech]`` marker).
- ``DIRECTIONS``: the experiment's two directions, prompt modality -> text answer: ``t2t`` (T→T) and
  ``s2t`` (S→T), with ``DIRECTION_MODALITY`` (the prompt's modality), ``KNOWN_SUBSETS`` (the paper's
  names of the filtered datasets) and ``MODALITY_LABELS`` (figure and report labels by prompt modality).
- ``MAPPINGS``: how aligned seconds become speech-token positions (``exact`` unit frames, or the
  ``paper``'s rounding).
- ``PATCH_MODES`` and ``PATCH_DIRECTIONS``: the cross-modal patching analysis's position rule and which
  modality's state is patched into which run.
- Tracing methods (``exact``, ``attribution``, ``attribution_qk``) and the experiment's screens are a
  registry: :mod:`spiritlens.traces.methods`.
- ``VERIFY_RANKS``: how a screen's cells are ranked for verification (``estimate``: the estimated
  indirect effect; ``graddrop``: AtP*'s GradDrop magnitude).
"""

from __future__ import annotations

KINDS: tuple[str, ...] = ("hidden", "mlp", "attn")

MODALITIES: tuple[str, ...] = ("text", "speech")
OUTPUT_MODALITIES: tuple[str, ...] = ("text", "speech", "arbitrary")

DIRECTIONS: tuple[str, ...] = ("t2t", "s2t")
DIRECTION_MODALITY: dict[str, str] = {"t2t": "text", "s2t": "speech"}
KNOWN_SUBSETS: dict[str, str] = {"t2t": "Known-t2t", "s2t": "Known-s2t"}
MODALITY_LABELS: dict[str, str] = {"text": "T→T", "speech": "S→T"}

MAPPINGS: tuple[str, ...] = ("exact", "paper")

PATCH_MODES: tuple[str, ...] = ("last", "groups")
PATCH_DIRECTIONS: tuple[str, ...] = ("text_to_speech", "speech_to_text")

VERIFY_RANKS: tuple[str, ...] = ("estimate", "graddrop")
