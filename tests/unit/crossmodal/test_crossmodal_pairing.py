"""Position pairing of a cross-modal fact, on a hand-built alignment where a speech token is
shared by two subject tokens (a word boundary inside one 40 ms token) and a token is unmapped."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from spiritlens.align import map_frames_to_speech_tokens
from spiritlens.crossmodal import CrossModalFact
from spiritlens.crossmodal.patching import paired_positions

PROMPT = "Big Ben Tower is in"
# LM text tokens of PROMPT with their characters: " Big", " Ben", " Tow", "er", " is", " in"
TOKENS = [(" Big", (0, 3)), (" Ben", (3, 7)), (" Tow", (7, 11)), ("er", (11, 13)), (" is", (13, 16)), (" in", (16, 19))]


def _fact() -> CrossModalFact:
    # 25 Hz speech tokens k = 0..7 cover unit frames [k, k+1); CTC frames are twice as fine.
    unit_spans = [(k, k + 1) for k in range(8)]
    ctc = [(0, 2), (3, 5), (5, 8), (8, 10), None, (12, 14)]  # " Ben" and " Tow" share unit frame 2 (token 2)
    speech_map = map_frames_to_speech_tokens(ctc, unit_spans)
    speech = SimpleNamespace(transcript=PROMPT, subject="Ben Tower", text_tokens=TOKENS, speech_map=speech_map,
                             speech_offset=2, subject_tokens=[1, 2, 3], input_ids=list(range(12)), mapping="exact",
                             confidence=0.9)
    speech.subject_range = (2 + speech_map.range_of([1, 2, 3])[0], 2 + speech_map.range_of([1, 2, 3])[1])
    # the base model's groups: each text token's mapped speech-token range (SpeechPrompt.token_groups)
    speech.token_groups = lambda: [None if item.token_start is None else tuple(range(item.token_start, item.token_end))
                                   for item in speech.speech_map.items]
    # text run: <s> [Text] then the six tokens at positions 2..7
    return CrossModalFact("big_ben", PROMPT, "Ben Tower", list(range(8)), [2, 3, 4, 5, 6, 7], (3, 6), [1, 2, 3], speech)


def test_speech_groups_follow_the_token_map():
    fact = _fact()
    assert [fact.speech_positions(i) for i in range(6)] == [[2], [3, 4], [4, 5], [6], [], [8]]
    assert fact.speech_subject_range == (3, 7)
    assert fact.aligned_token(4) == 2  # shared by " Ben" and " Tow": the later token
    assert fact.aligned_token(4, tokens=[1]) == 1 and fact.aligned_token(7) is None


def test_words_gather_their_tokens_in_both_runs():
    words = _fact().words()
    assert [(w.text, w.tokens, w.text_positions, w.speech_positions) for w in words] == [
        ("Big", [0], [2], [2]), ("Ben", [1], [3], [3, 4]), ("Tower", [2, 3], [4, 5], [4, 5, 6]),
        ("is", [4], [6], []), ("in", [5], [7], [8])]


@pytest.mark.parametrize("direction, mode, expected", [
    ("text_to_speech", "last", ([6], [5])),
    ("speech_to_text", "last", ([5], [6])),
    # every speech position of a subject group gets its token's text state; position 4 the later token's
    ("text_to_speech", "groups", ([3, 4, 5, 6], [3, 4, 4, 5])),
    # every subject text token gets the last position of its group
    ("speech_to_text", "groups", ([3, 4, 5], [4, 5, 6])),
])
def test_paired_positions_follow_the_documented_rules(direction, mode, expected):
    assert paired_positions(_fact(), direction, mode) == expected


def test_an_unmapped_subject_token_is_left_out_of_the_groups():
    fact = _fact()
    fact.speech.speech_map = map_frames_to_speech_tokens([(0, 2), (3, 5), None, (8, 10), None, (12, 14)],
                                                         [(k, k + 1) for k in range(8)])
    assert paired_positions(fact, "speech_to_text", "groups") == ([3, 5], [4, 6])
    assert paired_positions(fact, "text_to_speech", "groups") == ([3, 4, 6], [3, 3, 5])


def test_unknown_direction_or_mode_is_an_error():
    with pytest.raises(ValueError, match="unknown value 'sideways'"):
        paired_positions(_fact(), "sideways", "last")
    with pytest.raises(ValueError, match="unknown value 'middle'"):
        paired_positions(_fact(), "text_to_speech", "middle")
