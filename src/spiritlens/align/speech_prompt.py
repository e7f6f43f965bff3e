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
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from spiritlens.align import (
    Alignment,
    CTCAligner,
    Emissions,
    PocketsphinxAligner,
    SpeechTokenMap,
    TokenFrameMap,
    align_with_emissions,
    get_aligner,
    map_frames_to_speech_tokens,
    map_words_to_text_tokens,
)
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
    units: Any  # spiritlens.units.SpeechUnits
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
            token_frames.ctc_spans, units.spans, mode=mapping, ctc_frame_seconds=alignment.frame_seconds,
            unit_frame_seconds=units.frame_seconds, num_samples=alignment.num_samples,
            num_ctc_frames=alignment.num_frames, sample_rate=alignment.sample_rate,
        )
        a, b = subject_chars
        subject_tokens = [i for i, (_, (s, e)) in enumerate(text_tokens) if s < b and e > a]
        speech_map.range_of(subject_tokens)  # error if the subject got no speech token
        ids, token_map = model.encode([("speech", units)])
        offset = next(p.position for p in token_map.positions if p.kind == "speech")
        reference = None if reference_words is None else [
            w if w is None or isinstance(w, dict) else w.to_dict() for w in reference_words]
        return cls(wave, transcript, subject, units, emissions, alignment, text_tokens, token_frames,
                   speech_map, subject_tokens, ids[0].tolist(), offset, mapping, notes, reference)

    @property
    def confidence(self) -> float:
        return float(self.alignment.confidence)

    @property
    def subject_range(self) -> tuple[int, int]:
        """The subject's speech-token positions [b, e) in ``input_ids``."""
        k0, k1 = self.speech_map.range_of(self.subject_tokens)
        return self.speech_offset + k0, self.speech_offset + k1

    def groups(self) -> tuple[list[Row], tuple[int, int], list[int]]:
        """Rows of position groups, the subject's rows [b, e) and the silence rows (see module doc)."""
        T, offset = len(self.input_ids), self.speech_offset
        spans = []  # (first position, label, positions, text token index or None)
        for item, (label, _) in zip(self.speech_map.items, self.text_tokens):
            if item.token_start is not None:
                spans.append((offset + item.token_start, label,
                              [offset + k for k in range(item.token_start, item.token_end)], item.item))
        silence = list(self.speech_map.silence_tokens)
        run: list[int] = []
        for k in silence + [None]:
            if run and (k is None or k != run[-1] + 1):
                spans.append((offset + run[0], "<sil>", [offset + j for j in run], None))
                run = []
            if k is not None:
                run.append(k)
        spans.sort(key=lambda s: (s[0], s[3] is None))
        # BOS, SentencePiece's lone ▁ when the markers are its pieces (<s> ▁ [Speech] …), [Speech]
        rows = [Row("<s>", [0])] + [Row("␣", [p]) for p in range(1, offset - 1)] + [Row("[Speech]", [offset - 1])]
        head = len(rows)
        rows += [Row(label, positions) for _, label, positions, _ in spans]
        rows.append(Row("[Text]", [T - 1]))
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
                   "silence_tokens": [self.speech_offset + k for k in self.speech_map.silence_tokens],
                   "alignment_warnings": list(self.warnings)},
        )

    def alignment_json(self) -> dict:
        """Words (CTC frames, seconds, scores), text tokens with CTC frames and speech positions."""
        tokens = []
        for (label, span), frames, item in zip(self.text_tokens, self.token_frames.tokens, self.speech_map.items):
            tokens.append({
                "token": label, "char_span": list(span),
                "ctc_frames": None if frames.start_frame is None else [frames.start_frame, frames.end_frame],
                "speech_positions": None if item.token_start is None else
                [self.speech_offset + item.token_start, self.speech_offset + item.token_end],
            })
        return {"mapping": self.mapping, "aligner": self.alignment.method, "frame_unit": self.alignment.frame_unit,
                "confidence": self.confidence, "words": self.alignment.to_dict(),
                "text_tokens": tokens, "subject_range": list(self.subject_range),
                "units": self.units.to_json(), "warnings": list(self.warnings),
                "reference_words": self.reference_words}

