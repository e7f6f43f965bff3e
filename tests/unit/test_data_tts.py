"""Speech synthesis: real espeak-ng WAVs, the on-disk cache and manifest, failures per item."""

from __future__ import annotations

import json
import shutil

import pytest
import soundfile as sf

from spiritlens.data import EspeakTTS, FliteTTS, TTSUnavailable, get_backend, synthesize_corpus

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)")

ITEMS = [
    ("0", "Vinson Massif is located in the continent of"),
    ("1", "Beats Music is owned by"),
    ("2", "-The Big Bang Theory premieres on"),  # leading '-' must not be read as an option
]


class FailsOnBang(EspeakTTS):
    """espeak-ng, except that texts containing 'Bang' run the real program `false`."""

    def command(self, text, path):
        return ["false"] if "Bang" in text else super().command(text, path)


def test_espeak_corpus_writes_wavs_manifest_and_reuses_the_cache(tmp_path):
    out = tmp_path / "speech"
    first = synthesize_corpus(ITEMS, EspeakTTS(rate=175), out)
    assert first.synthesized == ["0", "1", "2"] and first.reused == [] and first.failed == []

    info = sf.info(str(out / "0.wav"))
    assert info.samplerate == 22050 and info.channels == 1
    assert 1.5 < info.frames / info.samplerate < 5.0  # 8 words at 175 words/min: about 2.7 s

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == 1
    entry = manifest["entries"][0]
    assert {k: entry[k] for k in ("item_id", "text", "backend", "voice", "settings", "path", "sample_rate", "error")} == {
        "item_id": "0", "text": ITEMS[0][1], "backend": "espeak", "voice": "en-us", "settings": {"rate": 175},
        "path": "0.wav", "sample_rate": 22050, "error": None,
    }
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
    assert result.failed == [("2", "TTSError: espeak: false exited with status 1 (no error output)")]
    entries = {e["item_id"]: e for e in json.loads((tmp_path / "manifest.json").read_text())["entries"]}
    assert entries["2"]["error"].startswith("TTSError: espeak: false exited with status 1")
    assert entries["2"]["path"] is None and not (tmp_path / "2.wav").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.wav", "1.wav", "manifest.json"]  # no temporary files left
    retry = synthesize_corpus(ITEMS, EspeakTTS(), tmp_path)
    assert retry.synthesized == ["2"] and retry.reused == ["0", "1"]


def test_bad_inputs_and_registry_errors(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        synthesize_corpus([("a", "x"), ("a", "y")], EspeakTTS(), tmp_path)
    with pytest.raises(ValueError, match=r"item id '../x' must be"):
        synthesize_corpus([("../x", "hello")], EspeakTTS(), tmp_path)
    result = synthesize_corpus([("e", "   ")], EspeakTTS(), tmp_path)
    assert result.failed == [("e", "TTSError: espeak: text to synthesise is empty")]
    with pytest.raises(ValueError, match=r"unknown TTS backend 'festival'; available: espeak, flite.*, melotts \(not installed\)"):
        get_backend("festival")
    with pytest.raises(TTSUnavailable, match=r"'melotts' cannot run here; available: espeak"):
        get_backend("melotts")
    with pytest.raises(ValueError, match="flite: unknown voice 'bob'; choose one of slt, awb, rms, kal"):
        FliteTTS(voice="bob")
    assert isinstance(get_backend("espeak", rate=200), EspeakTTS)


def test_a_backend_whose_program_is_missing_stops_before_any_work(tmp_path):
    class Missing(EspeakTTS):
        executable = "spiritlens-no-such-tts"

    with pytest.raises(TTSUnavailable, match=r"^TTS backend 'espeak' cannot run here; available: espeak"):
        synthesize_corpus(ITEMS, Missing(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
