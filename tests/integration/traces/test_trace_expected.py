"""A toy's traced answer that is not its trained attribute is said in one line (when no attribute was given).

Reference: the toy's own greedy answer (``generate``) for each prompt, and its manifest's attribute.
Speech made by the ``espeak-ng`` program (its default voice ``en``; with ``-v en-us`` about 0.3 s of
trailing silence) is not what the toy heard in training; ``spiritlens.data.EspeakTTS`` is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import pytest

from spiritlens import trace
from spiritlens.tokens.trace_prompt import TracePrompt, display_tokens
from spiritlens.traces.expected import UnexpectedAnswerWarning, trained_attribute


@pytest.fixture(scope="module")
def fact(toy_root):
    from spiritlens.synthetic.toy.cache import toy_facts

    return toy_facts(toy_root)[0]


def speech_prompt(model, wav, transcript):
    ids = model.to_tokens([("speech", wav)])[0].tolist()
    return TracePrompt(ids, display_tokens(model, ids), (3, 6), modality="speech", prompt=transcript)


def test_known_prompts_answered_right_are_silent(toy_model, fact, tmp_path):
    from spiritlens.data import EspeakTTS

    assert trained_attribute(toy_model, fact.prompt) == fact.attribute
    wav = EspeakTTS().synthesize(fact.prompt, tmp_path / "q.wav")
    assert toy_model.generate([("speech", wav)], max_new_tokens=3, do_sample=False, verbose=False).strip() == fact.attribute
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnexpectedAnswerWarning)
        text = trace(toy_model, fact.prompt, fact.subject, samples=2, noise=0.1)
        speech = trace(toy_model, speech_prompt(toy_model, wav, fact.prompt), samples=2, noise=0.1)
    assert text.answer.strip() == speech.answer.strip() == fact.attribute


def test_the_espeak_program_voice_gives_a_wrong_answer_and_a_warning(toy_model, toy_root, tmp_path):
    from spiritlens.synthetic.toy.cache import toy_facts

    if shutil.which("espeak-ng") is None:
        pytest.skip("the espeak-ng program is not installed")
    for fact in toy_facts(toy_root):  # the first fact the program's voice gets wrong (on the small toy: the second)
        wav = tmp_path / f"program_{fact.known_id}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), fact.prompt], check=True, capture_output=True)
        answer = toy_model.decode_generated(toy_model.generate_ids([("speech", wav)], max_new_tokens=3)).strip()
        if answer != fact.attribute:  # the measured reason for the warning
            break
    else:
        pytest.fail("the toy understood the espeak-ng program's voice for every fact")
    with pytest.warns(UnexpectedAnswerWarning, match=rf"traced answer '{answer}' is not '{fact.attribute}'.*EspeakTTS"):
        result = trace(toy_model, speech_prompt(toy_model, wav, fact.prompt), samples=2, noise=0.1)
    assert result.answer.strip() == answer
    from spiritlens.synthetic.toy.cache import model_dir

    done = subprocess.run(  # the command line says it in one line
        [sys.executable, "-m", "spiritlens", "trace", "--model", str(model_dir(toy_root)), "--audio", str(wav),
         "--transcript", fact.prompt, "--subject", fact.subject, "--aligner", "pocketsphinx", "--speech-tokenizer",
         str(toy_root / "speech_tokenizer"), "--samples", "2", "--noise", "0.1", "--quiet",
         "--json", str(tmp_path / "cli.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr  # 1: the alignment of this voice may be flagged
    warned = [line for line in done.stderr.splitlines() if "UnexpectedAnswerWarning" in line]
    assert len(warned) == 1 and warned[0].startswith(f"spiritlens trace: warning: the traced answer '{answer}' is "
                                                     f"not '{fact.attribute}'"), done.stderr
    assert warned[0].endswith("(UnexpectedAnswerWarning)") and ".py:" not in done.stderr, done.stderr
    with warnings.catch_warnings():  # with the attribute given, it is recorded instead
        warnings.simplefilter("error", UnexpectedAnswerWarning)
        judged = trace(toy_model, speech_prompt(toy_model, wav, fact.prompt), samples=2, noise=0.1,
                       attribute=fact.attribute)
    assert judged.correct_prediction is False


def test_every_fact_and_paraphrase_of_the_toy_is_found(toy_model, toy_root):
    from spiritlens.synthetic.toy.cache import MANIFEST, toy_facts
    from spiritlens.traces.expected import TOY_MANIFEST

    assert TOY_MANIFEST == MANIFEST
    for fact in toy_facts(toy_root):
        for text in (fact.prompt, *fact.paraphrases):
            assert trained_attribute(toy_model, " " + text + " ") == fact.attribute


def test_other_models_and_prompts_are_left_alone(tiny_model, toy_model):
    assert trained_attribute(tiny_model, "The Space Needle is located in the city of") is None
    assert trained_attribute(toy_model, "A prompt the toy never saw") is None
