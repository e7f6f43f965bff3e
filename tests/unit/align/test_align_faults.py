"""Each kind of CTC alignment fault found by inputs from public bug reports, as a test with the right spans.

Emissions are built frame by frame from a known alignment, so the expected word spans come from the
construction (ground truth), not from the aligner; the plain Viterbi and a brute-force search over every
strict CTC path cross-check it.
"""

import itertools
import warnings

import numpy as np
import pytest

from spiritlens.align import LowAlignmentConfidence, align_emissions, viterbi_align
from spiritlens.synthetic.tiny_ctc import CTC_VOCAB

VOCAB = list(CTC_VOCAB)
FRAME_S = 0.02
ALIGNERS = [align_emissions, viterbi_align]


def build(spec, vocab=VOCAB, blank="<pad>"):
    """Frames and true word spans from ``spec``: a list of words, each a list of ``(label, frames)``, and
    ``("_", n)`` / ``("|", n)`` entries between them (``_`` the blank). A word's span runs from its first
    letter frame to one past its last."""
    index = {c: i for i, c in enumerate(vocab)}
    frames, truth = [], []
    for part in spec:
        if isinstance(part, tuple):
            label, n = part
            frames += [index[blank if label == "_" else label]] * n
        else:
            start = len(frames)
            for label, n in part:
                frames += [index[blank if label == "_" else label]] * n
            truth.append((start, len(frames)))
    return np.array(frames), truth


def log_probs(frames, vocab_size=len(VOCAB), peak=8.0, seed=0):
    """log_softmax of N(0, 1) scores plus ``peak`` on each frame's true label: [T, V]."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((len(frames), vocab_size))
    scores[np.arange(len(frames)), frames] += peak
    return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)


def word(text, frames_per_letter=2):
    return [(c, frames_per_letter) for c in text]


def spans(alignment):
    return [(w.start_frame, w.end_frame) for w in alignment]


# ---------------------------------------------------------------- clip edges
@pytest.mark.parametrize("aligner", ALIGNERS)
@pytest.mark.parametrize("lead", [0, 1])
def test_speech_from_the_first_to_the_last_frame(aligner, lead):
    # ctc-segmentation's start and blank rows each took a frame: the first word started at frame 2 and the
    # last word lost its final frame (espeak-ng itself starts speaking 14 ms into its files)
    frames, truth = build([("_", lead), word("HI"), ("|", 1), [("Y", 1), ("O", 2), ("U", 1)]])
    assert truth[-1][1] == len(frames)
    assert spans(aligner(log_probs(frames), VOCAB, "Hi you", FRAME_S)) == truth


@pytest.mark.parametrize("aligner", ALIGNERS)
def test_a_single_word_filling_the_clip(aligner):
    frames, truth = build([word("PARIS", 3)])
    assert spans(aligner(log_probs(frames), VOCAB, "Paris", FRAME_S)) == truth == [(0, 15)]


# ---------------------------------------------------------------- tight fits
@pytest.mark.parametrize("aligner", ALIGNERS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_short_word_in_one_to_three_frames(aligner, n):
    # "I" needed labels + 3 = 4 frames; strict CTC needs 1
    assert spans(aligner(log_probs(np.full(n, VOCAB.index("I"))), VOCAB, "I", FRAME_S)) == [(0, n)]


@pytest.mark.parametrize("aligner", ALIGNERS)
def test_labels_plus_repeats_frames_fit_exactly(aligner):
    frames, truth = build([[("A", 1), ("L", 1), ("_", 1), ("L", 1)], ("|", 1), [("A", 1)]])
    assert len(frames) == 6  # A L _ L | A: 5 labels + 1 repeat
    assert spans(aligner(log_probs(frames), VOCAB, "All a", FRAME_S)) == truth
    with pytest.raises(ValueError, match=r"needs 6 CTC frames \(5 labels \+ 1 blanks between repeated labels\) "
                                         r"but log_probs has only 5 frames"):
        aligner(log_probs(frames[:5]), VOCAB, "All a", FRAME_S)


@pytest.mark.parametrize("aligner", ALIGNERS)
def test_a_single_letter_last_word(aligner):
    # torchaudio's tutorial dropped a final one-letter word ("YOU|AND|I", pytorch/audio#3526)
    frames, truth = build([("_", 3), word("YOU"), ("|", 1), word("AND"), ("|", 1), [("I", 1)]])
    assert spans(aligner(log_probs(frames), VOCAB, "You and I", FRAME_S)) == truth


# ------------------------------------------------------- doubled letters
def doubled(text, first_run, gap=1):
    """Letters of 2 frames; each doubled letter as a run of ``first_run`` frames, ``gap`` blanks, 1 frame."""
    out = []
    for i, c in enumerate(text):
        if i and text[i - 1] == c:
            out[-1] = (c, first_run)
            out += [("_", gap), (c, 1)]
        else:
            out.append((c, 2))
    return out


@pytest.mark.parametrize("aligner", ALIGNERS)
@pytest.mark.parametrize("first_run", [2, 3])
@pytest.mark.parametrize("text", ["SCOTT", "JILL", "BONN", "HALL", "ABBOTT", "BOOKKEEPER"])
@pytest.mark.parametrize("context", ["alone", "then a word", "clip end"])
def test_doubled_letters(aligner, first_run, text, context):
    # "Scott" as S C O T T with the doubled T as 2-3 frames, a blank, 1 frame: true [8, 18), was [8, 16)
    spec = [("_", 8), doubled(text, first_run)]
    transcript = text.title()
    if context == "then a word":
        spec += [("|", 2), word("IS"), ("_", 5)]
        transcript += " is"
    elif context == "alone":
        spec += [("_", 5)]
    frames, truth = build(spec)
    for seed in range(3):
        assert spans(aligner(log_probs(frames, seed=seed), VOCAB, transcript, FRAME_S)) == truth


def test_scott_as_reported():
    frames, truth = build([("_", 8), [("S", 2), ("C", 2), ("O", 2), ("T", 2), ("_", 1), ("T", 1)], ("_", 5)])
    assert truth == [(8, 18)]
    alignment = align_emissions(log_probs(frames), VOCAB, "Scott", FRAME_S)
    assert spans(alignment) == [(8, 18)]
    assert alignment.label_spans == ((8, 10), (10, 12), (12, 14), (14, 16), (17, 18))


# ------------------------------------------------------------ weak models
def weak_log_probs(frames, blank_p=0.55, label_p=0.35, silence_blank_p=0.95):
    """Blank is the most likely label of EVERY frame; a letter frame gives its letter ``label_p``."""
    V = len(VOCAB)
    probs = np.zeros((len(frames), V))
    for t, label in enumerate(frames):
        if label == 0:
            probs[t] = (1 - silence_blank_p) / (V - 1)
            probs[t, 0] = silence_blank_p
        else:
            probs[t] = (1 - blank_p - label_p) / (V - 2)
            probs[t, 0], probs[t, label] = blank_p, label_p
    return np.log(probs)


@pytest.mark.parametrize("aligner", ALIGNERS)
def test_weak_model_whose_blank_wins_every_frame(aligner):
    # the letters' probabilities fully determine the path; this was refused as "silent audio"
    frames, truth = build([("_", 6), word("THE", 1), ("_", 2), ("|", 1), ("_", 2), word("CAPITAL", 1), ("_", 4),
                           ("|", 1), ("_", 2), word("OF", 1), ("_", 6)])
    lp = weak_log_probs(frames)
    assert (lp.argmax(axis=1) == 0).all()
    alignment = aligner(lp, VOCAB, "The capital of", FRAME_S)
    assert spans(alignment) == truth
    assert [w.confidence for w in alignment] == pytest.approx([0.35] * 3)  # the letters' own probability


# ------------------------------------------------------------- long audio
@pytest.mark.parametrize("aligner", ALIGNERS)
def test_a_long_silence_beyond_ctc_segmentations_window(aligner):
    # ctc-segmentation fills a window of 8000 frames along the diagonal: with 9000 frames of silence
    # between two words it put "END" at frame 5179 instead of 9037 (measured with the library defaults)
    frames, truth = build([("_", 30), word("THE"), ("|", 1), ("_", 9000), word("END"), ("_", 30)])
    assert len(frames) > 8000 and truth[1][0] == 9037
    assert spans(aligner(log_probs(frames), VOCAB, "The end", FRAME_S)) == truth


# ----------------------------------------------------------- vocabularies
FINE_TUNING_VOCAB = ["'", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s",
                     "t", "u", "v", "w", "x", "y", "z", "|", "[UNK]", "[PAD]"]


@pytest.mark.parametrize("aligner", ALIGNERS)
def test_lower_case_vocabulary_with_the_blank_last(aligner):
    # was: "label(s) ['A', 'C', ...] not in the CTC vocab"
    blank = FINE_TUNING_VOCAB.index("[PAD]")
    frames, truth = build([("_", 5), word("the"), ("|", 1), word("capital"), ("_", 5)], FINE_TUNING_VOCAB, "[PAD]")
    alignment = aligner(log_probs(frames, len(FINE_TUNING_VOCAB)), FINE_TUNING_VOCAB, "The capital", FRAME_S,
                        blank=blank)
    assert spans(alignment) == truth and [w.text for w in alignment] == ["THE", "CAPITAL"]
    assert alignment.labels[:4] == ("t", "h", "e", "|")


@pytest.mark.parametrize("aligner", ALIGNERS)
def test_vocabulary_without_apostrophe_or_delimiter(aligner):
    vocab = [c for c in VOCAB if c not in ("'", "|")]
    frames, truth = build([("_", 4), word("GHANAS"), word("CAPITAL"), ("_", 4)], vocab)
    alignment = aligner(log_probs(frames, len(vocab)), vocab, "Ghana's capital", FRAME_S, word_delimiter=None)
    assert spans(alignment) == truth and alignment.words[0].text == "GHANA'S"
    no_z = [c for c in vocab if c != "Z"]
    with pytest.raises(ValueError, match=r"label\(s\) \['Z'\] not in the CTC vocab"):
        aligner(log_probs(frames, len(no_z)), no_z, "Zurich", FRAME_S, word_delimiter=None)


# ------------------------------------------------------------------- ties
def best_strict_path_score(lp, labels, blank=0):
    """Brute force: the highest log-probability over every strict CTC path of ``labels`` through ``lp``."""
    T = len(lp)
    best = -np.inf
    for path in itertools.product(range(len(lp[0])), repeat=T):
        collapsed = [k for k, _ in itertools.groupby(path) if k != blank]
        if collapsed == labels:
            best = max(best, sum(lp[t, k] for t, k in enumerate(path)))
    return best


def test_viterbi_is_optimal_on_ties():
    # forced_align returned a sub-optimal path when two predecessors tied (pytorch/audio#4221)
    vocab = ["<pad>", "A", "|"]
    for lp in (np.log(np.array([[0.5, 0.5, 1e-9], [0.5, 0.5, 1e-9], [1 / 3, 1 / 3, 1 / 3]])),
               np.log(np.array([[0.25, 0.5, 0.25], [0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.5, 0.25, 0.25]]))):
        lp = lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LowAlignmentConfidence)
            alignment = viterbi_align(lp, vocab, "A", FRAME_S)
        (a, b), = alignment.label_spans
        path_score = lp[a:b, 1].sum() + lp[:a, 0].sum() + lp[b:, 0].sum()
        assert path_score == pytest.approx(best_strict_path_score(lp, [1]))
