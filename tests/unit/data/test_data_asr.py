"""WER check: the normaliser, jiwer numbers on hand-made pairs, one real pocketsphinx transcription."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf
import soxr

from spiritlens.data import (
    ASRUnavailable,
    FliteTTS,
    WhisperASR,
    get_asr,
    load_audio_16k,
    normalize_text,
    normalize_words,
    synthesize_corpus,
    wer_check,
    wer_report,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1999", "nineteen ninety nine"),
        ("Nineteen ninety-nine!", "nineteen ninety nine"),
        ("In the 1980s, the 2nd U.S. census", "in the nineteen eighties the second us census"),
        ("3,000 people & 50% of Kyōto's Søren", "three thousand people and fifty percent of kyoto's soren"),
        ("Amazon.com, Inc. and X11.app", "amazon dot com incorporated and x eleven dot app"),
        ("$5.50, Pius XII, the '90s & #1", "five dollars and fifty cents pius the twelfth the nineties and number one"),
        ("U.S.A. and u. s. and US", "usa and u s and us"),
        ("775 km, 3.5 m, 2005", "seven hundred and seventy five km three point five m two thousand and five"),
        ("  'Rome'  --  ", "rome"),
    ],
)
def test_normaliser(raw, expected):
    assert normalize_text(raw) == expected


def test_normaliser_drops_articles_only_when_asked():
    assert normalize_words("The city of a Rome", drop_articles=True) == ["city", "of", "rome"]
    assert normalize_words("The city of a Rome") == ["the", "city", "of", "a", "rome"]


def test_wer_numbers_on_hand_made_pairs():
    report = wer_report(
        ["Rome is the capital of Italy.", "It was built in 1999", "Beats Music is owned by Apple"],
        ["rome is the capital of italy", "it was built in nineteen ninety-nine", "beats is owned by the apple inc"],
    )
    assert [item.wer for item in report.items] == [0.0, 0.0, pytest.approx(3 / 6)]
    third = report.items[2]
    assert (third.hits, third.substitutions, third.deletions, third.insertions) == (5, 0, 1, 2)
    assert third.reference_norm == "beats music is owned by apple"
    assert report.items[1].reference_norm == "it was built in nineteen ninety nine"
    # corpus WER = all errors / all reference words (6 + 7 + 6), not the mean of the items
    assert report.wer == pytest.approx(3 / 19)
    assert "num2words" in report.normalisation
    assert json.loads(json.dumps(report.to_dict()))["wer"] == pytest.approx(3 / 19)

    empty_hyp = wer_report(["a cat sat"], [""])
    assert empty_hyp.wer == 1.0 and empty_hyp.items[0].deletions == 3


def test_wer_input_errors():
    with pytest.raises(ValueError, match=r"references \(2\) and hypotheses \(1\) differ in length"):
        wer_report(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=r"reference #1 \('\.\.\.'\) is empty after normalisation"):
        wer_report(["a", "..."], ["a", "b"])
    with pytest.raises(TypeError, match="not a single str"):
        wer_report("abc", "abc")


def test_unavailable_asr_marks_wer_not_computed(tmp_path):
    with pytest.raises(ValueError, match="unknown ASR backend 'kaldi'; available: pocketsphinx, whisper"):
        get_asr("kaldi")
    with pytest.raises(ASRUnavailable, match="ASR backend 'whisper' unavailable"):
        get_asr("whisper", model=str(tmp_path / "small.pt"))
    check = wer_check([("0", "hello", tmp_path / "x.wav")], "whisper", out_path=tmp_path / "wer.json", model=None)
    assert check.computed is False and check.report is None
    if importlib.util.find_spec("whisper") is None and importlib.util.find_spec("faster_whisper") is None:
        assert check.reason == "ASR backend 'whisper' unavailable: neither openai-whisper nor faster-whisper is installed"
    else:
        assert check.reason == "ASR backend 'whisper' unavailable: no local Whisper model given (pass model=PATH or a cached model name)"
    assert json.loads((tmp_path / "wer.json").read_text())["computed"] is False
    assert not WhisperASR().available()


def test_load_audio_16k_averages_channels_and_resamples():
    t = np.arange(22050) / 22050
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1).astype(np.float32)
    wave = load_audio_16k(stereo, 22050)
    assert wave.shape == (16000,) and wave.dtype == np.float32
    assert np.abs(wave).max() == pytest.approx(0.5, abs=0.01)
    # An array without a rate is taken as 16 kHz (spiritlens' rule), so it is not resampled.
    assert load_audio_16k(stereo).shape == (22050,)


@pytest.mark.skipif(not FliteTTS("awb").available(), reason="libflite not installed (apt-get install flite)")
@pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is None, reason="pocketsphinx not installed")
def test_pocketsphinx_transcribes_a_flite_sentence(tmp_path):
    sentence = "Steve Jobs was the founder of Apple"
    synthesis = synthesize_corpus([("jobs", sentence), ("broken", "x")], FliteTTS(voice="awb"), tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"not audio")  # one unreadable file: recorded, not fatal
    items = synthesis.ok_items()
    check = wer_check(items, "pocketsphinx")  # ASR call 1
    assert check.computed and check.item_ids == ["jobs"]
    assert check.failed[0][0] == "broken" and "cannot read audio file" in check.failed[0][1]
    assert check.report.wer <= 0.15, check.report.items[0].hypothesis_norm  # measured 0.00

    # ASR call 2: the same audio as a 44.1 kHz stereo array goes through averaging and soxr.
    wave, sr = sf.read(str(tmp_path / "jobs.wav"), dtype="float32")
    stereo = np.repeat(soxr.resample(wave, sr, 44100)[:, None], 2, axis=1)
    hypothesis = get_asr("pocketsphinx").transcribe(stereo, sample_rate=44100)
    assert wer_report([sentence], [hypothesis]).wer <= 0.15, hypothesis
