"""Hostile Known files and audio files.

A Known file as a whole (100,000 levels deep, 70 MB, not UTF-8) is refused in one line; a bad
record is dropped and its reason reported (a 260-digit ``known_id`` would name a result file no file
system accepts, a 1 MB prompt would be traced as 250,000 tokens). Audio is refused before it costs
memory or time: a WAV header declaring 1 Hz (soxr would make 16,000 times the samples), 4 GHz, an
amplitude of 1e30 or float samples in integer scale, 11 minutes against the 10-minute limit (lifted
with ``max_seconds=None`` / ``--max-audio-seconds 0``). Each case runs in a child process under
1 GB of peak RSS within 10 s (conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from hostile_inputs import deep_json, wav_declaring

GOOD = {"known_id": 1, "prompt": "The Space Needle is located in", "subject": "Space Needle", "attribute": "Seattle",
        "relation_id": "P131"}


def records(*changes: dict) -> str:
    return json.dumps([{**GOOD, "known_id": i + 1, **change} for i, change in enumerate(changes)])


KNOWN_CASES = {
    # name: (file content, expected: ("dropped", reason regex) or ("refused", error regex))
    "id_260_digits": (records({"known_id": 10**259}), ("dropped", r"^record #0: known_id = 10+\.\.\.0+ is not an "
                                                                  r"integer in 0\.\.999999999$")),
    "id_negative": (records({"known_id": -1}), ("dropped", r"^record #0: known_id = -1 is not an integer in 0\.\.999999999$")),
    "prompt_1mb": (records({"prompt": "x" * (1 << 20) + " Space Needle"}),
                   ("dropped", r"^record #0: prompt = 'xxxx.*' is not a string of at most 1000 characters$")),
    "relation_list": (records({"relation_id": [1]}),
                      ("dropped", r"^record #0: relation_id = \[1\] is not a string of at most 100 characters or null$")),
    "subject_number": (records({"subject": 7}), ("dropped", r"^missing or empty subject$")),
    "record_list": ("[[1, 2]]", ("dropped", r"^record #0 is a list, not an object$")),
    "escape_in_prompt": (records({"prompt": "The \x1b[2J\x07Space Needle is located in"}), ("kept", None)),
    "deep": (deep_json(100_000), ("refused", r"known\.json is nested deeper than 64 levels \(refused before parsing\)$")),
    "70_megabytes": ('["' + "x" * (70 << 20) + '"]', ("refused", r"known\.json is larger than 64 MiB, the limit for a "
                                                                 r"Known dataset: refused unread$")),
    "not_utf8": (b"[\xc3\x28]", ("refused", r"known\.json is not UTF-8 text \(a binary file\?\): byte 1 is b'\\xc3'$")),
    "object": ('{"known_id": 1}', ("refused", r"must be a JSON list of records, got dict$")),
    "digits": ("[" + "7" * 5000 + "]", ("refused", r"known\.json is not valid JSON: Exceeds the limit \(4300 digits\)")),
}


@pytest.mark.parametrize("case", list(KNOWN_CASES))
def test_known_files(hostile, tmp_path, case):
    content, (verdict, expected) = KNOWN_CASES[case]
    path = tmp_path / "known.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    outcome = hostile.call("hostile_inputs:known_problems", path)
    if verdict == "refused":
        outcome.refused(expected)
        return
    outcome.bounded()
    assert outcome.kind == "returned", outcome.describe()
    kept, *reasons = eval(outcome.value)  # a list of an int and strings, repr'd by the child
    if verdict == "kept":
        assert (kept, reasons) == (1, [])
    else:
        assert kept == 0 and len(reasons) == 1 and __import__("re").search(expected, reasons[0]), reasons


def test_a_known_file_nested_too_deep_through_trace(hostile, tiny_base_dir, tmp_path):
    known = tmp_path / "known.json"
    known.write_text(deep_json(100_000))
    outcome = hostile.cli("trace", "--model", tiny_base_dir, "--prompt", "The Space Needle is located in", "--subject",
                          "Space Needle", "--noise", "3s", "--known", known, "--json", tmp_path / "r.json")
    outcome.refused(rf"trace: error: Known dataset {known} is nested deeper than 64 levels")
    assert "tokenizer:" not in outcome.stdout


# -------------------------------------------------------------------------------------------- audio
def float_wav(values, rate: int = 16_000):
    def make(path: Path) -> Path:
        soundfile.write(path, np.asarray(values, np.float32), rate, subtype="FLOAT")
        return path
    return make


def pcm_wav(seconds: float, rate: int = 8_000):
    def make(path: Path) -> Path:
        soundfile.write(path, np.zeros(int(seconds * rate), np.int16), rate, subtype="PCM_16")
        return path
    return make


def raw(data: bytes):
    def make(path: Path) -> Path:
        path.write_bytes(data)
        return path
    return make


AUDIO_CASES = {
    # name: (make(path), load_audio keyword arguments, expected regex, or None for a correct run)
    "rate_1hz": (lambda p: wav_declaring(p, 1), {}, r"a\.wav: sample rate 1 Hz is outside 4000\.\.768000 Hz \(not a plausible"),
    "rate_1mhz": (lambda p: wav_declaring(p, 1_000_000), {}, r"sample rate 1000000 Hz is outside 4000\.\.768000 Hz"),
    "rate_4ghz": (lambda p: wav_declaring(p, 2**32 - 1), {}, r"a\.wav: cannot read audio file \(.*SF_INFO struct incomplete"),
    "amplitude_1e30": (float_wav(np.full(1600, 1e30)), {}, r"a\.wav: samples reach 1e\+30, beyond the plausible amplitude 10 "
                                                           r"\(full scale is 1: float audio in integer scale, or damaged\)$"),
    "integer_scale_floats": (float_wav(np.full(1600, 32767.0)), {}, r"samples reach 32767, beyond the plausible amplitude"),
    "nan": (float_wav([0.1, np.nan] * 800), {}, r"a\.wav: the audio contains 800 NaN or infinite sample\(s\)$"),
    "eleven_minutes": (pcm_wav(660), {}, r"a\.wav: 660\.0 s of audio, longer than the limit of 600 s \(pass "
                                         r"max_seconds=None, or --max-audio-seconds on the command line, to lift it\)$"),
    "eleven_minutes_lifted": (pcm_wav(660), {"max_seconds": None}, None),
    "two_seconds_limit_one": (pcm_wav(2), {"max_seconds": 1}, r"a\.wav: 2\.0 s of audio, longer than the limit of 1 s"),
    "random_bytes": (raw(bytes(range(256)) * 64), {}, r"a\.wav: cannot read audio file \("),
    "empty": (raw(b""), {}, r"a\.wav: the audio file is empty \(0 bytes\)$"),
    "eight_channels": (lambda p: soundfile.write(p, np.zeros((100, 8), np.float32), 16_000) or p, {},
                       r"a\.wav: 8 channels found, at most 2 \(mono or stereo\) are supported$"),
    "max_seconds_negative": (pcm_wav(1), {"max_seconds": -1}, r"^max_seconds must be a number > 0 or None, got -1$"),
}


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_audio_files(hostile, tmp_path, case):
    make, kwargs, expected = AUDIO_CASES[case]
    path = make(tmp_path / "a.wav")
    outcome = hostile.call("spiritlens.audio.waveform:load_audio", path, **kwargs)
    if expected is None:
        outcome.bounded()
        assert outcome.kind == "returned" and "sample_rate=16000" in outcome.value, outcome.describe()
        return
    outcome.refused(expected)


@pytest.mark.parametrize("argv,expected", [
    (["--max-audio-seconds", "-1"], r"units: error: --max-audio-seconds must be a number of seconds >= 0 \(0: no limit\), "
                                    r"got '-1'$"),
    (["--max-audio-seconds", "1"], r"units: error: \S+a\.wav: 2\.0 s of audio, longer than the limit of 1 s"),
])
def test_units_audio_limits(hostile, tiny_root, tmp_path, argv, expected):
    audio = pcm_wav(2, 16_000)(tmp_path / "a.wav")
    outcome = hostile.cli("units", audio, "--json", tmp_path / "u.json", "--speech-tokenizer",
                          tiny_root / "speech_tokenizer", *argv)
    outcome.refused(expected)
    assert not (tmp_path / "u.json").exists()


def test_units_error_line_shows_control_characters(hostile, tmp_path):
    audio = tmp_path / "evil\x1b[2J\x07.wav"
    outcome = hostile.cli("units", audio, "--json", tmp_path / "u.json", "--speech-tokenizer", tmp_path)
    line = outcome.refused(r"units: error: \S+/evil␛\[2J␇\.wav: no such audio file$", error="FileNotFoundError")
    assert "\x1b" not in outcome.stderr and "\x07" not in outcome.stderr, line
