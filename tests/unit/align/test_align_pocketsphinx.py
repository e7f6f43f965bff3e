"""pocketsphinx forced alignment: IPA -> ARPAbet pronunciations for every word the CMU dictionary lacks,
and alignments of synthesised speech measured against the synthesiser's own word times."""

import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf

from spiritlens.spoken import espeak
from spiritlens.align import LowAlignmentConfidence, PocketsphinxAligner, get_aligner, ipa_to_arpabet
from spiritlens.audio.waveform import load_audio
from spiritlens.data import EspeakTTS, FliteTTS
from spiritlens.spoken.form import spoken_form

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is None, reason="pocketsphinx not installed"),
    pytest.mark.skipif(not espeak.available(), reason="libespeak-ng not installed (apt-get install espeak-ng)"),
]
ARPABET = {"AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
           "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y",
           "Z", "ZH"}


@pytest.fixture(scope="module")
def aligner():
    return PocketsphinxAligner()


@pytest.mark.parametrize("ipa,arpabet", [
    (["m", "j", "ˈuː", "ɐ", "w", "ˌɪ", "j", "ə"], "M Y UW AH W IH Y AH"),  # Muawiyah
    (["k", "ˌɪɹ", "k", "ɪ", "ɡ", "ˈɑːɹ", "d"], "K IH R K IH G AA R D"),  # Kierkegaard
    (["p", "ˈɛ", "l", "ɪ", "ɾ", "i", "ɚ"], "P EH L IH T IY ER"),  # Pelletier
    (["dʒ", "ˈoʊ", "z", "ˈeɪ"], "JH OW Z EY"),
    (["tʃ", "ˈaɪə", "n̩", "ð", "θ", "ʃ", "ʒ", "ŋ"], "CH AY AH AH N DH TH SH ZH NG"),
    (["ˈɔːɹ", "ˌiə", "ᵻ", "x", "ʔ"], "AO R IY AH IH K T"),
])
def test_ipa_to_arpabet(ipa, arpabet):
    assert ipa_to_arpabet(ipa) == arpabet


def test_an_unmapped_ipa_symbol_is_named():
    with pytest.raises(ValueError, match=r"word 'Baʕal': no ARPAbet phone for the IPA symbol 'ʕ' \(U\+0295\)"):
        ipa_to_arpabet(["b", "ˈa", "ʕ", "a", "l"], "Baʕal")
    with pytest.raises(ValueError, match="espeak-ng gives it no phonemes"):
        ipa_to_arpabet([], "x")


def test_every_known_word_gets_a_pronunciation(aligner, known_path):
    records = json.loads(known_path.read_text())
    pairs = {}
    for record in records:
        form = spoken_form(record["prompt"])
        for i, word in enumerate(form.words):
            pairs.setdefault(word.text.lower(), form.tts_word(i))
    sources = {"cmudict": 0, "espeak-ng": 0}
    for (key, _), (phones, source) in zip(pairs.items(), aligner.pronunciations(pairs.items())):
        sources[source] += 1
        assert phones and set(phones.split()) <= ARPABET, (key, phones)
    assert sources["espeak-ng"] >= 600  # names the CMU dictionary lacks (measured 650): none dropped
    assert aligner.pronunciation("muawiyah") == ("M Y UW AH W IH Y AH", "espeak-ng")
    assert aligner.pronunciation("capital")[1] == "cmudict"


PROMPTS = [
    "Muawiyah I is affiliated with the religion of",
    "Vinson Massif is located in the continent of",
    "Pius XII, whose position is that of a \"superior\"",
    "Sleater-Kinney, founded in 1991, is a feminist punk band from",
]


def _errors(alignment, truth):
    assert [w.text for w in alignment] == [t.text for t in truth]
    return np.array([abs(w.start_s - t.start_s) for w, t in zip(alignment, truth)]
                    + [abs(w.end_s - t.end_s) for w, t in zip(alignment, truth)])


@pytest.mark.parametrize("backend", [EspeakTTS(), pytest.param(
    FliteTTS("slt"), marks=pytest.mark.skipif(not FliteTTS("slt").available(), reason="libflite not installed"))],
    ids=["espeak", "flite-slt"])
def test_alignment_of_synthesised_prompts_matches_the_synthesiser(aligner, backend, tmp_path):
    errors = []
    for k, prompt in enumerate(PROMPTS):
        synthesis = backend.synthesize_spoken(spoken_form(prompt), tmp_path / f"{k}.wav")
        wav, rate = sf.read(str(synthesis.path), dtype="float32")
        alignment = aligner.align(wav, prompt, sample_rate=rate)
        assert alignment.method == "pocketsphinx" and alignment.frame_unit == "pocketsphinx frame (10 ms)"
        assert alignment.sample_rate == 16000 and alignment.num_samples == pytest.approx(len(wav) * 16000 / rate, abs=2)
        assert all(w.start_s == pytest.approx(w.start_frame * 0.01) and w.start_frame < w.end_frame <= alignment.num_frames
                   for w in alignment)
        assert all(a.end_frame <= b.start_frame for a, b in zip(alignment.words, alignment.words[1:]))
        assert [(w.char_start, w.char_end) for w in alignment] == [(w.char_start, w.char_end) for w in synthesis.words]
        errors.append(_errors(alignment, synthesis.words))
    errors = np.concatenate(errors)
    # measured: median 10 ms (espeak-ng) / 8 ms (flite), worst 60 ms / 50 ms over these prompts
    assert np.median(errors) <= 0.025 and errors.max() <= 0.15, (np.median(errors), errors.max())


def test_inputs_at_any_rate_and_waveforms_agree(aligner, tmp_path):
    synthesis = EspeakTTS().synthesize_spoken(spoken_form(PROMPTS[1]), tmp_path / "a.wav")
    wav, rate = sf.read(str(synthesis.path), dtype="float32")
    assert rate == 22050
    from_file_rate = aligner.align(wav, PROMPTS[1], sample_rate=rate)
    waveform = load_audio(synthesis.path)  # 16 kHz
    assert [(w.start_frame, w.end_frame) for w in aligner.align(waveform, PROMPTS[1])] == \
           [(w.start_frame, w.end_frame) for w in from_file_rate]


def test_wrong_transcripts_score_low_and_bad_audio_is_an_error(aligner, tmp_path):
    synthesis = EspeakTTS().synthesize_spoken(spoken_form(PROMPTS[1]), tmp_path / "a.wav")
    wav, rate = sf.read(str(synthesis.path), dtype="float32")
    right = aligner.align(wav, PROMPTS[1], sample_rate=rate)
    assert 0.05 < right.confidence <= 1 and not right.low_confidence
    with pytest.warns(LowAlignmentConfidence, match=r"pocketsphinx alignment confidence 0\.0\d+ is below "
                                                    r"min_confidence=0\.05"):
        wrong = aligner.align(wav, "the cat sat on a mat with a hat and a bat and a rat", sample_rate=rate)
    assert wrong.low_confidence and wrong.confidence < right.confidence / 5
    assert right.coverage >= 0.95
    with pytest.warns(LowAlignmentConfidence, match=r"covers only \d+% of the speech with words \(under 90%"):
        part = aligner.align(wav, "is located in", sample_rate=rate)  # words missing from the transcript
    assert part.low_confidence and part.coverage < 0.7
    with pytest.raises(ValueError, match=r"pocketsphinx could not align the transcript .* audio too short"):
        aligner.align(wav[:rate // 4], PROMPTS[1], sample_rate=rate)
    with pytest.raises(ValueError, match="waveform is silent"):
        aligner.align(np.zeros(16000, np.float32), "hello")
    with pytest.raises(ValueError, match=r"pocketsphinx \(25 ms\) needs 400"):
        aligner.align(np.ones(100, np.float32), "hello")
    with pytest.raises(ValueError, match="no spoken form for character"):
        aligner.align(wav, "Москва", sample_rate=rate)
    with pytest.raises(ValueError, match=r"aligner 'no/such/dir' is neither 'pocketsphinx' nor an existing CTC"):
        get_aligner("no/such/dir")
    assert isinstance(get_aligner("pocketsphinx"), PocketsphinxAligner) and get_aligner(aligner) is aligner


def test_repeated_alignments_come_from_the_cache_and_still_warn(tmp_path):
    aligner = PocketsphinxAligner()
    synthesis = EspeakTTS().synthesize_spoken(spoken_form(PROMPTS[1]), tmp_path / "a.wav")
    first = aligner.align(synthesis.path, PROMPTS[1])
    calls = []
    aligner._align = lambda *a: calls.append(a)  # any decoding from here on would be recorded
    again = aligner.align(synthesis.path, PROMPTS[1])
    assert again == first and calls == []
    with pytest.warns(LowAlignmentConfidence, match="min_confidence=0.99"):
        strict = aligner.align(synthesis.path, PROMPTS[1], min_confidence=0.99)
    assert strict.low_confidence and strict.min_confidence == 0.99 and calls == []
