"""Paths are checked before any model loads: ``trace``, ``crossmodal fact`` and ``units`` refuse a bad
``--aligner``, ``--audio`` or output path in one line (exit 2). The model argument names a folder that
does not exist, so reaching the model would give another error: the line we get proves the order."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile

from spiritlens.cli import main

NO_MODEL = "/nonexistent/spirit-lm-base-7b"


@pytest.fixture
def files(tmp_path):
    """A readable WAV, a plain file in the way of a folder, and a folder with config.json-less content."""
    wav = tmp_path / "prompt.wav"
    soundfile.write(wav, np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.1, 16_000)
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    empty = tmp_path / "not-a-ctc-model"
    empty.mkdir()
    return {"wav": wav, "blocker": blocker, "empty": empty, "tmp": tmp_path}


def _error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1, captured  # nothing loaded, nothing printed but the line
    return lines[0]


def _trace(files, *extra, audio=None, aligner="pocketsphinx", json=None):
    speech = ["--audio", str(audio or files["wav"]), "--transcript", "The Space Needle is in", "--subject",
              "Space Needle", "--aligner", str(aligner)]
    return ["trace", "--model", NO_MODEL, "--noise", "0.1", *speech, "--json", str(json or files["tmp"] / "r.json"),
            *extra]


@pytest.mark.parametrize("case", ["json_under_file", "json_is_folder", "png_under_file", "alignment_png_under_file",
                                  "aligner_missing", "aligner_file", "aligner_no_config", "audio_missing", "audio_empty"])
def test_trace_checks_paths_before_loading(files, capsys, case):
    t, blocker, empty = files["tmp"], files["blocker"], files["empty"]
    args, expected = {
        "json_under_file": (_trace(files, json=blocker / "r.json"), f"--json '{blocker}/r.json': '{blocker}' is a "
                                                                    "file, not a folder"),
        "json_is_folder": (_trace(files, json=empty), f"--json '{empty}' is a folder, expected a file name"),
        "png_under_file": (_trace(files, "--png", str(blocker / "r.png")),
                           f"--png '{blocker}/r.png': '{blocker}' is a file, not a folder"),
        "alignment_png_under_file": (_trace(files, "--alignment-png", str(blocker / "a.png")),
                                     f"--alignment-png '{blocker}/a.png': '{blocker}' is a file, not a folder"),
        "aligner_missing": (_trace(files, aligner=t / "hubert-large-ls960-ft"),
                            "is neither 'pocketsphinx' nor an existing CTC model folder"),
        "aligner_file": (_trace(files, aligner=blocker),
                         f"--aligner '{blocker}' is a file, expected 'pocketsphinx' or a CTC model folder"),
        "aligner_no_config": (_trace(files, aligner=empty), f"--aligner '{empty}' has no config.json: not a CTC model"),
        "audio_missing": (_trace(files, audio=t / "nope.wav"), "nope.wav: no such audio file"),
        "audio_empty": (_trace(files, audio=blocker), str(blocker)),  # a text file is not audio
    }[case]
    assert main(args) == 2
    line = _error(capsys)
    assert line.startswith("spiritlens trace: error: ") and expected in line, line
    assert not (t / "r.json").exists()


def test_text_trace_checks_its_json_before_loading(files, capsys):
    blocker = files["blocker"]
    assert main(["trace", "--model", NO_MODEL, "--prompt", "The Space Needle is in", "--subject", "Space Needle",
                 "--noise", "0.1", "--json", str(blocker / "sub" / "r.json")]) == 2
    assert _error(capsys) == (f"spiritlens trace: error: --json '{blocker}/sub/r.json': '{blocker}' is a file, "
                              "not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder: permissions cannot be tested as root")
def test_trace_refuses_a_folder_it_cannot_write(files, capsys):
    locked = files["tmp"] / "locked"
    locked.mkdir(mode=0o555)
    try:
        assert main(["trace", "--model", NO_MODEL, "--prompt", "The Space Needle is in", "--subject", "Space Needle",
                     "--noise", "0.1", "--json", str(locked / "r.json")]) == 2
        assert _error(capsys).endswith(f"the folder '{locked}' is not writable")
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("case", ["out_is_file", "out_under_file", "aligner_missing", "audio_missing"])
def test_crossmodal_fact_checks_paths_before_loading(files, capsys, case):
    t, blocker = files["tmp"], files["blocker"]
    out, aligner, audio = str(t / "fact"), "pocketsphinx", str(files["wav"])
    if case == "out_is_file":
        out = str(blocker)
    elif case == "out_under_file":
        out = str(blocker / "fact")
    elif case == "aligner_missing":
        aligner = str(t / "nowhere")
    else:
        audio = str(t / "nope.wav")
    assert main(["crossmodal", "fact", "--model", NO_MODEL, "--prompt", "The Space Needle is in", "--subject",
                 "Space Needle", "--audio", audio, "--aligner", aligner, "--noise", "0.1", "--out", out]) == 2
    line = _error(capsys)
    assert line.startswith("spiritlens crossmodal: error: ") and {
        "out_is_file": f"--out '{blocker}' is a file, expected a folder for the results",
        "out_under_file": f"--out '{blocker}/fact': '{blocker}' is a file, not a folder",
        "aligner_missing": f"--aligner '{t}/nowhere' is neither 'pocketsphinx' nor an existing CTC model folder",
        "audio_missing": "nope.wav: no such audio file",
    }[case] in line, line
    assert not (t / "fact").exists()


def test_units_checks_its_json_before_loading(files, capsys):
    blocker = files["blocker"]
    assert main(["units", str(files["wav"]), "--json", str(blocker / "u.json"), "--speech-tokenizer",
                 "/nonexistent/speech_tokenizer"]) == 2
    assert _error(capsys) == f"spiritlens units: error: --json '{blocker}/u.json': '{blocker}' is a file, not a folder"
