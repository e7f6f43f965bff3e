"""Speech->text tracing end to end: audio -> units -> CTC alignment -> position groups -> trace."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from helpers import SPOKEN_PROMPT, assert_drawn_png, space_needle_prompt
from spiritlens import trace
from spiritlens.align import LowAlignmentConfidence
from spiritlens.align.speech_prompt import SpeechPrompt


@pytest.fixture(scope="module")
def speech_model(tiny_root):
    from spiritlens import HookedSpiritLM

    return HookedSpiritLM.from_pretrained(tiny_root / "spiritlm_model" / "spirit-lm-base-7b")


@pytest.fixture(scope="module")
def spoken(speech_model, spoken_prompt_wav, tiny_ctc_dir):
    return space_needle_prompt(speech_model, spoken_prompt_wav, tiny_ctc_dir)


def test_speech_prompt_positions_and_groups(speech_model, spoken):
    ids = spoken.input_ids
    vocab = speech_model.vocab
    # SpiritLM's tokenisation of "[Speech][Hu…]…[Text]" (markers as SentencePiece pieces): <s> ▁ [Speech] …
    prefix = speech_model.tokenizer.convert_tokens_to_ids("▁")
    assert ids[:3] == [vocab.bos_id, prefix, vocab.speech_marker_id] and ids[-1] == vocab.text_marker_id
    assert [vocab.unit_of(i) for i in ids[3:-1]] == list(spoken.units.tokens)
    rows, (sb, se), ignored = spoken.groups()
    assert [r.label for r in rows[:3]] == ["<s>", "␣", "[Speech]"] and rows[-1].label == "[Text]"
    # every speech position sits in some group; groups are in position order
    covered = sorted({p for r in rows for p in r.positions})
    assert covered == list(range(len(ids)))
    firsts = [r.positions[0] for r in rows]
    assert firsts == sorted(firsts)
    # the subject rows are the groups of the subject's LM tokens, and span its positions
    assert [rows[i].label for i in range(sb, se) if i not in ignored] == [" Space", " Needle"]
    b, e = spoken.subject_range
    assert rows[sb].positions[0] == b and max(rows[se - 1].positions) == e - 1
    assert all(rows[i].label == "<sil>" for i in ignored)
    # exact mapping: each text token's speech positions overlap its CTC frames (25 Hz = 2 CTC frames)
    for frames, item in zip(spoken.token_frames.tokens, spoken.speech_map.items):
        if item.token_start is None:
            continue
        for k in range(item.token_start, item.token_end):
            first, last = spoken.units.spans[k]
            assert first < -(-frames.end_frame // 2) and last > frames.start_frame // 2


def test_s2t_trace_in_group_and_position_modes(speech_model, spoken):
    grouped = trace(speech_model, spoken, kind="mlp", window=3, samples=3, noise=1.0, row_mode="groups")
    rows, subject_rows, _ = spoken.groups()
    assert grouped.scores.shape == (len(rows), speech_model.cfg.n_layers)
    assert grouped.subject_rows == subject_rows and grouped.modality == "speech"
    assert grouped.subject_range == spoken.subject_range
    per_position = trace(speech_model, spoken, kind="mlp", window=3, samples=3, noise=1.0, row_mode="positions")
    assert per_position.scores.shape == (len(spoken.input_ids), speech_model.cfg.n_layers)
    mean = trace(speech_model, spoken, kind="mlp", window=3, samples=3, noise=1.0, row_mode="mean")
    for row, scores in zip(mean.rows, mean.scores):
        assert np.allclose(scores, per_position.scores[row.positions].mean(axis=0))
    # rows before the subject restore nothing that was corrupted
    assert np.all(grouped.scores[:subject_rows[0]] == grouped.low_score)
    data = grouped.to_json()
    assert data["rows"][subject_rows[0]]["label"] == " Space" and data["mapping"] == "exact"
    assert 0 < data["alignment_confidence"] < 1


def test_paper_mapping_runs_and_can_differ(speech_model, spoken_prompt_wav, tiny_ctc_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowAlignmentConfidence)
        paper = SpeechPrompt.from_audio(speech_model, spoken_prompt_wav, transcript=SPOKEN_PROMPT,
                                        subject="Space Needle", aligner=tiny_ctc_dir, mapping="paper")
    assert paper.mapping == "paper"
    b, e = paper.subject_range
    assert 2 <= b < e <= len(paper.input_ids) - 1


def test_low_confidence_is_a_warning_with_the_number(speech_model, spoken_prompt_wav, tiny_ctc_dir):
    with pytest.warns(LowAlignmentConfidence, match=r"confidence 0\.\d+ is below"):
        prompt = SpeechPrompt.from_audio(speech_model, spoken_prompt_wav, transcript=SPOKEN_PROMPT,
                                         subject="Space Needle", aligner=tiny_ctc_dir)
    assert prompt.warnings and "below" in prompt.warnings[0]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(subject="Eiffel Tower"), ValueError, "subject 'Eiffel Tower' does not occur in the transcript"),
    (dict(transcript=" "), ValueError, "transcript is empty"),
    (dict(transcript=SPOKEN_PROMPT + " " + "and so on " * 30), ValueError, "shorter than"),
    (dict(aligner="NOT_A_MODEL"), (ValueError, FileNotFoundError), "CTC"),
])
def test_bad_speech_inputs(speech_model, spoken_prompt_wav, tiny_ctc_dir, tmp_path, kwargs, error, message):
    args = dict(transcript=SPOKEN_PROMPT, subject="Space Needle", aligner=tiny_ctc_dir)
    args.update(kwargs)
    if args["aligner"] == "NOT_A_MODEL":
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
        args["aligner"] = tmp_path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowAlignmentConfidence)
        with pytest.raises(error, match=message):
            SpeechPrompt.from_audio(speech_model, spoken_prompt_wav, **args)


def test_cli_speech_trace_writes_groups_and_alignment_figure(tiny_root, spoken_prompt_wav, tiny_ctc_dir, tmp_path):
    out = tmp_path / "s2t.json"
    done = subprocess.run(
        [sys.executable, "-m", "spiritlens", "trace", "--model", str(tiny_root / "spiritlm_model" / "spirit-lm-base-7b"),
         "--audio", str(spoken_prompt_wav), "--transcript", SPOKEN_PROMPT, "--subject", "Space Needle",
         "--aligner", str(tiny_ctc_dir), "--speech-tokenizer", str(tiny_root / "speech_tokenizer"),
         "--kind", "hidden", "--samples", "2", "--noise", "1.0", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    data = json.loads(out.read_text())
    # The tiny CTC model has random weights, so its alignment is flagged: the trace is written, marked,
    # and the exit status says so (1, not 0); see test_flagged_alignment.py for a real aligner.
    assert data["alignment_low_confidence"] is True
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("spiritlens trace: warning: alignment flagged")
    assert data["modality"] == "speech"
    assert len(data["scores"]) == len(data["rows"]) and data["rows"][-1]["label"] == "[Text]"
    assert data["alignment"]["mapping"] == "exact" and data["alignment"]["words"]["words"][1]["text"] == "SPACE"
    for name in ("s2t.png", "s2t_alignment.png"):
        assert_drawn_png((tmp_path / name))


def test_a_subject_contradicting_the_spoken_prompts_is_refused(speech_model, spoken):
    """The spoken prompt's subject was aligned when it was made: another subject cannot silently win."""
    with pytest.raises(ValueError, match="subject 'Paul Allen' differs from the spoken prompt's subject 'Space Needle'"):
        trace(speech_model, spoken, "Paul Allen", noise=0.1, samples=2)
    same = trace(speech_model, spoken, "Space Needle", noise=0.1, samples=2)
    assert tuple(same.subject_range) == spoken.subject_range


def test_a_spoken_prompt_prints_as_one_readable_line(spoken):
    text = repr(spoken)
    assert text.startswith("SpeechPrompt('The Space Needle is located in the city of', subject='Space Needle', ")
    assert f"subject_range={spoken.subject_range}" in text and "\n" not in text and len(text) < 300
