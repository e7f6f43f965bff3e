"""A transcript that does not match its audio: the alignment confidence flags it, ``spiritlens trace``
says so in one line and exits 1 (the result is written, marked), and the experiment report lists it."""

from __future__ import annotations

import json

import pytest

from spiritlens.cli import main

RIGHT = "The Space Needle is located in the city of"  # what spoken_prompt_wav says
WRONG = "The Eiffel Tower is located in the city of"  # alignable, but other words


@pytest.mark.parametrize("transcript, flagged", [(RIGHT, False), (WRONG, True)])
def test_trace_flags_a_transcript_that_does_not_match(tiny_base_dir, tiny_root, spoken_prompt_wav, tmp_path,
                                                      capsys, transcript, flagged):
    out = tmp_path / "s2t.json"
    subject = "Space Needle" if transcript == RIGHT else "Eiffel Tower"
    status = main(["trace", "--model", str(tiny_base_dir), "--audio", str(spoken_prompt_wav), "--transcript",
                   transcript, "--subject", subject, "--aligner", "pocketsphinx", "--speech-tokenizer",
                   str(tiny_root / "speech_tokenizer"), "--noise", "0.1", "--samples", "2", "--json", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("spiritlens")]
    result = json.loads(out.read_text())
    assert result["alignment_low_confidence"] is flagged
    if flagged:
        assert status == 1
        assert len(err) == 1 and err[0].startswith("spiritlens trace: warning: alignment flagged (confidence ")
        assert f"{out} records alignment_low_confidence: true" in err[0]
        assert result["alignment_confidence"] < result["alignment_min_confidence"] or result["alignment_coverage"] < 0.9
    else:
        assert status == 0 and err == []


def test_report_lists_flagged_alignments():
    from spiritlens.experiment.report import alignment_section

    results = [{"modality": "speech", "known_id": 7, "aligner": "pocketsphinx", "alignment_confidence": 0.01,
                "alignment_low_confidence": True, "alignment_coverage": 0.5},
               {"modality": "speech", "known_id": 8, "aligner": "pocketsphinx", "alignment_confidence": 0.4,
                "alignment_low_confidence": False, "alignment_coverage": 0.97}]
    lines = alignment_section(results)
    assert "**1 of 2** S→T alignments were flagged" in "\n".join(lines)
    assert "| 7 | 0.010 | 50% | yes |" in lines and "| 8 | 0.400 | 97% | no |" in lines
