"""Merging HuBERT, pitch and style on one time line (SpiritLM's units_to_string) and the tokens' spans."""

from __future__ import annotations

import numpy as np
import pytest

from spiritlens.units.expressive import merge_order, merge_units, units_string
from spiritlens.units.speech_tokenizer import Chunk, SpeechUnits


def brute_force_string(hubert, pitch, style):
    """The rule spelled out: (time, stream rank, token) for every kept unit, sorted; rank style 0, pitch 1, HuBERT 2."""
    items = []
    for rank, (units, rate, dedup, tag) in enumerate(
            [(style, 1.0, False, "St"), (pitch, 12.5, True, "Pi"), (hubert, 24.99, True, "Hu")]):
        for i, u in enumerate(units):
            if dedup and i > 0 and units[i - 1] == u:
                continue
            items.append((i / rate, rank, f"[{tag}{u}]"))
    return "".join(token for _, _, token in sorted(items))


def test_docstring_example_and_ties():
    streams = {"hubert": [78, 42, 81, 159, 316, 259], "pitch": [13, 13, 3], "style": [81]}
    # t=0: St, Pi, Hu tie -> style, pitch, HuBERT. [Pi3] at 2/12.5 = 0.16 s comes before [Hu316] at
    # 4/24.99 = 0.16006 s: the 24.99 Hz rate decides (at 25 Hz they would tie and HuBERT would follow)
    assert units_string(streams) == "[St81][Pi13][Hu78][Hu42][Hu81][Hu159][Pi3][Hu316][Hu259]"


def test_random_streams_equal_the_brute_force_rule():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 200))
        hubert = rng.integers(0, 4, n).tolist()
        pitch = rng.integers(0, 3, max(1, n // 2)).tolist()
        style = rng.integers(0, 3, max(1, n // 25)).tolist()
        streams = {"hubert": hubert, "pitch": pitch, "style": style}
        assert units_string(streams) == brute_force_string(hubert, pitch, style)
    assert units_string({"hubert": [1, 1, 2]}) == "[Hu1][Hu2]"
    with pytest.raises(ValueError, match="HuBERT"):
        merge_order({"pitch": [1]})


def test_spans_in_the_hubert_frame_grid():
    units = [5, 5, 6, 7, 7, 7, 8, 9, 9, 1, 1, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0]  # 28 frames
    hubert = SpeechUnits.from_units(units, frame_seconds=0.04, sample_rate=16000, num_samples=28 * 640 + 80)
    pitch = [1, 1, 2, 2, 2, 3] + [3] * 8  # 14 codes of 2 frames
    style = [7, 7]  # second 0, and second 1 cut at the end of the audio
    out = merge_units(hubert, pitch, style, [Chunk(0, 0, 14)], [Chunk(0, 0, 2)], chunk_ends=[28 * 640 + 80])
    by = {name: [t for t in out.tokens if t.stream == name] for name in ("hubert", "pitch", "style")}
    assert [t.frames for t in by["hubert"]] == list(hubert.spans)
    assert [(t.unit, t.frames) for t in by["pitch"]] == [(1, (0, 4)), (2, (4, 10)), (3, (10, 28))]
    assert [(t.unit, t.frames) for t in by["style"]] == [(7, (0, 25)), (7, (25, 29))]  # 18000 samples reach into frame 28
    assert by["style"][1].time_span == (1.0, (28 * 640 + 80) / 16000)  # cut at the chunk's end
    assert by["pitch"][1].time_span == (0.16, 0.4)
    assert out.token_string() == brute_force_string(units, pitch, style)
    assert out.spans == [t.frames for t in out.tokens] and len(out.token_strings()) == len(out.tokens)
    data = out.to_json()
    assert data["token_string"] == out.token_string() and data["expressive_tokens"][0]["stream"] == "style"
    assert data["pitch"]["codes"] == pitch and data["style"]["codes"] == style
