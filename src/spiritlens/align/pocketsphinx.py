"""Forced alignment with pocketsphinx's bundled US-English acoustic model: a real aligner that works offline.

``PocketsphinxAligner().align(waveform, transcript)`` returns the same :class:`Alignment` /
:class:`WordSpan` types as the CTC path, in **pocketsphinx frames of 10 ms** (``frame_seconds =
0.01``, ``frame_unit = "pocketsphinx frame (10 ms)"``), so ``map_words_to_text_tokens`` and
``map_frames_to_speech_tokens`` take them unchanged (they convert frames to 25 Hz unit frames by
the ratio of frame durations).

Method (pocketsphinx 5):

1. The transcript is read by :func:`spiritlens.spoken.form.spoken_form`, the text the synthesiser said;
   its words, lower-cased, are the dictionary words.
2. Every word the bundled CMU dictionary lacks gets a pronunciation from espeak-ng: the IPA phonemes
   espeak-ng says for the word as the synthesiser was given it (:func:`spiritlens.spoken.espeak.phonemes`),
   mapped to the model's ARPAbet phones (:func:`ipa_to_arpabet`). No word is dropped: an IPA symbol
   without a mapping is an error naming it.
3. A finite-state grammar of exactly the transcript's words in order, with pocketsphinx's optional
   silence/filler loops between them, is decoded over the whole utterance (``bestpath`` off: its
   lattice rescoring returned partial hypotheses that lost the last word on espeak-ng audio, measured;
   ``set_align_text`` loses it the same way). A fresh decoder per utterance, so nothing carries over.
4. A second, state-level pass (``set_alignment``) gives each word's phones; words and phones are
   half-open frame spans ``[start, end)``, each boundary moved one frame later (``BOUNDARY_SHIFT``:
   the boundary between frames ``t - 1`` and ``t`` lies between their window centres, 10t + 7.8 ms).

Search: the grammar is a single path, so pruning is off (``_SEARCH``); with pocketsphinx's default
beams 16 of 40 espeak-ng Known prompts never reached the last word (measured). Measured against the
synthesiser's word times (40 Known prompts): median word-boundary error 10 ms on espeak-ng, 8 ms on
flite slt (``benchmarks/bench_align.py`` for the full numbers).

The alignment fails with ``ValueError`` (naming the transcript) when the search cannot reach the
end of the transcript (audio too short for its phones). An aligner keeps its last 32 alignments by
(audio digest, transcript): the experiment aligns each prompt for sigma, tracing and its figure.

Scores (a goodness-of-pronunciation measure): a third pass decodes the same audio with pocketsphinx's
free phone loop (``allphone``), the best any phone sequence can do. A word's ``score`` is the mean
per-frame acoustic log-likelihood ratio, in nats, of the forced path against the phone loop over the
word's frames (the loop's segments prorated by overlap), capped at 0, and ``confidence = exp(score)``;
the utterance ``score`` is the same ratio over the whole utterance. Acoustic scores are read from
pocketsphinx's segments (log base ``logbase``, senone scores shifted right by ``SENSCR_SHIFT`` = 10 bits,
pocketsphinx ``hmm.h``). ``Alignment.coverage`` is the share of the speech frames of the phone loop
(not ``SIL`` or a filler) that lie inside aligned words. Measured on 25 Known prompts each (another
prompt's transcript as the wrong one): right transcripts score 0.08-0.38 on espeak-ng audio (a voice
far from the model's training speech) and 0.38-1.0 on flite, wrong ones up to 0.23 and 0.01; right
transcripts cover at least 98% (espeak-ng) and 96% (flite) of the speech, wrong ones on espeak-ng at
most 69%. So an alignment warns (``LowAlignmentConfidence``) when its confidence is under
``DEFAULT_MIN_CONFIDENCE = 0.05`` (not the CTC path's 0.5) or its coverage under ``MIN_COVERAGE = 0.9``:
on those prompts no right transcript warned and every wrong one did (or could not be aligned).
"""

from __future__ import annotations

import hashlib
import math
import threading
import unicodedata
import warnings
from dataclasses import replace

import numpy as np

from spiritlens.spoken.form import spoken_form
from spiritlens.align.ctc import Alignment, LowAlignmentConfidence, WordSpan

__all__ = ["DEFAULT_MIN_CONFIDENCE", "PocketsphinxAligner", "ipa_to_arpabet", "IPA_TO_ARPABET"]

SAMPLE_RATE = 16000
FRAME_SECONDS = 0.01
# A boundary between pocketsphinx frames t - 1 and t (25.6 ms windows every 10 ms, centred at 10t + 12.8 ms)
# lies at the midpoint of their centres, 10t + 7.8 ms: frame t + 1 to the nearest 10 ms. Measured against
# espeak-ng's own word times: unshifted boundaries are 11 ms early (median), shifted 1 ms.
BOUNDARY_SHIFT = 1
DEFAULT_MIN_CONFIDENCE = 0.05
MIN_COVERAGE = 0.9  # share of the phone loop's speech frames that the aligned words must cover
_CACHE_SIZE = 32  # alignments kept: a run aligns each prompt for sigma, tracing and the figure
SENSCR_SHIFT = 10  # pocketsphinx senone scores are log-likelihoods shifted right by 10 bits (hmm.h)
# The grammar is one path of words, so pruning is switched off (a full Viterbi search, ~0.3 s per prompt):
# with pocketsphinx's default beams 16 of 40 espeak-ng Known prompts never reached the last word (measured).
_SEARCH = {"beam": 1e-200, "pbeam": 1e-200, "wbeam": 1e-200, "maxhmmpf": -1, "maxwpf": -1}
_STRESS = "\u02c8\u02cc"  # ˈ ˌ

# IPA as espeak-ng writes it (en-us, and the foreign sounds its other rules produce) -> CMU ARPAbet.
IPA_TO_ARPABET = {
    # vowels and diphthongs
    "i": "IY", "iː": "IY", "ɪ": "IH", "ᵻ": "IH", "e": "EY", "eɪ": "EY", "ɛ": "EH", "ɛː": "EH", "æ": "AE",
    "a": "AA", "aː": "AA", "ɑ": "AA", "ɑː": "AA", "ɒ": "AA", "ɔ": "AO", "ɔː": "AO", "o": "OW", "oː": "OW",
    "oʊ": "OW", "əʊ": "OW", "ʊ": "UH", "u": "UW", "uː": "UW", "ʌ": "AH", "ə": "AH", "ɐ": "AH", "ɜ": "ER",
    "ɜː": "ER", "ɚ": "ER", "ɝ": "ER", "aɪ": "AY", "aʊ": "AW", "ɔɪ": "OY", "y": "UW", "yː": "UW", "ø": "ER",
    "øː": "ER", "œ": "ER", "ɨ": "IH", "ɯ": "UW",
    # r-coloured vowels and centring diphthongs espeak-ng writes as one phoneme
    "ɪɹ": "IH R", "iə": "IY AH", "ɛɹ": "EH R", "eə": "EH AH", "ʊɹ": "UH R", "ʊə": "UH AH", "ɔːɹ": "AO R",
    "oːɹ": "AO R", "ɔɹ": "AO R", "ɑːɹ": "AA R", "ɑɹ": "AA R", "ɜːɹ": "ER", "aɪə": "AY AH", "aɪɚ": "AY ER",
    "aʊə": "AW AH", "aʊɚ": "AW ER", "əl": "AH L",
    # consonants
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "ɡ": "G", "g": "G", "f": "F", "v": "V", "θ": "TH",
    "ð": "DH", "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH", "h": "HH", "m": "M", "n": "N", "ŋ": "NG", "l": "L",
    "ɫ": "L", "ɹ": "R", "r": "R", "ɾ": "T", "j": "Y", "w": "W", "ʍ": "W", "tʃ": "CH", "dʒ": "JH",
    "ʔ": "T", "x": "K", "χ": "K", "ç": "HH", "ɣ": "G", "β": "B", "ɬ": "L", "ʎ": "L Y", "ɲ": "N Y",
    "ʁ": "R", "ʀ": "R", "ts": "T S", "dz": "D Z", "n̩": "AH N", "l̩": "AH L", "m̩": "AH M",
}
_LONGEST_KEY = max(len(k) for k in IPA_TO_ARPABET)


def ipa_to_arpabet(phonemes: list[str], word: str = "") -> str:
    """ARPAbet phones (space-separated, no stress) for espeak-ng IPA phonemes; greedy longest match.

    Raises ``ValueError`` naming ``word`` and the first IPA symbol with no mapping.
    """
    out: list[str] = []
    for phoneme in phonemes:
        text = unicodedata.normalize("NFC", "".join(c for c in phoneme if c not in _STRESS))
        i = 0
        while i < len(text):
            for size in range(min(_LONGEST_KEY, len(text) - i), 0, -1):
                if text[i:i + size] in IPA_TO_ARPABET:
                    out.append(IPA_TO_ARPABET[text[i:i + size]])
                    i += size
                    break
            else:
                raise ValueError(f"word {word!r}: no ARPAbet phone for the IPA symbol {text[i]!r} "
                                 f"(U+{ord(text[i]):04X}) in espeak-ng's pronunciation {' '.join(phonemes)!r}")
    if not out:
        raise ValueError(f"word {word!r}: espeak-ng gives it no phonemes")
    return " ".join(out)


class PocketsphinxAligner:
    """Forced alignment with pocketsphinx's bundled en-US model (see the module docstring).

    ``voice``: the espeak-ng voice whose pronunciations fill the dictionary's gaps.
    """

    name = "pocketsphinx"
    sample_rate = SAMPLE_RATE
    frame_seconds = FRAME_SECONDS

    def __init__(self, voice: str = "en-us"):
        self.voice = voice
        self._lock = threading.Lock()
        self._pronunciations: dict[tuple[str, str], str] = {}
        self._lookup = None  # a decoder kept only to look words up in the CMU dictionary
        self._cache: dict[tuple[str, str], Alignment] = {}  # recent alignments by (audio digest, transcript)

    def available(self) -> bool:
        import importlib.util

        return importlib.util.find_spec("pocketsphinx") is not None

    def pronunciation(self, word: str, spoken: str | None = None) -> tuple[str, str]:
        """``(phones, source)`` for a dictionary word (lower case): the CMU dictionary's first pronunciation,
        else espeak-ng's for ``spoken`` (the word as the synthesiser read it; default ``word``)."""
        return self.pronunciations([(word, spoken or word)])[0]

    def pronunciations(self, words) -> list[tuple[str, str]]:
        """:meth:`pronunciation` of each ``(word, spoken)`` pair, with one espeak-ng call for all the words
        the CMU dictionary lacks."""
        words = list(words)
        with self._lock:
            if self._lookup is None:
                self._lookup = self._decoder()
            found = [self._lookup.lookup_word(word) for word, _ in words]
        missing = [(w, s) for (w, s), phones in zip(words, found) if phones is None]
        espeak_phones = self._espeak_pronunciations(missing)
        return [(phones, "cmudict") if phones is not None else (espeak_phones[(w, s)], "espeak-ng")
                for (w, s), phones in zip(words, found)]

    def _espeak_pronunciations(self, pairs) -> dict[tuple[str, str], str]:
        """ARPAbet phones of ``(word, spoken)`` pairs from espeak-ng's IPA for ``spoken`` (cached)."""
        todo = list(dict.fromkeys(pair for pair in pairs if pair not in self._pronunciations))
        if todo:
            from spiritlens.spoken import espeak

            for (word, spoken), ipa in zip(todo, espeak.phonemes_of([s for _, s in todo], voice=self.voice)):
                self._pronunciations[(word, spoken)] = ipa_to_arpabet(ipa, spoken)
        return {pair: self._pronunciations[pair] for pair in pairs}

    def _decoder(self):
        from pocketsphinx import Decoder

        return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", lm=None, bestpath=False, **_SEARCH)

    def align(self, waveform, transcript: str, *, sample_rate: int | None = None,
              min_confidence: float | None = None) -> Alignment:
        """Align ``transcript`` to ``waveform`` (samples at ``sample_rate`` Hz, default 16 kHz, a
        :class:`spiritlens.audio.waveform.Waveform` or a file; resampled to 16 kHz). Returns an :class:`Alignment` in 10 ms
        frames. Raises ``ValueError`` for an empty/unspeakable transcript or when the search cannot reach
        its end, ``RuntimeError`` if pocketsphinx is not installed. ``min_confidence``: below it (or with
        a coverage under ``MIN_COVERAGE``) the alignment warns (``LowAlignmentConfidence``); default
        ``DEFAULT_MIN_CONFIDENCE``."""
        from spiritlens.align.emissions import aligner_samples

        if not self.available():
            raise RuntimeError("pocketsphinx is not installed (pip install 'spiritlens[data]')")
        wav = aligner_samples(waveform, sample_rate, SAMPLE_RATE, 400, "pocketsphinx (25 ms)")
        threshold = DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence
        key = (hashlib.sha1(wav.tobytes()).hexdigest(), transcript)
        alignment = self._cache.get(key)
        if alignment is None:
            alignment = self._align(wav, transcript)
            self._cache[key] = alignment
            while len(self._cache) > _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
        reasons = []
        if alignment.confidence < threshold:
            reasons.append(f"confidence {alignment.confidence:.3f} is below min_confidence={threshold}")
        if alignment.coverage < MIN_COVERAGE:
            reasons.append(f"covers only {alignment.coverage:.0%} of the speech with words (under {MIN_COVERAGE:.0%}: "
                           "words missing from the transcript?)")
        if reasons:
            warnings.warn(f"pocketsphinx alignment {'; '.join(reasons)} (transcript {transcript!r})",
                          LowAlignmentConfidence, stacklevel=2)
        return replace(alignment, min_confidence=threshold, low_confidence=bool(reasons))

    def _align(self, wav: np.ndarray, transcript: str) -> Alignment:
        """The three decoding passes on 16 kHz samples (module docstring); no warning, no cache."""
        form = spoken_form(transcript)
        if not form.words:
            raise ValueError(f"transcript {transcript!r} has no words to align")
        words = [w.text.lower() for w in form.words]
        pcm = (np.clip(wav, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        with self._lock:
            decoder = self._decoder()
            missing = list(dict.fromkeys((word, form.tts_word(i)) for i, word in enumerate(words)
                                         if decoder.lookup_word(word) is None))
            added = set()
            for (word, _), phones in self._espeak_pronunciations(missing).items():
                if word not in added:  # one pronunciation per dictionary word: the first spelling's
                    decoder.add_word(word, phones, False)
                    added.add(word)
            fsg = decoder.create_fsg("spiritlens_align", 0, len(words),
                                     [(i, i + 1, 1.0, word) for i, word in enumerate(words)])
            decoder.add_fsg("spiritlens_align", fsg)
            decoder.activate_search("spiritlens_align")
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            segments = _segments(decoder)
            aligned = [(_base(w), a, b, raw) for w, a, b, raw in segments if _is_word(w)]
            if [w for w, *_ in aligned] != words:
                got = " ".join(w for w, *_ in aligned) or "nothing"
                raise ValueError(f"pocketsphinx could not align the transcript {transcript!r} to the audio "
                                 f"(its search reached {got!r}): wrong transcript or audio too short?")
            forced_total = sum(raw for *_, raw in segments)
            num_frames = max(int(decoder.n_frames()), max(b for _, _, b, _ in aligned))
            phones = self._phones(decoder, pcm)
            free = self._phone_loop(pcm)
            to_nats = decoder.get_logmath().log_to_ln(1) * 2 ** SENSCR_SHIFT
        free_total = sum(raw for *_, raw in free)
        utterance = min(0.0, (forced_total - free_total) * to_nats / num_frames)
        scores = [min(0.0, (raw - _overlap_score(free, a, b)) * to_nats / max(b - a, 1)) for _, a, b, raw in aligned]
        speech = [(a, b) for name, a, b, _ in free if _is_speech(name)]
        inside = sum(max(0, min(b, e) - max(a, s)) for a, b in speech for _, s, e, _ in aligned)
        coverage = inside / max(sum(b - a for a, b in speech), 1)
        return replace(self._alignment(transcript, form, aligned, scores, utterance, phones, num_frames, len(wav)),
                       coverage=round(coverage, 4))

    def _phone_loop(self, pcm) -> list[tuple[str, int, int, int]]:
        """The free phone loop's segments ``(phone, start, end, raw acoustic score)`` over the utterance."""
        decoder = self._decoder()
        decoder.add_allphone_file("spiritlens_phones", None)
        decoder.activate_search("spiritlens_phones")
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        return _segments(decoder)

    @staticmethod
    def _phones(decoder, pcm) -> list[tuple[str, int, int]]:
        """Second pass: ``(phone, start, end)`` of every phone (silence included), or [] if it fails."""
        try:
            decoder.set_alignment()
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            alignment = decoder.get_alignment()
        except RuntimeError:
            return []
        if alignment is None:
            return []
        return [(p.name, int(p.start), int(p.start + p.duration)) for p in alignment.phones()]

    def _alignment(self, transcript, form, aligned, scores, utterance, phones, num_frames, num_samples) -> Alignment:
        spans = []
        for (word, a, b, _), score, spoken in zip(aligned, scores, form.words):
            inside = [(s, e) for name, s, e in phones if a <= s < b and name != "SIL"]
            if inside:  # the state-level pass's phones, silence excluded
                a, b = inside[0][0], inside[-1][1]
            a, b = min(a + BOUNDARY_SHIFT, num_frames - 1), min(b + BOUNDARY_SHIFT, num_frames)
            spans.append(WordSpan(spoken.text, a, b, a * FRAME_SECONDS, b * FRAME_SECONDS, score, math.exp(score),
                                  spoken.char_start, spoken.char_end))
        confidence = math.exp(utterance)
        labels = tuple(name for name, _, _ in phones)
        label_spans = tuple((min(s + BOUNDARY_SHIFT, num_frames - 1), min(e + BOUNDARY_SHIFT, num_frames))
                            for _, s, e in phones)
        alignment = Alignment(transcript, tuple(spans), labels, label_spans, utterance, confidence,
                              DEFAULT_MIN_CONFIDENCE, False, num_frames, FRAME_SECONDS, "pocketsphinx")
        return replace(alignment, num_samples=num_samples, sample_rate=SAMPLE_RATE)


def _segments(decoder) -> list[tuple[str, int, int, int]]:
    """``(word, start, end, raw acoustic score)`` of the decoder's best path, frames half-open; the raw score
    is in pocketsphinx's log units (``Segment.ascore`` is its exponential)."""
    logmath = decoder.get_logmath()
    return [(s.word, int(s.start_frame), int(s.end_frame) + 1, logmath.log(s.ascore) if s.ascore > 0 else -2 ** 30)
            for s in (decoder.seg() or [])]


def _overlap_score(segments, a: int, b: int) -> float:
    """Raw score of frames ``[a, b)`` from segments that partition the utterance, each prorated by overlap."""
    total = 0.0
    for _, s, e, raw in segments:
        overlap = min(b, e) - max(a, s)
        if overlap > 0:
            total += raw * overlap / max(e - s, 1)
    return total


def _base(word: str) -> str:
    """A dictionary word without its alternate-pronunciation suffix ("was(2)" -> "was")."""
    return word.split("(")[0] if word.endswith(")") else word


def _is_speech(phone: str) -> bool:
    """A phone of the free loop that is speech, not silence or a filler (``SIL``, ``+NSN+``, ``+SPN+``)."""
    return phone != "SIL" and not phone.startswith("+")


def _is_word(word: str) -> bool:
    """Not a filler or sentence marker (``<sil>``, ``<s>``, ``[NOISE]``, ``(NULL)``)."""
    return not (word.startswith("<") or word.startswith("[") or word == "(NULL)")
