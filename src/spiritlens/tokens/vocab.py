"""A model's special vocabulary, family-neutral: BOS/EOS, the marker ids its prompt rules write, and
the ids of its speech-unit tokens per stream. Each model family reads it from its own tokenizer
(:mod:`spiritlens.models`); nothing here knows a token's spelling."""

from __future__ import annotations

from dataclasses import dataclass

STREAMS: tuple[str, ...] = ("hubert", "pitch", "style")


@dataclass(frozen=True)
class Vocabulary:
    """Token ids of a model's special vocabulary, as found in one tokenizer.

    ``marker_ids``: the structure tokens the family's prompt rules write (never generated, never a
    subject); ``text_marker_id`` / ``speech_marker_id``: the markers that open text / speech, where the
    family has them (None otherwise); ``hubert_ids[u]``: the id of HuBERT unit ``u``'s token (empty for
    a text-only model); ``pitch_ids`` / ``style_ids``: Expressive streams (empty otherwise).
    """

    bos_id: int
    eos_id: int
    marker_ids: tuple[int, ...] = ()
    hubert_ids: tuple[int, ...] = ()
    pitch_ids: tuple[int, ...] = ()
    style_ids: tuple[int, ...] = ()
    text_marker_id: int | None = None
    speech_marker_id: int | None = None

    @property
    def is_expressive(self) -> bool:
        return bool(self.pitch_ids)

    @property
    def has_speech(self) -> bool:
        """Whether the vocabulary holds speech units (False for a text-only backbone)."""
        return bool(self.hubert_ids)

    @property
    def speech_ids(self) -> frozenset[int]:
        """Every id that belongs to the speech modality (HuBERT, pitch, style)."""
        return frozenset(self.hubert_ids) | frozenset(self.pitch_ids) | frozenset(self.style_ids)

    def stream_ids(self, stream: str) -> tuple[int, ...]:
        """The ids of one stream's units (``"hubert"``, ``"pitch"``, ``"style"``)."""
        return {"hubert": self.hubert_ids, "pitch": self.pitch_ids, "style": self.style_ids}[stream]

    def unit_of(self, token_id: int) -> int | None:
        """The HuBERT unit of ``token_id``, or None if it is not a HuBERT unit token."""
        return self._unit_by_id.get(token_id)

    @property
    def _unit_by_id(self) -> dict[int, int]:
        cached = self.__dict__.get("_units")
        if cached is None:
            cached = {tid: u for u, tid in enumerate(self.hubert_ids)}
            object.__setattr__(self, "_units", cached)
        return cached

    def max_id(self) -> int:
        """The largest special id (BOS and EOS included)."""
        return max([self.bos_id, self.eos_id, *self.marker_ids, *self.hubert_ids, *self.pitch_ids, *self.style_ids])
