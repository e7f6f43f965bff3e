"""The Expressive model end to end: SpiritLM's token string from audio, TokenMap spans, the CLI, and an
S->T trace with pitch and style positions grouped by word against the plain per-cell reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import FIXTURES, run_cli, space_needle_prompt
from reference_tracing import reference_trace
from spiritlens import HookedSpiritLM, trace

EXPRESSIVE = FIXTURES / "expressive"
REFERENCE = json.loads((EXPRESSIVE / "reference.json").read_text())


@pytest.fixture(scope="module")
def expressive(tiny_root):
    return HookedSpiritLM.from_pretrained(tiny_root / "spiritlm_model" / "spirit-lm-expressive-7b")


@pytest.mark.parametrize("name", ["speech", "stereo", "kal_8k"])
def test_encode_gives_spiritlm_string_and_ids(expressive, name):
    """make-tiny's speech tokenizer is the fixture's (seed 0): the prompt is SpiritLM's string between
    the markers, tokenised in one call by SpiritLM's tokenizer path."""
    ids, token_map = expressive.encode([("speech", EXPRESSIVE / f"{name}.flac")])
    string = REFERENCE["cases"][name]["string"]
    assert token_map.prompt_string == "[Speech]" + string + "[Text]"
    assert ids[0].tolist() == list(expressive.tokenizer(token_map.prompt_string).input_ids)
    speech = [p for p in token_map.positions if p.kind == "speech"]
    pieces = expressive.tokenizer.convert_ids_to_tokens([p.token_id for p in speech])
    assert "".join(pieces) == string
    # every position says which stream it is and where it lies in the 25 Hz HuBERT grid
    for p, piece in zip(speech, pieces):
        assert p.stream == {"Hu": "hubert", "Pi": "pitch", "St": "style"}[piece[1:3]]
        a, b = p.frame_span
        width = b - a
        if p.stream == "style":
            assert a % 25 == 0 and 0 < width <= 25
        elif p.stream == "pitch":
            assert a % 2 == 0 and width % 2 == 0 or b == max(q.frame_span[1] for q in speech)
    assert token_map.to_json()[3]["stream"] == "style"


def test_base_model_refuses_expressive_units_and_tokenizer_errors(tiny_root, expressive, tmp_path):
    base = HookedSpiritLM.from_pretrained(tiny_root / "spiritlm_model" / "spirit-lm-base-7b")
    units = expressive.speech_tokenizer.encode(EXPRESSIVE / "speech.flac")
    with pytest.raises(ValueError, match=r"pitch/style tokens but this model's vocabulary has none"):
        base.encode([("speech", units)])
    # Base audio stays HuBERT-only
    assert all(p.stream == "hubert" for p in base.encode([("speech", EXPRESSIVE / "speech.flac")])[1].positions
               if p.kind == "speech")
    import shutil

    hubert_only = tmp_path / "speech_tokenizer"
    shutil.copytree(tiny_root / "speech_tokenizer" / "hubert_25hz", hubert_only / "hubert_25hz")
    lonely = HookedSpiritLM.from_pretrained(tiny_root / "spiritlm_model" / "spirit-lm-expressive-7b",
                                            speech_tokenizer=hubert_only)
    with pytest.raises(FileNotFoundError, match="reads pitch and style tokens"):
        lonely.to_tokens([("speech", EXPRESSIVE / "speech.flac")])


def test_units_cli_expressive(tiny_root, tmp_path):
    out = tmp_path / "units.json"
    run = run_cli("units", EXPRESSIVE / "padded.flac", "--json", out, "--speech-tokenizer",
                  tiny_root / "speech_tokenizer", "--expressive")
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    case = REFERENCE["cases"]["padded"]
    assert data["token_string"] == case["string"]
    assert " ".join(map(str, data["pitch"]["codes"])) == case["units"]["pitch"]
    assert " ".join(map(str, data["style"]["codes"])) == case["units"]["style"]
    first = data["expressive_tokens"][0]
    assert first["stream"] == "style" and first["time_span"] == [0.0, 1.0]
    bad = run_cli("units", EXPRESSIVE / "speech.flac", "--json", out, "--speech-tokenizer", tmp_path / "nowhere",
                  "--expressive")
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def spoken(expressive, spoken_prompt_wav, tiny_ctc_dir):
    return space_needle_prompt(expressive, spoken_prompt_wav, tiny_ctc_dir)


def test_word_groups_hold_pitch_and_style_tokens(expressive, spoken):
    units = spoken.units
    streams = [t.stream for t in units.tokens]
    rows, (sb, se), ignored = spoken.groups()
    offset = spoken.speech_offset
    covered = sorted({p for r in rows for p in r.positions})
    assert covered == list(range(len(spoken.input_ids)))  # every position is in some row
    # the rule: a text token's group = every token whose 25 Hz span overlaps its aligned frames
    for frames, group in zip(spoken.token_frames.tokens, spoken.token_groups()):
        if frames.start_frame is None:
            continue
        a, b = frames.start_frame // 2, -(-frames.end_frame // 2)  # 50 Hz CTC frames -> 25 Hz
        expected = [k for k, t in enumerate(units.tokens) if t.frames[0] < b and t.frames[1] > a]
        assert list(group or ()) == expected
    subject_positions = {p for i in range(sb, se) if i not in ignored for p in rows[i].positions}
    subject_streams = {streams[p - offset] for p in subject_positions}
    assert subject_streams == {"hubert", "pitch", "style"}
    b, e = spoken.subject_range
    assert min(subject_positions) == b and max(subject_positions) == e - 1
    data = spoken.alignment_json()
    assert any(t.get("speech_group") for t in data["text_tokens"])


def test_expressive_s2t_trace_equals_the_per_cell_reference(expressive, spoken):
    """Grouped rows (HuBERT + pitch + style positions of each word restored together) against one plain
    forward per cell, scoring the same answer token."""
    result = trace(expressive, spoken, kind="mlp", window=3, samples=3, noise=1.0, seed=3, row_mode="groups")
    rows, subject_rows, _ = spoken.groups()
    b, e = spoken.subject_range
    table, low, high, _ = reference_trace(expressive, spoken.input_ids, b, e, "mlp", samples=3, nu=1.0, seed=3,
                                          window=3, rows=[r.positions for r in rows], answer=result.answer_id)
    assert result.subject_rows == subject_rows and result.subject_range == (b, e)
    assert abs(result.low_score - low) <= 1e-6 and abs(result.high_score - high) <= 1e-6
    diff = np.abs(result.scores - table).max()
    assert diff <= 1e-6, f"max |engine - reference| = {diff:.3g}"
    assert np.abs(table[subject_rows[0]:] - low).max() > 1e-4  # restoring the subject's rows changes the score
