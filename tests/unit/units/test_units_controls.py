"""Prosody controls change exactly the tokens they claim: each controlled utterance equals SpiritLM's merge rule
re-applied, by a brute-force merge written here, to the streams the control describes (also written here), and
the streams it does not change keep every token, frame span and time span."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from spiritlens.units.controls import CONTROLS, ProsodyControl, apply_control, controlled_streams
from spiritlens.units.expressive import merge_units
from spiritlens.units.speech_tokenizer import Chunk, SpeechUnits

HOP, RATE = 640, 16_000


def make_units(seed: int, seconds: float):
    """Expressive units of a made-up utterance: HuBERT units per 25 Hz frame in runs, pitch codes per 80 ms in
    runs, one style code per second (as the three encoders lay them out; ``merge_units`` merges them)."""
    rng = np.random.RandomState(seed)
    samples = int(seconds * RATE)
    frames = -(-samples // HOP)

    def runs(n, vocabulary, longest):
        codes = []
        while len(codes) < n:
            codes += [int(rng.randint(vocabulary))] * int(rng.randint(1, longest + 1))
        return codes[:n]

    hubert = SpeechUnits.from_units(runs(frames, 500, 4), frame_seconds=HOP / RATE, sample_rate=RATE,
                                    num_samples=samples)
    pitch = runs(-(-samples // 1280), 64, 5)
    style = [int(c) for c in rng.randint(0, 100, -(-samples // RATE))]
    return merge_units(hubert, pitch, style, [Chunk(0, 0, len(pitch))], [Chunk(0, 0, len(style))],
                       chunk_ends=[samples])


def brute_merge(hubert: list[int], pitch: list[int], style: list[int], frames: int) -> list[tuple]:
    """SpiritLM's units_to_string, by brute force: HuBERT (24.99 Hz) and pitch (12.5 Hz) deduplicated, style
    (1 Hz) not; each token at time first index / rate; sorted by time, ties style, pitch, HuBERT. Each token
    with its 25 Hz frame span: a HuBERT run its frames, a pitch run 2 frames per code, a style code 25 frames,
    cut at the utterance's last frame."""
    items = []
    for rank, (tag, codes, rate, dedup, width) in enumerate(
            (("St", style, 1.0, False, 25), ("Pi", pitch, 12.5, True, 2), ("Hu", hubert, 24.99, True, 1))):
        i = 0
        while i < len(codes):
            j = i + 1
            while dedup and j < len(codes) and codes[j] == codes[i]:
                j += 1
            items.append((i / rate, rank, f"[{tag}{codes[i]}]", (width * i, min(width * j, frames))))
            i = j
    items.sort(key=lambda item: (item[0], item[1]))
    return [(string, span) for _, _, string, span in items]


def expected_streams(units, name: str, donor=None, seed: int = 0) -> dict[str, list[int]]:
    """What each control says it does to the per-code streams (units.controls' table), written out again."""
    hubert, pitch, style = list(units.hubert.units), list(units.pitch), list(units.style)
    if name == "flat_pitch":
        counts = Counter(pitch)
        top = max(counts.values())
        pitch = [min(c for c in counts if counts[c] == top)] * len(pitch)
    elif name == "shuffled_pitch":
        runs = []
        for code in pitch:
            if runs and runs[-1][0] == code:
                runs[-1][1] += 1
            else:
                runs.append([code, 1])
        order = np.random.RandomState(seed).permutation(len(runs))
        pitch = [runs[k][0] for k in order for _ in range(runs[k][1])]
    elif name == "other_pitch":
        pitch = (donor.pitch + [donor.pitch[-1]] * len(pitch))[:len(pitch)]
    elif name == "style_code":
        style = [min(set(range(101)) - set(style))] * len(style)
    elif name == "other_style":
        style = (donor.style + [donor.style[-1]] * len(style))[:len(style)]
    return {"hubert": hubert, "pitch": pitch, "style": style}


def tokens_of(units) -> list[tuple]:
    return [(t.string, t.frames) for t in units.tokens]


def stream_tokens(units, stream: str) -> list[tuple]:
    return [(t.unit, t.index, t.frames, t.time_span) for t in units.tokens if t.stream == stream]


CASES = [(name, seed, seconds, donor_seconds) for name in CONTROLS for seed, seconds, donor_seconds in
         ((0, 2.3, 3.1), (1, 3.0, 1.45), (2, 0.9, 0.9))]


@pytest.mark.parametrize("name, seed, seconds, donor_seconds", CASES)
def test_control_equals_the_brute_force_merge_of_its_streams(name, seed, seconds, donor_seconds):
    units = make_units(seed, seconds)
    donor = make_units(seed + 100, donor_seconds) if name in ("other_pitch", "other_style") else None
    control = ProsodyControl(name, seed=seed)
    changed = apply_control(units, control, donor)
    streams = expected_streams(units, name, donor, seed)
    assert controlled_streams(units, control, donor) == streams
    frames = len(units.hubert.units)
    assert tokens_of(changed) == brute_merge(streams["hubert"], streams["pitch"], streams["style"], frames)
    # the merge of the untouched streams is the utterance itself (the brute force agrees with merge_units)
    assert tokens_of(units) == brute_merge(units.hubert.units, units.pitch, units.style, frames)
    untouched = {"original": ("hubert", "pitch", "style")}.get(name) or tuple(
        s for s in ("hubert", "pitch", "style") if s != ("pitch" if "pitch" in name else "style"))
    for stream in untouched:
        assert stream_tokens(changed, stream) == stream_tokens(units, stream)
    if name != "original":
        touched = "pitch" if "pitch" in name else "style"
        assert getattr(changed, touched) == streams[touched]
        if name in ("flat_pitch", "style_code"):
            assert changed.token_strings() != units.token_strings()


def test_flattened_pitch_is_one_token_over_the_whole_utterance():
    units = make_units(3, 2.5)
    flat = apply_control(units, "flat_pitch")
    pitch = [t for t in flat.tokens if t.stream == "pitch"]
    assert len(pitch) == 1 and pitch[0].frames == (0, len(units.hubert.units)) and flat.tokens[1] is pitch[0]
    assert len(flat.tokens) == len(units.tokens) - len(units.positions_of("pitch")) + 1
    coded = apply_control(units, ProsodyControl("flat_pitch", code=7))
    assert [t.unit for t in coded.tokens if t.stream == "pitch"] == [7]


def test_style_code_and_seeds():
    units = make_units(4, 3.2)
    assert [t.unit for t in apply_control(units, ProsodyControl("style_code", code=5)).tokens
            if t.stream == "style"] == [5] * len(units.style)
    one = apply_control(units, ProsodyControl("shuffled_pitch", seed=1)).token_strings()
    assert one == apply_control(units, ProsodyControl("shuffled_pitch", seed=1)).token_strings()
    assert one != apply_control(units, ProsodyControl("shuffled_pitch", seed=2)).token_strings()


@pytest.mark.parametrize("make, message", [
    (lambda: ProsodyControl("louder"), "unknown prosody control 'louder'"),
    (lambda: ProsodyControl("shuffled_pitch", code=3), "takes no code"),
    (lambda: ProsodyControl("flat_pitch", code=-1), "code must be an integer >= 0"),
    (lambda: ProsodyControl("shuffled_pitch", seed=-2), "seed must be an integer"),
    (lambda: apply_control(make_units(0, 1.0), "other_pitch"), "needs a donor recording"),
    (lambda: apply_control(make_units(0, 1.0), "flat_pitch", make_units(1, 1.0)), "takes no donor"),
])
def test_bad_controls_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_units_of_several_chunks_are_refused():
    units = make_units(5, 1.0)
    units.hubert.chunks.append(Chunk(16_000 * 100, len(units.hubert.units), 0))
    with pytest.raises(ValueError, match="one chunk"):
        apply_control(units, "flat_pitch")


def test_units_that_do_not_remerge_to_themselves_are_refused():
    units = make_units(6, 1.5)
    units.tokens = units.tokens[::-1]
    with pytest.raises(ValueError, match="do not re-merge to their own tokens"):
        apply_control(units, "original")
