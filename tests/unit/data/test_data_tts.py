"""Speech synthesis: real espeak-ng WAVs, the on-disk cache and manifest, failures per item; ground-truth
word times from libespeak-ng and libflite checked against the waveform's own energy."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from spiritlens.spoken import espeak
from spiritlens.data import EspeakTTS, FliteTTS, TTSError, TTSUnavailable, get_backend, synthesize_corpus
from spiritlens.spoken.form import spoken_form

pytestmark = pytest.mark.skipif(not espeak.available(), reason="libespeak-ng not installed (apt-get install espeak-ng)")
needs_flite = pytest.mark.skipif(not FliteTTS("slt").available(), reason="libflite not installed (apt-get install flite)")

ITEMS = [
    ("0", "Vinson Massif is located in the continent of"),
    ("1", "Beats Music is owned by"),
    ("2", "-The Big Bang Theory premieres on"),  # leading '-' must not be read as an option
]


class FailsOnBang(EspeakTTS):
    """espeak-ng, except that texts containing 'Bang' fail."""

    def synthesize_spoken(self, form, path):
        if "Bang" in form.tts_text:
            raise TTSError("espeak: refused 'Bang'")
        return super().synthesize_spoken(form, path)


def test_espeak_corpus_writes_wavs_manifest_and_reuses_the_cache(tmp_path):
    out = tmp_path / "speech"
    first = synthesize_corpus(ITEMS, EspeakTTS(rate=175), out)
    assert first.synthesized == ["0", "1", "2"] and first.reused == [] and first.failed == []

    info = sf.info(str(out / "0.wav"))
    assert info.samplerate == 22050 and info.channels == 1
    assert 1.5 < info.frames / info.samplerate < 5.0  # 8 words at 175 words/min: about 2.7 s

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == 3 and len(manifest["checksum"]) == 64
    entry = manifest["entries"][0]
    assert {k: entry[k] for k in ("item_id", "text", "tts_text", "backend", "voice", "settings", "path", "sample_rate",
                                  "error")} == {
        "item_id": "0", "text": ITEMS[0][1], "tts_text": ITEMS[0][1], "backend": "espeak", "voice": "en-us",
        "settings": {"rate": 175}, "path": "0.wav", "sample_rate": 22050, "error": None,
    }
    assert [w["text"] for w in entry["words"]] == ["VINSON", "MASSIF", "IS", "LOCATED", "IN", "THE", "CONTINENT", "OF"]
    assert all(0 <= w["start_s"] < w["end_s"] <= entry["duration"] + 1e-3 for w in entry["words"])
    assert all(a["end_s"] <= b["start_s"] + 1e-6 for a, b in zip(entry["words"], entry["words"][1:]))
    assert entry["duration"] == pytest.approx(info.frames / 22050, abs=1e-3)
    assert len(entry["sha256"]) == 64
    assert first.audio_path("1") == out / "1.wav"
    assert [p.name for _, _, p in first.ok_items()] == ["0.wav", "1.wav", "2.wav"]

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")}
    second = synthesize_corpus(ITEMS, EspeakTTS(rate=175), out)
    assert second.synthesized == [] and second.reused == ["0", "1", "2"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")} == mtimes

    changed = [ITEMS[0], ("1", "Beats Music is owned by Apple"), ITEMS[2]]
    (out / "2.wav").write_bytes(b"RIFF corrupt")
    third = synthesize_corpus(changed, EspeakTTS(rate=175), out)
    assert third.synthesized == ["1", "2"] and third.reused == ["0"]
    assert (out / "0.wav").stat().st_mtime_ns == mtimes["0.wav"]
    assert sf.info(str(out / "1.wav")).frames > sf.info(str(out / "0.wav")).frames * 0.5

    faster = synthesize_corpus(ITEMS[:1], EspeakTTS(rate=260), out)
    assert faster.synthesized == ["0"]
    assert faster.entries[0].duration < entry["duration"] * 0.85
    assert len(json.loads((out / "manifest.json").read_text())["entries"]) == 3  # items not passed are kept


def test_a_failing_item_is_recorded_and_the_rest_continue(tmp_path):
    result = synthesize_corpus(ITEMS, FailsOnBang(), tmp_path)
    assert result.synthesized == ["0", "1"]
    assert result.failed == [("2", "TTSError: espeak: refused 'Bang'")]
    entries = {e["item_id"]: e for e in json.loads((tmp_path / "manifest.json").read_text())["entries"]}
    assert entries["2"]["error"] == "TTSError: espeak: refused 'Bang'"
    assert entries["2"]["path"] is None and not (tmp_path / "2.wav").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.wav", "1.wav", "manifest.json"]  # no temporary files left
    retry = synthesize_corpus(ITEMS, EspeakTTS(), tmp_path)
    assert retry.synthesized == ["2"] and retry.reused == ["0", "1"]


def test_bad_inputs_and_registry_errors(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        synthesize_corpus([("a", "x"), ("a", "y")], EspeakTTS(), tmp_path)
    with pytest.raises(ValueError, match=r"item id '../x' must be"):
        synthesize_corpus([("../x", "hello")], EspeakTTS(), tmp_path)
    result = synthesize_corpus([("e", "   "), ("r", "Москва is"), ("ok", "Rome")], EspeakTTS(), tmp_path)
    assert result.failed == [("e", "TTSError: espeak: text to synthesise is empty"),
                             ("r", "ValueError: text 'Москва is': no spoken form for character(s) 'М' (U+041C), "
                                   "'о' (U+043E), 'с' (U+0441), 'к' (U+043A), 'в' (U+0432), 'а' (U+0430)")]
    assert result.synthesized == ["ok"]
    with pytest.raises(TTSError, match="espeak: text to synthesise is empty"):
        EspeakTTS().synthesize(" ", tmp_path / "x.wav")
    with pytest.raises(ValueError, match=r"unknown TTS backend 'festival'; available: espeak, flite.*, melotts \(not installed\)"):
        get_backend("festival")
    with pytest.raises(TTSUnavailable, match=r"'melotts' cannot run here; available: espeak"):
        get_backend("melotts")
    with pytest.raises(ValueError, match="flite: unknown voice 'bob'; choose one of slt, awb, rms, kal"):
        FliteTTS(voice="bob")
    assert isinstance(get_backend("espeak", rate=200), EspeakTTS)


def test_a_backend_whose_program_is_missing_stops_before_any_work(tmp_path):
    class Missing(EspeakTTS):
        def available(self):
            return False

    with pytest.raises(TTSUnavailable, match=r"^TTS backend 'espeak' cannot run here; available: espeak"):
        synthesize_corpus(ITEMS, Missing(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _energy_regions(samples, rate, threshold=0.01, merge_s=0.06):
    """Speech regions [start_s, end_s) of a waveform: 5 ms frames with RMS above ``threshold``, gaps under
    ``merge_s`` merged (an independent, brute-force reading of where the audio has sound)."""
    hop = int(rate * 0.005)
    x = samples.astype(np.float64) / 32768.0
    rms = np.sqrt([np.mean(x[i:i + hop] ** 2) for i in range(0, len(x) - hop, hop)])
    regions, start = [], None
    for i, active in enumerate(list(rms > threshold) + [False]):
        if active and start is None:
            start = i
        elif not active and start is not None:
            if regions and start * 0.005 - regions[-1][1] < merge_s:
                regions[-1] = (regions[-1][0], i * 0.005)
            else:
                regions.append((start * 0.005, i * 0.005))
            start = None
    return regions


@pytest.mark.parametrize("backend", [EspeakTTS(), pytest.param(FliteTTS("slt"), marks=needs_flite),
                                     pytest.param(FliteTTS("kal"), marks=needs_flite)], ids=["espeak", "flite-slt", "flite-kal"])
def test_word_times_sit_where_the_audio_has_sound(backend, tmp_path):
    # words separated by pauses: each word's sound is one energy region
    form = spoken_form("Anna, Emma, Amelia, Norman, Ella.")
    synthesis = backend.synthesize_spoken(form, tmp_path / "a.wav")
    samples, rate = sf.read(str(synthesis.path), dtype="int16")
    assert rate == synthesis.sample_rate and len(samples) == synthesis.num_samples
    regions = _energy_regions(samples, rate)
    assert len(regions) == 5, regions
    for word, (start, end) in zip(synthesis.words, regions):  # measured: starts within 25 ms, ends within 35 ms
        assert abs(word.start_s - start) <= 0.03 and abs(word.end_s - end) <= 0.05, (word, start, end)
    for a, b in zip(synthesis.words, synthesis.words[1:]):
        assert a.end_s <= b.start_s  # pauses between the words belong to no word


def test_espeak_phoneme_events_agree_with_the_library_word_events():
    text = "Pius the twelfth was born in Rome, Italy."
    speech = espeak.synthesize(text)
    assert speech.sample_rate == 22050 and speech.samples.dtype == np.int16
    names = [name for _, _, name in speech.phoneme_events if not name.startswith("_")]
    assert names[:4] == ["p", "aI", "@", "s"] and len(names) >= 25
    starts = [sample for _, sample, _ in speech.phoneme_events]
    assert starts == sorted(starts) and starts[-1] <= len(speech.samples)
    words = re.finditer(r"\w+", text)
    times = speech.word_times([m.span() for m in words])
    assert all(t is not None for t in times) and times[0][0] == pytest.approx(0.049, abs=0.002)
    assert times[-1][1] <= len(speech.samples) / 22050
    assert espeak.phonemes("Muawiyah") == ["m", "j", "ˈuː", "ɐ", "w", "ˌɪ", "j", "ə"]


@needs_flite
def test_flite_corpus_records_word_times_for_folded_text(tmp_path):
    result = synthesize_corpus([("z", "Zürich hosted 3,000 guests")], FliteTTS("slt", duration_stretch=1.2), tmp_path)
    entry = result.entries[0]
    assert entry.sample_rate == 16000 and entry.tts_text == "Zürich hosted three thousand guests"
    times = entry.word_times()
    assert [w.text for w in times] == ["ZURICH", "HOSTED", "THREE", "THOUSAND", "GUESTS"]
    assert [(w.char_start, w.char_end) for w in times][2:4] == [(14, 19), (14, 19)]
    assert all(a.end_s <= b.start_s and a.start_s < a.end_s for a, b in zip(times, times[1:]))


def test_words_espeak_speaks_as_one_are_split_at_their_own_phonemes():
    form = spoken_form("located in the continent")
    speech = espeak.synthesize(form.tts_text)
    # espeak-ng reads "in the" as one word: every phoneme of both carries the position of "in"
    assert [name for char, _, name in speech.phoneme_events if char == form.words[1].tts_start] == ["I", "n", "D", "@2"]
    assert not [e for e in speech.phoneme_events if e[0] == form.words[2].tts_start]
    times = speech.word_times([(w.tts_start, w.tts_end) for w in form.words])
    d_sample = next(sample for _, sample, name in speech.phoneme_events if name == "D")
    k_sample = next(sample for _, sample, name in speech.phoneme_events if name == "k" and sample > d_sample)
    assert times[1][1] == times[2][0] == d_sample / 22050  # "in" ends and "the" starts at the D
    assert times[2][1] == times[3][0] == k_sample / 22050


def test_espeak_synthesis_is_the_same_every_time_and_as_the_program(tmp_path):
    # in one process libespeak-ng drifts by a few samples from call to call; each call runs in a fresh fork
    text = "Anna, Emma, Amelia, Norman, Ella."
    first = espeak.synthesize(text)
    espeak.synthesize("something else, faster", rate=300)
    espeak.phonemes("Kierkegaard")
    again = espeak.synthesize(text)
    assert np.array_equal(first.samples, again.samples) and first.phoneme_events == again.phoneme_events
    import shutil
    import subprocess

    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "175", "-w", str(tmp_path / "cli.wav"), text], check=True)
        cli, rate = sf.read(str(tmp_path / "cli.wav"), dtype="int16")
        assert rate == 22050 and np.array_equal(cli[:len(first.samples)], first.samples)  # then trailing silence
        assert not cli[len(first.samples):].any()


@needs_flite
@pytest.mark.parametrize("voice", ["awb", "slt", "rms"])
def test_flite_synthesis_is_the_same_every_time_and_as_the_program(voice, tmp_path):
    # flite's voices draw noise from rand(): unseeded, every call gave other samples (and pocketsphinx
    # another transcript); each synthesis seeds it as a fresh process does.
    import random
    import shutil
    import subprocess

    text = "Steve Jobs was the founder of Apple"
    backend = FliteTTS(voice)
    first = sf.read(str(backend.synthesize(text, tmp_path / "first.wav")), dtype="int16")[0]
    backend.synthesize("something else entirely", tmp_path / "other.wav")
    random.seed(7)  # Python's generator is not C's; nothing else may matter either
    again = sf.read(str(backend.synthesize(text, tmp_path / "again.wav")), dtype="int16")[0]
    assert np.array_equal(first, again)
    if shutil.which("flite"):
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(tmp_path / "cli.wav")], check=True)
        assert np.array_equal(sf.read(str(tmp_path / "cli.wav"), dtype="int16")[0], first)


def _restamp(document: dict) -> dict:
    """A hand-editor's manifest with its checksum recomputed by the rule (SHA-256 of the canonical JSON)."""
    import hashlib

    body = {k: v for k, v in document.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {**body, "checksum": hashlib.sha256(text.encode("utf-8")).hexdigest()}


@pytest.mark.parametrize("path", ["../victim.wav", "/abs/victim.wav", "link.wav"])
def test_a_manifest_path_out_of_the_folder_is_never_read(tmp_path, path):
    import hashlib

    from spiritlens.data import load_manifest

    out = tmp_path / "speech"
    synthesize_corpus(ITEMS[:2], EspeakTTS(), out)
    victim = tmp_path / "victim.wav"
    victim.write_bytes((out / "0.wav").read_bytes())  # a file outside, with the hash the entry records
    if path == "link.wav":
        (out / "link.wav").symlink_to(victim)
    data = json.loads((out / "manifest.json").read_text())
    data["entries"][0]["path"] = str(victim) if path.startswith("/") else path
    data["entries"][0]["sha256"] = hashlib.sha256(victim.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(_restamp(data)))
    with pytest.raises(ValueError, match=r"^speech manifest .*manifest\.json: entry '0': path .* (is not a file name "
                                         r"inside|leads out of) "):
        load_manifest(out)
    again = synthesize_corpus(ITEMS[:2], EspeakTTS(), out)
    assert again.synthesized == ["0"] and again.reused == ["1"]
    assert again.recomputed[0][0] == "0" and "never read; re-synthesised" in again.recomputed[0][1]
    assert again.audio_path("0") == out / "0.wav" and load_manifest(out)["0"].path == "0.wav"


def test_an_edited_manifest_is_not_trusted(tmp_path):
    from spiritlens.data import load_manifest

    synthesize_corpus(ITEMS[:2], EspeakTTS(), tmp_path)
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["entries"][1]["words"][0]["start_s"] = 0.5  # a ground-truth time moved by hand
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="content does not match its checksum"):
        load_manifest(tmp_path)
    again = synthesize_corpus(ITEMS[:2], EspeakTTS(), tmp_path)
    assert again.synthesized == ["0", "1"] and again.reused == []
    assert [r for _, r in again.recomputed] == ["content does not match its checksum (edited or damaged after it was "
                                                "written)"] * 2
    assert load_manifest(tmp_path)["1"].words[0]["start_s"] != 0.5
