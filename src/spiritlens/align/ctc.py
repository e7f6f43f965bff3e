"""Forced alignment of a transcript to CTC emissions: ctc-segmentation, plus a plain Viterbi cross-check.

Coordinates: frames of the aligner, ``frame_seconds`` each (CTC frames: the conv stack's hop at the
model's sample rate, 20 ms for HuBERT/wav2vec2 CTC heads at 16 kHz), half-open ``[start_frame,
end_frame)``; seconds are ``frame * frame_seconds``; character spans are half-open indices into the
raw transcript. Every :class:`Alignment` names its frame unit (``frame_unit``).

``align_emissions`` calls ctc-segmentation with (``index_duration = frame_seconds``,
``preamble_transition_cost_zero=False``, ``backtrack_from_max_t=True``), on input prepared so that
its path is a strict CTC path:

- **Clip edges.** ctc-segmentation's trellis starts with a start row and a blank row and ends with a
  blank row, and each needs a frame of its own, so a first letter emitted from frame 0 or 1 could
  only start at frame 2 and a word ending on the last frame lost it. The emissions are padded with
  two certain-blank frames before and one after (removed again from every span): any frame can
  hold a label.
- **Repeated labels.** ctc-segmentation's label sequence has no blank between equal neighbours
  (``prepare_token_list``), so the second ``T`` of "SCOTT" could start inside the first ``T``'s
  run and the word's last letter was cut short. A blank row is inserted between equal neighbours,
  as strict CTC requires; a transcript therefore needs ``labels + repeats`` frames, exactly strict
  CTC's bound (it needed ``labels + 3`` before).
- **No fixed window.** ctc-segmentation fills its table in a window of ``min_window_size`` frames
  (8000) moved along the diagonal; the window is set to the whole utterance, so long silences
  cannot push the path out of it.

Token ``j`` starts at frame ``round(timings[j] / frame_seconds)`` of its row and owns the frames up
to the next row's start (ctc-segmentation is not strict CTC: a row absorbs blanks, since staying
scores ``max(blank, label)``). Each label's span is the best strict-CTC split ``blank* label+
blank*`` of its row (``_strict_span``), which keeps the first word from starting and the last from
ending in leading/trailing silence at weak posteriors (measured, 50 synthetic sentences at peak 3:
97.4% exact boundaries, max error 1 frame, against 94.0% and 22 frames for the rule without that preparation).

Vocabularies: ``vocab[blank]`` is the blank and ``word_delimiter`` (``|`` by default) separates
words; a vocabulary without a delimiter aligns the words back to back. Transcript letters match
labels case-insensitively (an upper-case label first), so the common fine-tuning layout
(lower-case letters, ``[PAD]`` blank last) works; an apostrophe the vocabulary lacks is silent and
left out; any other missing letter is an error naming it. Emissions in which blank is the most
likely label of every frame are aligned (the letters' probabilities still order the path): a weak
model gives a low confidence, not a refusal; only a label with probability 0 in every frame is
an error.

Scores are log-probabilities of the alignment path per frame (for ctc-segmentation its
``char_probs``: a frame staying in a label's row scores ``max(blank, label)``). A word's ``score`` is
their mean over the word's frames and ``confidence = exp(score)``. The utterance ``score`` is
ctc-segmentation's own utterance measure, the minimum over windows of ``UTTERANCE_WINDOW`` frames of the
mean path log-probability; an utterance ``confidence`` below ``min_confidence`` warns
(``LowAlignmentConfidence``) and sets ``low_confidence``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spiritlens.align.normalize import WORD_SEPARATOR, NormalizedText, normalize_transcript

__all__ = [
    "WordSpan",
    "Alignment",
    "LowAlignmentConfidence",
    "TokenFrames",
    "TokenFrameMap",
    "align_emissions",
    "viterbi_align",
    "map_words_to_text_tokens",
    "DEFAULT_MIN_CONFIDENCE",
    "UTTERANCE_WINDOW",
    "MAX_TRELLIS_CELLS",
]

DEFAULT_MIN_CONFIDENCE = 0.5  # utterance confidence (probability) below which alignment warns
UTTERANCE_WINDOW = 30  # frames per window of the utterance score (ctc-segmentation's score_min_mean_over_L)
MAX_TRELLIS_CELLS = 400_000_000  # frames x labels of one ctc-segmentation table (1.6 GB of float32)
_LOG_FLOOR = -1e5  # -inf log-probs are clamped here (ctc-segmentation subtracts them)
_PAD_BEFORE, _PAD_AFTER = 2, 1  # certain-blank frames for ctc-segmentation's start/blank rows and final blank row


class LowAlignmentConfidence(UserWarning):
    """The alignment path is improbable: wrong transcript, wrong audio, or a weak acoustic model."""


@dataclass(frozen=True)
class WordSpan:
    """One spoken word: aligner frames ``[start_frame, end_frame)`` of its sounds (CTC: its letters,
    blanks and ``|`` excluded; pocketsphinx: its phones, silence excluded).

    ``start_s``/``end_s`` are the same span in seconds; ``score`` is the mean path log-probability per
    frame over the span and ``confidence = exp(score)``; ``[char_start, char_end)`` is the span in the
    raw transcript that the word was read from.
    """

    text: str
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    score: float
    confidence: float
    char_start: int
    char_end: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Alignment(Sequence):
    """A transcript aligned to audio; a sequence of ``WordSpan`` (one per spoken word).

    ``labels[j]`` is the j-th aligned unit (a CTC label such as ``"T"`` or ``"|"``, or a pocketsphinx
    phone) and ``label_spans[j]`` its frames ``[start, end)``; ``label_ids`` are the CTC vocabulary
    ids of the labels (``None`` for pocketsphinx). ``num_frames`` frames of ``frame_seconds`` each,
    named by ``frame_unit``; ``num_samples`` and ``sample_rate`` describe the waveform the aligner saw
    (set when the alignment was made from one); ``coverage`` (pocketsphinx only) is the share of the
    audio's speech frames inside aligned words.
    """

    transcript: str
    words: tuple[WordSpan, ...]
    labels: tuple[str, ...]
    label_spans: tuple[tuple[int, int], ...]
    score: float
    confidence: float
    min_confidence: float
    low_confidence: bool
    num_frames: int
    frame_seconds: float
    method: str
    num_samples: int | None = None
    sample_rate: int | None = None
    label_ids: tuple[int, ...] | None = None
    coverage: float | None = None

    @property
    def frame_unit(self) -> str:
        """What a frame of this alignment is, e.g. ``"CTC frame (20 ms)"``, ``"pocketsphinx frame (10 ms)"``."""
        kind = "pocketsphinx" if self.method == "pocketsphinx" else "CTC"
        return f"{kind} frame ({self.frame_seconds * 1000:g} ms)"

    def __len__(self) -> int:
        return len(self.words)

    def __getitem__(self, index):
        return self.words[index]

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("words", "label_spans", "labels", "label_ids")}
        out["frame_unit"] = self.frame_unit
        out["words"] = [w.to_dict() for w in self.words]
        out["labels"] = list(self.labels)
        out["label_spans"] = [list(s) for s in self.label_spans]
        return out


def align_emissions(
    log_probs,
    vocab: Sequence[str],
    transcript: str,
    frame_seconds: float,
    *,
    blank: int = 0,
    word_delimiter: str | None = WORD_SEPARATOR,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    number_and: bool = True,
) -> Alignment:
    """Align ``transcript`` to ``log_probs`` [frames, vocab] with ctc-segmentation.

    ``vocab``: the model's labels, ``vocab[blank]`` the CTC blank, ``word_delimiter`` the word
    separator (``None`` or absent from ``vocab``: words back to back). ``transcript``: raw text,
    read by :func:`spiritlens.spoken.form.spoken_form`. Returns an ``Alignment`` (one ``WordSpan`` per
    spoken word; frames are rows of ``log_probs``). Raises ``ValueError`` if the emissions are empty or
    not log-softmax outputs, a transcript letter is not in the vocabulary or has probability 0 in
    every frame, or the audio is shorter than strict CTC needs (``labels + repeats`` frames).
    """
    from ctc_segmentation import CtcSegmentationParameters, ctc_segmentation, prepare_token_list

    lp, norm, seq, words = _prepare(log_probs, vocab, transcript, blank, word_delimiter, number_and)
    num_frames = len(lp)
    # strict CTC: a blank between equal neighbours, each its own ctc-segmentation row
    rows, label_row = [], []
    for j, label in enumerate(seq):
        if j and label == seq[j - 1]:
            rows.append(blank)
        label_row.append(len(rows))
        rows.append(label)
    padded = np.full((_PAD_BEFORE + num_frames + _PAD_AFTER, lp.shape[1]), _LOG_FLOOR, dtype=np.float32)
    padded[:_PAD_BEFORE, blank] = padded[-_PAD_AFTER:, blank] = 0.0
    padded[_PAD_BEFORE:_PAD_BEFORE + num_frames] = lp
    if len(padded) * (len(rows) + 3) > MAX_TRELLIS_CELLS:
        raise ValueError(f"transcript {transcript!r}: {num_frames} frames x {len(rows) + 3} labels is too large for "
                         "one alignment; split the audio")
    cfg = CtcSegmentationParameters(
        char_list=list(vocab),
        blank=blank,
        index_duration=frame_seconds,
        preamble_transition_cost_zero=False,
        backtrack_from_max_t=True,
        min_window_size=len(padded),  # the whole utterance: no window to fall out of
        max_window_size=2 * len(padded) + 1,
    )
    ground_truth, _ = prepare_token_list(cfg, [np.asarray(rows, dtype=np.int64)])
    timings, char_probs, _ = ctc_segmentation(cfg, padded, ground_truth)
    # table rows are [start, blank, rows..., blank]: row r of ``rows`` is table row r + 2
    starts = [int(round(timings[r] / frame_seconds)) for r in range(2, len(rows) + 3)]
    label_spans = []
    for j, label in enumerate(seq):
        r = label_row[j]
        a, b = _strict_span(padded[starts[r]:starts[r + 1]], label, blank, starts[r])
        label_spans.append((a - _PAD_BEFORE, b - _PAD_BEFORE))
    frame_logp = np.asarray(char_probs)[_PAD_BEFORE:_PAD_BEFORE + num_frames]
    return _build_alignment(norm, words, seq, vocab, label_spans, frame_logp, frame_seconds, "ctc-segmentation",
                            min_confidence)


def viterbi_align(
    log_probs,
    vocab: Sequence[str],
    transcript: str,
    frame_seconds: float,
    *,
    blank: int = 0,
    word_delimiter: str | None = WORD_SEPARATOR,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    number_and: bool = True,
) -> Alignment:
    """Plain CTC Viterbi forced alignment (strict CTC topology, numpy); a cross-check for ``align_emissions``.

    Same inputs, output and errors as ``align_emissions``. A label's span is the frames its state
    occupies on the best path; scores are the path's per-frame log-probabilities. Ties between
    predecessor states keep the first of stay, advance, skip: every choice is a maximum, so the path
    stays optimal (torchaudio's forced_align once took the worst on a tie, pytorch/audio#4221).
    """
    lp, norm, seq, words = _prepare(log_probs, vocab, transcript, blank, word_delimiter, number_and)
    num_frames = len(lp)
    states = np.full(2 * len(seq) + 1, blank, dtype=np.int64)
    states[1::2] = seq
    emit = lp[:, states].astype(np.float64)  # [T, S]: log-prob of each extended state's label per frame
    can_skip = np.zeros(len(states), dtype=bool)
    can_skip[3::2] = states[3::2] != states[1:-2:2]  # label -> next label without a blank between
    score = np.full(len(states), -np.inf)
    score[:2] = emit[0, :2]
    back = np.zeros((num_frames, len(states)), dtype=np.int8)  # states moved back from: 0, 1 or 2
    for t in range(1, num_frames):
        from_one = np.concatenate([[-np.inf], score[:-1]])
        from_two = np.where(can_skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        cand = np.stack([score, from_one, from_two])
        back[t] = np.argmax(cand, axis=0)
        score = cand[back[t], np.arange(len(states))] + emit[t]
    s = len(states) - 1 if score[-1] >= score[-2] else len(states) - 2
    path = np.empty(num_frames, dtype=np.int64)
    for t in range(num_frames - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])
    frame_logp = emit[np.arange(num_frames), path]
    label_spans = []
    for j in range(len(seq)):
        frames = np.flatnonzero(path == 2 * j + 1)
        label_spans.append((int(frames[0]), int(frames[-1]) + 1))
    return _build_alignment(norm, words, seq, vocab, label_spans, frame_logp, frame_seconds, "viterbi",
                            min_confidence)


def _strict_span(window: np.ndarray, label: int, blank: int, offset: int) -> tuple[int, int]:
    """Frames ``[start, end)`` of ``label`` in its ctc-segmentation row ``window`` [W, V] (frames from ``offset``).

    The row holds the label and the blanks ctc-segmentation absorbed around it; the best strict-CTC
    split ``blank* label+ blank*`` of the window maximises ``A[s] - C[s] + C[e] - A[e]`` over ``s < e``
    (``A``, ``C`` cumulative blank and label log-probs), found in one pass.
    """
    cum_blank = np.concatenate([[0.0], np.cumsum(window[:, blank], dtype=np.float64)])
    cum_label = np.concatenate([[0.0], np.cumsum(window[:, label], dtype=np.float64)])
    before = cum_blank - cum_label  # gain of blanks before a start at s
    best_start = np.maximum.accumulate(before[:-1])  # best over s <= e - 1
    arg_start = _running_argmax(before[:-1])
    total = best_start + (cum_label - cum_blank)[1:]  # for e = 1..W
    end = int(np.argmax(total)) + 1
    return offset + int(arg_start[end - 1]), offset + end


def _running_argmax(x: np.ndarray) -> np.ndarray:
    """Index of the first maximum of ``x[:i + 1]`` for every ``i``."""
    idx = np.arange(len(x))
    is_new = np.concatenate([[True], x[1:] > np.maximum.accumulate(x)[:-1]])
    return np.maximum.accumulate(np.where(is_new, idx, 0))


def label_index(vocab: Sequence[str]) -> dict[str, int]:
    """Vocabulary id of each single character a transcript may need: the label itself, else its other
    case (so upper-case transcripts align to lower-case vocabularies and back)."""
    index: dict[str, int] = {}
    for i, label in enumerate(vocab):
        if len(label) == 1:
            index.setdefault(label, i)
    for ch, i in list(index.items()):
        for other in (ch.upper(), ch.lower()):
            index.setdefault(other, i)
    return index


def _prepare(log_probs, vocab, transcript, blank, word_delimiter, number_and):
    """Validate inputs; return float32 log-probs [T, V], the spoken transcript, the label id sequence and,
    per word, the positions of its labels in that sequence."""
    if hasattr(log_probs, "detach"):
        log_probs = log_probs.detach().cpu().float().numpy()
    lp = np.array(log_probs, dtype=np.float32)
    vocab = list(vocab)
    if lp.ndim != 2 or lp.shape[1] != len(vocab):
        raise ValueError(f"log_probs must be [frames, {len(vocab)}] (one column per vocab label), got {list(lp.shape)}")
    if lp.shape[0] == 0:
        raise ValueError("log_probs has 0 frames (empty audio?)")
    if np.isnan(lp).any() or np.isposinf(lp).any():
        raise ValueError("log_probs contains NaN or +inf")
    if not 0 <= blank < len(vocab):
        raise ValueError(f"blank={blank} is not an index into vocab of {len(vocab)} labels")
    lp = np.maximum(lp, _LOG_FLOOR)
    lse = np.logaddexp.reduce(lp.astype(np.float64), axis=1)
    if np.abs(lse).max() > 1e-2:
        raise ValueError(
            f"log_probs rows are not log-probabilities (max |logsumexp| = {np.abs(lse).max():.3g}); "
            "pass log_softmax(logits, dim=-1)"
        )
    norm = normalize_transcript(transcript, number_and=number_and)
    if not norm.words:
        raise ValueError(f"transcript {transcript!r} has no words to align")
    index = label_index(vocab)
    delimiter = vocab.index(word_delimiter) if word_delimiter is not None and word_delimiter in vocab else None
    seq: list[int] = []
    words: list[list[int]] = []
    missing: list[str] = []
    for k, word in enumerate(norm.words):
        if k and delimiter is not None:
            seq.append(delimiter)
        positions = []
        for ch in word.text:
            if ch in index and index[ch] != blank:
                positions.append(len(seq))
                seq.append(index[ch])
            elif ch != "'":  # an apostrophe the vocabulary lacks is silent
                missing.append(ch)
        if not positions and not missing:
            raise ValueError(f"transcript {transcript!r}: word {word.text!r} has no label in the CTC vocab")
        words.append(positions)
    if missing:
        raise ValueError(f"transcript {transcript!r}: label(s) {sorted(set(missing))} not in the CTC vocab")
    repeats = sum(a == b for a, b in zip(seq, seq[1:]))
    if len(seq) + repeats > len(lp):
        raise ValueError(
            f"transcript {transcript!r} needs {len(seq) + repeats} CTC frames ({len(seq)} labels + {repeats} "
            f"blanks between repeated labels) but log_probs has only {len(lp)} frames (audio is shorter than text)"
        )
    never = sorted({vocab[i] for i in seq if lp[:, i].max() <= _LOG_FLOOR / 2})
    if never:
        raise ValueError(f"log_probs: label(s) {never} have probability 0 in every frame; the transcript "
                         f"{transcript!r} cannot be aligned to these emissions")
    return lp, norm, seq, words


def _build_alignment(norm: NormalizedText, words, seq, vocab, label_spans, frame_logp: np.ndarray,
                     frame_seconds: float, method: str, min_confidence: float) -> Alignment:
    """Group label spans (frames) into word spans; add scores and the confidence check."""
    out = []
    for word, positions in zip(norm.words, words):
        start, end = label_spans[positions[0]][0], label_spans[positions[-1]][1]
        score = float(frame_logp[start:end].mean())
        out.append(WordSpan(word.text, start, end, start * frame_seconds, end * frame_seconds, score,
                            math.exp(score), word.char_start, word.char_end))
    window = min(UTTERANCE_WINDOW, len(frame_logp))
    means = np.convolve(frame_logp, np.ones(window) / window, mode="valid")
    utt_score = float(means.min())
    confidence = math.exp(utt_score)
    low = confidence < min_confidence
    if low:
        warnings.warn(
            f"CTC alignment confidence {confidence:.3f} is below min_confidence={min_confidence} "
            f"({method}, transcript {norm.original!r})",
            LowAlignmentConfidence,
            stacklevel=3,
        )
    return Alignment(norm.original, tuple(out), tuple(vocab[i] for i in seq), tuple(label_spans), utt_score,
                     confidence, min_confidence, low, len(frame_logp), frame_seconds, method,
                     label_ids=tuple(int(i) for i in seq))


@dataclass(frozen=True)
class TokenFrames:
    """One LM text token (characters ``[char_start, char_end)``) and the CTC frames ``[start_frame, end_frame)``
    covered by the spoken words it overlaps (``None`` when it overlaps none)."""

    token_index: int
    char_start: int
    char_end: int
    word_indices: tuple[int, ...]
    start_frame: int | None
    end_frame: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenFrameMap:
    """CTC frame ranges of LM text tokens; ``unaligned`` lists the token indices that got no frames."""

    tokens: tuple[TokenFrames, ...]
    unaligned: tuple[int, ...] = field(default=())

    @property
    def ctc_spans(self) -> list[tuple[int, int] | None]:
        """Per token its CTC frames ``[start, end)`` or ``None``: the input of ``map_frames_to_speech_tokens``."""
        return [None if t.start_frame is None else (t.start_frame, t.end_frame) for t in self.tokens]

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": [t.to_dict() for t in self.tokens], "unaligned": list(self.unaligned)}


def map_words_to_text_tokens(words: Sequence[WordSpan], token_char_spans: Sequence[tuple[int, int]]) -> TokenFrameMap:
    """CTC frames of each LM text token given its character span ``[start, end)`` in the transcript.

    A token gets ``[min start_frame, max end_frame)`` over the spoken words whose character spans
    overlap its own, so one token may cover several words ("1987" -> three words) and one word
    several tokens ("Zürich" -> "Z", "ür", "ich"). Tokens overlapping no word (spaces, punctuation,
    empty spans such as BOS) get ``None`` and are listed in ``unaligned``.
    """
    tokens, unaligned = [], []
    for i, (a, b) in enumerate(token_char_spans):
        hits = tuple(k for k, w in enumerate(words) if w.char_start < b and w.char_end > a)
        if hits:
            tokens.append(TokenFrames(i, a, b, hits, min(words[k].start_frame for k in hits),
                                      max(words[k].end_frame for k in hits)))
        else:
            tokens.append(TokenFrames(i, a, b, (), None, None))
            unaligned.append(i)
    return TokenFrameMap(tuple(tokens), tuple(unaligned))
