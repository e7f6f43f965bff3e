"""S->T prompts aligned with pocketsphinx (the embedded default's aligner): words where the synthesiser put
them, the subject's speech tokens equal to the ground truth's, the API, the CLI and the figure."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import assert_drawn_png

from spiritlens.spoken import espeak
from spiritlens.align import map_seconds_to_speech_tokens
from spiritlens.data import EspeakTTS
from spiritlens.align.speech_prompt import SpeechPrompt
from spiritlens.spoken.form import spoken_form
from spiritlens.figures.alignment import plot_speech_prompt

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is None, reason="pocketsphinx not installed"),
    pytest.mark.skipif(not espeak.available(), reason="libespeak-ng not installed (apt-get install espeak-ng)"),
]
PROMPT, SUBJECT = "Muawiyah I is affiliated with the religion of", "Muawiyah I"


@pytest.fixture(scope="module")
def speech_model(tiny_root):
    from spiritlens import HookedSpiritLM

    return HookedSpiritLM.from_pretrained(tiny_root / "spiritlm_model" / "spirit-lm-base-7b")


@pytest.fixture(scope="module")
def synthesis(tmp_path_factory):
    return EspeakTTS().synthesize_spoken(spoken_form(PROMPT), tmp_path_factory.mktemp("ps") / "muawiyah.wav")


@pytest.fixture(scope="module")
def spoken(speech_model, synthesis):
    return SpeechPrompt.from_audio(speech_model, synthesis.path, transcript=PROMPT, subject=SUBJECT,
                                   aligner="pocketsphinx", reference_words=synthesis.words)


def test_words_and_subject_tokens_match_the_synthesiser(spoken, synthesis):
    assert spoken.emissions is None and spoken.alignment.method == "pocketsphinx"
    words, truth = spoken.alignment.words, synthesis.words
    assert [w.text for w in words] == [t.text for t in truth] == ["MUAWIYAH", "THE", "FIRST", "IS", "AFFILIATED",
                                                                   "WITH", "THE", "RELIGION", "OF"]
    errors = np.array([abs(w.start_s - t.start_s) for w, t in zip(words, truth)]
                      + [abs(w.end_s - t.end_s) for w, t in zip(words, truth)])
    assert np.median(errors) <= 0.03 and errors.max() <= 0.15, errors
    # ground truth: the speech tokens the synthesiser's own word times cover, by the same frame -> token rule
    subject_words = [k for k, t in enumerate(truth) if t.char_start < len(SUBJECT)]
    true_map = map_seconds_to_speech_tokens([(t.start_s, t.end_s) for t in truth], spoken.units.spans,
                                            spoken.units.frame_seconds)
    k0, k1 = true_map.range_of(subject_words)
    assert spoken.subject_range == (spoken.speech_offset + k0, spoken.speech_offset + k1)
    assert spoken.reference_words[0]["text"] == "MUAWIYAH"


def test_trace_prompt_and_json_name_the_aligner_and_its_frames(spoken, speech_model, tmp_path):
    extra = spoken.trace_prompt(speech_model).extra
    assert extra["aligner"] == "pocketsphinx" and extra["alignment_frame_unit"] == "pocketsphinx frame (10 ms)"
    data = spoken.alignment_json()
    assert data["aligner"] == "pocketsphinx" and data["words"]["frame_unit"] == "pocketsphinx frame (10 ms)"
    # the phones of the state-level pass: Muawiyah's from espeak-ng's pronunciation (M Y UW AH W IH Y AH)
    assert data["words"]["labels"][:8] == ["M", "Y", "UW", "AH", "W", "IH", "Y", "AH"]
    json.dumps(data)  # serialisable
    png = plot_speech_prompt(spoken, tmp_path / "alignment.png")
    assert_drawn_png(png)


def test_cli_trace_with_pocketsphinx(tiny_root, synthesis, tmp_path):
    out = tmp_path / "s2t.json"
    done = subprocess.run(
        [sys.executable, "-m", "spiritlens", "trace", "--model", str(tiny_root / "spiritlm_model" / "spirit-lm-base-7b"),
         "--audio", str(synthesis.path), "--transcript", PROMPT, "--subject", SUBJECT, "--aligner", "pocketsphinx",
         "--speech-tokenizer", str(tiny_root / "speech_tokenizer"), "--kind", "hidden", "--samples", "2",
         "--noise", "1.0", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["aligner"] == "pocketsphinx" and data["alignment"]["words"]["words"][2]["text"] == "FIRST"
    assert_drawn_png((tmp_path / "s2t_alignment.png"))


def test_experiment_takes_pocketsphinx_or_a_ctc_directory(tiny_root, tiny_ctc_dir, tmp_path):
    from spiritlens.align import CTCAligner, PocketsphinxAligner
    from spiritlens.experiment import ExperimentConfig
    from spiritlens.experiment.checkpoints import resolve_checkpoints
    from spiritlens.experiment.prepared import PreparedRun, RunModels

    for aligner, kind in (("pocketsphinx", PocketsphinxAligner), (str(tiny_ctc_dir), CTCAligner)):
        config = ExperimentConfig(out=tmp_path / "run", checkpoints=tiny_root, aligner=aligner)
        model_dir, _, chosen = resolve_checkpoints(config, config.out, log=lambda message: None)
        assert chosen == aligner and model_dir.is_dir()
        prep = PreparedRun(config=config.to_dict(), model_dir=str(model_dir), records={}, aligner=chosen)
        assert isinstance(RunModels(prep).aligner(), kind)
    from spiritlens.experiment.config import check_environment

    with pytest.raises(ValueError, match="--aligner is needed for S->T with real checkpoints: .* or 'pocketsphinx'"):
        check_environment(ExperimentConfig(out=tmp_path / "run", checkpoints=tiny_root))
