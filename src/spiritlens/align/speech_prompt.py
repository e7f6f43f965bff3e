"""A spoken prompt for speech->text causal tracing (the paper's Appendix A).

From audio and its transcript:

1. the audio becomes SpiritLM's deduplicated ``[Hu…]`` tokens, each with its 25 Hz frame span;
2. a forced aligner aligns the spoken form of the transcript: the paper's path, a character CTC
   model with ctc-segmentation (CTC frames per spoken word), or pocketsphinx's US-English model
   (10 ms frames per spoken word); ``Alignment.frame_unit`` names the frames;
3. the transcript's own LM text tokens (SpiritLM's tokenizer) get the aligner frames of the words
   they overlap, and those frames are mapped to speech-token positions: ``exact`` by each token's
   frame span (default; aligner frames become 25 Hz frames by the ratio of frame durations), or
   ``paper`` by formulas (1)-(2) with a uniform 25 Hz token rate;
4. the prompt is ``<s>[Speech][Hu…]…[Text]``; its rows for tracing are groups of positions: BOS,
   ``[Speech]``, the speech tokens of each LM text token (a token straddling two words counts for
   both), runs of speech tokens in silence (reported, and in no category), and the final ``[Text]``
   marker, which is the "last token" of the six categories.

**Expressive** (``spirit-lm-expressive-7b``): the prompt is ``<s>[Speech][St…][Pi…][Hu…]…[Text]`` with
pitch and style tokens interleaved by time (:mod:`spiritlens.units.expressive`). Every speech token has
a span in the 25 Hz HuBERT frame grid (a pitch token 2 frames per 80 ms code, a style token the 25
frames of its second), and a text token's group is every speech token, of any stream, whose span
overlaps the text token's aligned frames (:func:`spiritlens.align.group_overlapping_tokens`, the
``exact`` rule; the ``paper`` rule's uniform 25 Hz index does not apply to an interleaved sequence and
is refused). A style token usually overlaps several words and then belongs to each of their groups,
so it joins the subject's categories when it overlaps a subject word and the "further tokens" when it
overlaps a later one; tokens overlapping no word are silence, as before. The subject range is
``[first, last + 1)`` over its groups' positions; with style tokens this can reach back over a few
positions of the previous word (a style token sorts at the start of its second).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from spiritlens.align.aligner import get_aligner
from spiritlens.align.ctc import Alignment, TokenFrameMap, map_words_to_text_tokens
from spiritlens.align.emissions import CTCAligner, Emissions, align_with_emissions
from spiritlens.align.mapping import SpeechTokenMap, group_overlapping_tokens, map_frames_to_speech_tokens
from spiritlens.align.pocketsphinx import PocketsphinxAligner
from spiritlens.audio.waveform import Waveform, load_audio
from spiritlens.tokens.prompt import find_span
from spiritlens.tokens.trace_prompt import TracePrompt, display_tokens
from spiritlens.tokens.trace_prompt import Row


@dataclass
class SpeechPrompt:
    """Audio + transcript + subject, aligned and mapped to SpiritLM positions.

    ``text_tokens[i]``: the i-th LM text token of the transcript and its characters ``[start, end)``;
    ``speech_map.items[i]``: its speech-token indices ``[token_start, token_end)`` (None: none);
    ``speech_offset``: the position of the first speech token in ``input_ids``; ``emissions``: the
    CTC emissions (``None`` for pocketsphinx); ``reference_words``: where the synthesiser put each
    word (ground truth, :class:`spiritlens.data.WordTime` dicts) when known, drawn in the figure.
    """

    waveform: Waveform
    transcript: str
    subject: str
    units: Any  # spiritlens.units.SpeechUnits, or ExpressiveUnits for the Expressive model
    emissions: Emissions | None
    alignment: Alignment
    text_tokens: list[tuple[str, tuple[int, int]]]
    token_frames: TokenFrameMap
    speech_map: SpeechTokenMap
    subject_tokens: list[int]
    input_ids: list[int]
    speech_offset: int
    mapping: str = "exact"
    warnings: list[str] = field(default_factory=list)
    reference_words: list[dict] | None = None
    speech_groups: list[tuple[int, ...] | None] | None = None  # Expressive: speech-token indices per text token
    labels: list[str] = field(default_factory=list)  # readable token per position (display_tokens)

    @classmethod
    def from_audio(cls, model, audio: Any, *, transcript: str, subject: str,
                   aligner: CTCAligner | PocketsphinxAligner | str | os.PathLike, mapping: str = "exact",
                   occurrence: str = "unique", sample_rate: int | None = None,
                   min_confidence: float | None = None, reference_words=None) -> "SpeechPrompt":
        """Tokenise, align and map a spoken prompt. ``aligner``: a :class:`CTCAligner` or
        :class:`PocketsphinxAligner`, a CTC model directory, or ``"pocketsphinx"``
        (:func:`spiritlens.align.get_aligner`). ``reference_words``: the synthesiser's word times, if
        known (``WordTime`` objects or dicts), kept for the figure. Low alignment confidence is a
        warning, recorded in :attr:`warnings`."""
        if not transcript or not transcript.strip():
            raise ValueError("transcript is empty")
        if mapping not in ("exact", "paper"):
            raise ValueError(f"unknown mapping {mapping!r}; use 'exact' or 'paper'")
        subject_chars = find_span(transcript, subject, occurrence=occurrence, where=f"the transcript {transcript!r}")
        wave = load_audio(audio, sample_rate)
        units = model.speech_tokenizer.encode(wave)
        hubert = getattr(units, "hubert", units)  # Expressive units carry their HuBERT units
        if hubert is not units and mapping != "exact":
            raise ValueError(f"mapping {mapping!r} assumes one 25 Hz HuBERT token after another; Expressive "
                             "prompts interleave pitch and style tokens: use mapping='exact'")
        aligner = get_aligner(aligner)
        kwargs = {} if min_confidence is None else {"min_confidence": min_confidence}
        emissions = aligner.emissions(wave) if isinstance(aligner, CTCAligner) else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if emissions is not None:
                alignment = align_with_emissions(emissions, transcript, **kwargs)
            else:
                alignment = aligner.align(wave, transcript, **kwargs)
        notes = [str(w.message) for w in caught]
        for caught_warning in caught:  # re-issued with its own category, at the caller
            warnings.warn(caught_warning.message, stacklevel=2)

        _, text_map = model.encode([("text", transcript)])
        text_tokens = [(model.tokenizer.convert_ids_to_tokens(p.token_id).replace("▁", " "), p.char_span)
                       for p in text_map.positions if p.kind == "text"]
        token_frames = map_words_to_text_tokens(alignment.words, [span for _, span in text_tokens])
        speech_map = map_frames_to_speech_tokens(
            token_frames.ctc_spans, hubert.spans, mode=mapping, ctc_frame_seconds=alignment.frame_seconds,
            unit_frame_seconds=hubert.frame_seconds, num_samples=alignment.num_samples,
            num_ctc_frames=alignment.num_frames, sample_rate=alignment.sample_rate,
        )
        speech_groups = None if hubert is units else group_overlapping_tokens(
            token_frames.ctc_spans, units.spans, ctc_frame_seconds=alignment.frame_seconds,
            unit_frame_seconds=hubert.frame_seconds)
        a, b = subject_chars
        subject_tokens = [i for i, (_, (s, e)) in enumerate(text_tokens) if s < b and e > a]
        speech_map.range_of(subject_tokens)  # error if the subject got no speech token
        ids, token_map = model.encode([("speech", units)])
        offset = next(p.position for p in token_map.positions if p.kind == "speech")
        reference = None if reference_words is None else [
            w if w is None or isinstance(w, dict) else w.to_dict() for w in reference_words]
        return cls(wave, transcript, subject, units, emissions, alignment, text_tokens, token_frames,
                   speech_map, subject_tokens, ids[0].tolist(), offset, mapping, notes, reference, speech_groups,
                   display_tokens(model, ids[0].tolist()))

    def __repr__(self) -> str:
        return (f"SpeechPrompt({self.transcript!r}, subject={self.subject!r}, {len(self.input_ids)} tokens, "
                f"subject_range={self.subject_range}, {self.waveform.samples.shape[0] / self.waveform.sample_rate:.2f} s, "
                f"confidence={self.confidence:.3f}, mapping={self.mapping!r})")

    @property
    def confidence(self) -> float:
        return float(self.alignment.confidence)

    @property
    def subject_range(self) -> tuple[int, int]:
        """The subject's speech-token positions [b, e) in ``input_ids``."""
        if self.speech_groups is not None:
            hits = [k for i in self.subject_tokens for k in (self.speech_groups[i] or ())]
            return self.speech_offset + min(hits), self.speech_offset + max(hits) + 1
        k0, k1 = self.speech_map.range_of(self.subject_tokens)
        return self.speech_offset + k0, self.speech_offset + k1

    def token_groups(self) -> list[tuple[int, ...] | None]:
        """Speech-token indices (in the prompt's speech sequence) of each text token; ``None``: none."""
        if self.speech_groups is not None:
            return list(self.speech_groups)
        return [None if item.token_start is None else tuple(range(item.token_start, item.token_end))
                for item in self.speech_map.items]

    def silence_tokens(self) -> list[int]:
        """Speech-token indices that no text token's group holds (silence)."""
        if self.speech_groups is None:
            return list(self.speech_map.silence_tokens)
        covered = {k for group in self.speech_groups if group for k in group}
        return [k for k in range(len(self.units.tokens)) if k not in covered]

    def groups(self) -> tuple[list[Row], tuple[int, int], list[int]]:
        """Rows of position groups, the subject's rows [b, e) and the silence rows (see module doc)."""
        T, offset = len(self.input_ids), self.speech_offset
        spans = []  # (first position, label, positions, text token index or None)
        for index, (group, (label, _)) in enumerate(zip(self.token_groups(), self.text_tokens)):
            if group:
                spans.append((offset + group[0], label, [offset + k for k in group], index))
        silence = self.silence_tokens()
        run: list[int] = []
        for k in silence + [None]:
            if run and (k is None or k != run[-1] + 1):
                spans.append((offset + run[0], "<sil>", [offset + j for j in run], None))
                run = []
            if k is not None:
                run.append(k)
        spans.sort(key=lambda s: (s[0], s[3] is None))
        # one row per position before the speech (BOS, the family's markers: SpiritLM's <s> ▁ [Speech]) and
        # after it (SpiritLM's [Text]), labelled by its token
        labels = self.labels or [f"pos {p}" for p in range(T)]
        end = offset + len(self.units.tokens)
        rows = [Row(labels[p], [p]) for p in range(offset)]
        head = len(rows)
        rows += [Row(label, positions) for _, label, positions, _ in spans]
        rows += [Row(labels[p], [p]) for p in range(end, T)]
        subject_rows = [i + head for i, s in enumerate(spans) if s[3] in self.subject_tokens]
        ignored = [i + head for i, s in enumerate(spans) if s[3] is None]
        return rows, (min(subject_rows), max(subject_rows) + 1), ignored

    def trace_prompt(self, model) -> TracePrompt:
        """The :class:`TracePrompt` the tracing engine takes (positions, subject, groups)."""
        rows, subject_rows, ignored = self.groups()
        return TracePrompt(
            list(self.input_ids), display_tokens(model, self.input_ids), self.subject_range,
            modality="speech", prompt=self.transcript, subject=self.subject, groups=rows,
            group_subject_rows=subject_rows, group_ignored_rows=ignored,
            extra={"mapping": self.mapping, "aligner": self.alignment.method,
                   "alignment_frame_unit": self.alignment.frame_unit, "alignment_confidence": self.confidence,
                   "alignment_min_confidence": self.alignment.min_confidence,
                   "alignment_low_confidence": bool(self.alignment.low_confidence),
                   "alignment_coverage": self.alignment.coverage,
                   "unmapped_text_tokens": [self.text_tokens[i][0] for i in self.speech_map.unmapped],
                   "silence_tokens": [self.speech_offset + k for k in self.silence_tokens()],
                   "alignment_warnings": list(self.warnings)},
        )

    def alignment_json(self) -> dict:
        """Words (CTC frames, seconds, scores), text tokens with CTC frames and speech positions."""
        tokens = []
        for (label, span), frames, group in zip(self.text_tokens, self.token_frames.tokens, self.token_groups()):
            entry = {
                "token": label, "char_span": list(span),
                "ctc_frames": None if frames.start_frame is None else [frames.start_frame, frames.end_frame],
                "speech_positions": None if not group else
                [self.speech_offset + group[0], self.speech_offset + group[-1] + 1],
            }
            if self.speech_groups is not None:  # Expressive: the group need not be contiguous
                entry["speech_group"] = None if not group else [self.speech_offset + k for k in group]
            tokens.append(entry)
        return {"mapping": self.mapping, "aligner": self.alignment.method, "frame_unit": self.alignment.frame_unit,
                "confidence": self.confidence, "words": self.alignment.to_dict(),
                "text_tokens": tokens, "subject_range": list(self.subject_range),
                "units": self.units.to_json(), "warnings": list(self.warnings),
                "reference_words": self.reference_words}

