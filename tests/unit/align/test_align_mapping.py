"""CTC frames -> deduplicated speech-token positions: formulas (1)/(2) ("paper") and the exact mapping."""

from fractions import Fraction

import pytest

from spiritlens.align import (
    WordSpan,
    ctc_to_unit_frames,
    map_frames_to_speech_tokens,
    paper_seconds,
    paper_token_range,
    subject_speech_range,
)


def test_formula_1_hand_computed():
    # M = 48000 samples, T = 149 CTC frames: ratio = 48000 / 149 = 322.1476...
    assert paper_seconds(10, 48000, 149) == Fraction(3221, 16000)  # floor(3221.476) / 16000 = 0.2013125 s
    assert paper_seconds(25, 48000, 149) == Fraction(8053, 16000)  # floor(8053.691) / 16000 = 0.5033125 s
    assert paper_seconds(149, 48000, 149) == 3  # the last frame's end is the waveform's end


def test_formula_2_hand_computed():
    # 0.2013125 s * 25 = 5.03 -> floor 5; 0.5033125 s * 25 = 12.58 -> ceil 13
    assert paper_token_range(10, 25, 48000, 149) == (5, 13)
    # an exact multiple stays put: frame 0 -> 0, frame 149 -> 3.0 s -> 75
    assert paper_token_range(0, 149, 48000, 149) == (0, 75)


def test_ctc_to_unit_frames_uses_the_duration_ratio():
    assert ctc_to_unit_frames(3, 7) == (1, 4)  # [0.06, 0.14) s -> 40 ms frames 1..3
    assert ctc_to_unit_frames(20, 32) == (10, 16)
    assert ctc_to_unit_frames(3, 7, 0.02, 0.02) == (3, 7)  # equal rates: identity


def dedup(units):
    """(tokens, spans) of per-frame units: runs of equal units -> one token, span [first, last + 1)."""
    starts = [0] + [f for f in range(1, len(units)) if units[f] != units[f - 1]]
    ends = starts[1:] + [len(units)]
    return [units[s] for s in starts], list(zip(starts, ends))


def test_paper_and_exact_differ_under_deduplication_and_exact_is_right():
    # 30 frames of 25 Hz units (1.2 s); long runs early, so token index != frame index afterwards
    units = [7] * 6 + [3] * 4 + [9] * 2 + [5] * 4 + list(range(20, 34))
    tokens, spans = dedup(units)
    assert spans[:5] == [(0, 6), (6, 10), (10, 12), (12, 16), (16, 17)] and len(tokens) == 18
    # a word spoken exactly while units 9 and 5 play: 25 Hz frames [10, 16) = CTC frames [20, 32)
    num_samples = 30 * 640  # 19200 samples -> T = floor((19200 - 400) / 320) + 1 = 59 CTC frames
    exact = map_frames_to_speech_tokens([(20, 32)], spans)
    paper = map_frames_to_speech_tokens([(20, 32)], spans, mode="paper", num_samples=num_samples, num_ctc_frames=59)
    assert (exact.items[0].token_start, exact.items[0].token_end) == (2, 4)
    assert [tokens[k] for k in range(2, 4)] == [9, 5]  # exactly the word's units
    # paper: floor(floor(20 * 19200 / 59) / 16000 * 25) = floor(10.17) = 10; ceil(0.6508 * 25) = 17
    assert (paper.items[0].token_start, paper.items[0].token_end) == (10, 17)
    assert tokens[10:17] == [26, 27, 28, 29, 30, 31, 32]  # units heard after the word


def test_exact_rules_shared_silence_and_unmapped():
    spans = [(0, 5), (5, 7), (7, 8), (8, 12), (12, 20)]  # 5 tokens over 20 frames of 25 Hz
    # word A at CTC [10, 15) -> 25 Hz [5, 8); word B at CTC [15, 18) -> [7, 9); word C has no frames;
    # word D at CTC [50, 60) -> [25, 30): after the last token
    result = map_frames_to_speech_tokens([(10, 15), (15, 18), None, (50, 60)], spans)
    assert [(r.token_start, r.token_end) for r in result.items] == [(1, 3), (2, 4), (None, None), (None, None)]
    assert result.shared_tokens == (2,)  # token 2 straddles A and B: counts for both
    assert result.silence_tokens == (0, 4)
    assert result.unmapped == (2, 3)
    assert result.range_of([0, 1]) == (1, 4)
    with pytest.raises(ValueError, match="got no speech token"):
        result.range_of([2, 3])


def test_subject_range_from_character_span():
    text = "Vinson Massif is located"
    words = [WordSpan(t, a, b, a * 0.02, b * 0.02, 0.0, 1.0, c0, c1)
             for t, a, b, c0, c1 in [("VINSON", 10, 30, 0, 6), ("MASSIF", 33, 60, 7, 13),
                                     ("IS", 62, 70, 14, 16), ("LOCATED", 72, 100, 17, 24)]]
    spans = [(f, f + 1) for f in range(0, 52)]  # no repeats: one token per 25 Hz frame
    subject = text.index("Vinson Massif"), text.index("Vinson Massif") + len("Vinson Massif")
    # CTC [10, 60) -> 25 Hz [5, 30)
    assert subject_speech_range(words, subject, spans) == (5, 30)
    with pytest.raises(ValueError, match="overlaps no aligned word"):
        subject_speech_range(words, (6, 7), spans)


def test_paper_range_clipped_to_token_count():
    spans = [(0, 10), (10, 20)]
    result = map_frames_to_speech_tokens([(0, 20), (40, 49)], spans, mode="paper", num_samples=16000,
                                         num_ctc_frames=49)
    assert (result.items[0].token_start, result.items[0].token_end) == (0, 2)  # 25 Hz frames 0..10 -> clipped
    assert result.unmapped == (1,)


@pytest.mark.parametrize("spans,message", [
    ([(0, 2), (1, 3)], r"unit_spans\[1\] = \[1, 3\) overlaps or precedes"),
    ([(0, 2), (2, 2)], r"unit_spans\[1\] = \[2, 2\) is empty"),
])
def test_bad_unit_spans(spans, message):
    with pytest.raises(ValueError, match=message):
        map_frames_to_speech_tokens([(0, 4)], spans)


def test_bad_mode_arguments():
    with pytest.raises(ValueError, match="mode='exact' needs unit_spans"):
        map_frames_to_speech_tokens([(0, 4)])
    with pytest.raises(ValueError, match="mode='paper' needs num_samples and num_ctc_frames"):
        map_frames_to_speech_tokens([(0, 4)], mode="paper")
    with pytest.raises(ValueError, match="mode='uniform'"):
        map_frames_to_speech_tokens([(0, 4)], [(0, 1)], mode="uniform")
