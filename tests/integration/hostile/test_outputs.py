"""Output faults: a full disk, a read-only folder, a folder that already holds a model.

A full disk is ``RLIMIT_FSIZE`` in the case's child process (a write past the limit fails with
EFBIG, for root too); a read-only folder is ``chmod 0o500`` for a normal user and the immutable
attribute (``chattr +i``) for root, where available. Every case must end in one line and exit
status 2 with nothing half-written left behind and nothing existing overwritten, and a finished
trace must survive: written to the rescue folder (``$TMPDIR/spiritlens-rescued``) when its own
folder refuses it, printed on standard output when no file can hold it. The references are
independent: the rescued file is loaded back with ``TraceResult.load`` (its checksums verified)
and compared with the printed JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import make_result, write_result

TRACE = ["--prompt", "The Space Needle is located in", "--subject", "Space Needle", "--noise", "0.1", "--samples", "2"]
SLOW = 120.0  # cases that load the tiny model and trace (the bombs elsewhere have 10 s)
FULL = 4096  # bytes a file may grow to on the "full disk"


def read_only(folder: Path):
    """Make ``folder`` refuse new files for this user (root: the immutable attribute); a context
    manager that undoes it; skips the test where neither works."""
    import contextlib

    @contextlib.contextmanager
    def manager():
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            folder.chmod(0o500)
            try:
                yield
            finally:
                folder.chmod(0o700)
            return
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("running as root without chattr +i: no way to make a folder read-only here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    return manager()


def rescued(line: str) -> Path:
    return Path(line.split("was saved to ")[1].removesuffix(" instead"))


def test_trace_json_on_a_full_disk_is_printed_not_lost(hostile, tiny_base_dir, tmp_path):
    out = tmp_path / "out" / "r.json"
    outcome = hostile.cli("trace", "--model", tiny_base_dir, *TRACE, "--json", out, fsize=1024, timeout=SLOW)
    line = outcome.refused(rf"trace: error: cannot write {out}: File too large; the finished trace could not be "
                           r"saved to \S+/spiritlens-rescued/r-\S+\.json either \(File too large\): it is printed on "
                           r"standard output above$")
    attempt = Path(re.search(r"could not be saved to (\S+) either", line).group(1))
    attempt.with_suffix(".npz").unlink(missing_ok=True)  # the rescue's first file fitted, its JSON did not
    printed = json.loads(outcome.stdout[outcome.stdout.index("{"):])
    assert printed["answer"] and len(printed["scores"]) == len(printed["rows"])
    assert not out.exists(), line
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".") or "tmp" in p.name]  # nothing half-written


def test_trace_json_in_a_read_only_folder_is_refused_first_or_rescued(hostile, tiny_base_dir, tmp_path):
    """Either ``trace`` refuses the folder before the model loads (its path pre-check), or the finished
    trace is rescued and loads back whole; never a traceback, never a lost trace."""
    from spiritlens.traces.result import TraceResult

    folder = tmp_path / "locked"
    with read_only(folder):
        outcome = hostile.cli("trace", "--model", tiny_base_dir, *TRACE, "--json", folder / "r.json", timeout=SLOW)
        line = outcome.refused(rf"trace: error: .*{folder}")
        assert list(folder.iterdir()) == []
    if "tokenizer:" not in outcome.stdout:
        return  # refused before anything was computed
    assert re.search(rf"cannot write {folder}/r\.json: (Permission denied|Operation not permitted); the finished "
                     r"trace was saved to \S+ instead$", line), line
    copy = rescued(line)
    try:
        result = TraceResult.load(copy)  # checksums verified: the whole trace survived
        assert result.answer and result.scores.shape[1] == 4
    finally:
        copy.unlink()
        copy.with_suffix(".npz").unlink()


def test_a_finished_trace_is_rescued_from_a_read_only_folder(tiny_model, tmp_path):
    """The write-time fault itself (after any pre-check passed): ``save_or_rescue`` with a real trace."""
    from spiritlens import trace
    from spiritlens._io import OutputError, save_or_rescue
    from spiritlens.traces.result import TraceResult

    result = trace(tiny_model, "The Space Needle is located in", "Space Needle", samples=2, noise=0.1)
    folder = tmp_path / "locked"
    with read_only(folder):
        with pytest.raises(OutputError) as error:
            save_or_rescue(result.save, folder / "r.json", "trace")
        assert list(folder.iterdir()) == []
    line = str(error.value)
    assert re.fullmatch(rf"cannot write {folder}/r\.json: (Permission denied|Operation not permitted); the finished "
                        r"trace was saved to \S+ instead", line), line
    copy = rescued(line)
    try:
        loaded = TraceResult.load(copy)
        assert loaded.answer == result.answer and (loaded.scores == result.scores).all()
    finally:
        copy.unlink()
        copy.with_suffix(".npz").unlink()


def test_units_json_on_a_full_disk(hostile, tiny_root, tmp_path):
    import numpy as np
    import soundfile

    audio = tmp_path / "a.wav"
    soundfile.write(audio, (0.1 * np.sin(np.arange(16_000) / 5)).astype(np.float32), 16_000)
    out = tmp_path / "out" / "u.json"
    outcome = hostile.cli("units", audio, "--json", out, "--speech-tokenizer", tiny_root / "speech_tokenizer",
                          fsize=512, timeout=SLOW)
    outcome.refused(rf"units: error: cannot write {out}: File too large; the finished units could not be saved")
    assert json.loads(outcome.stdout[outcome.stdout.index("{"):])["units"]
    assert not out.exists()


@pytest.fixture
def results_dir(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    for i in range(3):
        write_result(folder / f"{i}.json", make_result(4, (1, 3), set_rows={1: [0.5, 0.6]}))  # checksummed
    return folder


def test_aggregate_out_on_a_full_disk(hostile, results_dir, tmp_path):
    out = tmp_path / "agg"
    outcome = hostile.cli("aggregate", results_dir, "--out", out, fsize=FULL, timeout=SLOW)
    outcome.refused(rf"aggregate: error: cannot write {out}/\S+: File too large$")
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary file left


def test_aggregate_out_in_a_read_only_folder(hostile, results_dir, tmp_path):
    out = tmp_path / "agg"
    with read_only(out):
        outcome = hostile.cli("aggregate", results_dir, "--out", out, timeout=SLOW)
        outcome.refused(rf"aggregate: error: cannot write {out}/\S+: (Permission denied|Operation not permitted)$")


def test_experiment_on_a_full_disk(hostile, tmp_path):
    out = tmp_path / "run"
    outcome = hostile.cli("experiment", "--random-weights", "--out", out, "--prompts", "2", "--quiet",
                          fsize=FULL, timeout=SLOW, env={"SPIRITLENS_KNOWN_PATH": os.environ.get("SPIRITLENS_KNOWN_PATH")})
    outcome.refused(rf"experiment: error: cannot write {out}/\S+: File too large")


def test_experiment_does_not_overwrite_a_model_folder(hostile, tmp_path):
    out = tmp_path / "run"
    mine = out / "checkpoints" / "spiritlm_model" / "spirit-lm-base-7b" / "config.json"
    mine.parent.mkdir(parents=True)
    mine.write_text('{"mine": true}')
    outcome = hostile.cli("experiment", "--random-weights", "--out", out, "--quiet", timeout=SLOW)
    outcome.refused(rf"experiment: error: {mine.parent} already holds files: refusing to overwrite them \(not "
                    r"written by an experiment: give another --out\)$")
    assert mine.read_text() == '{"mine": true}' and sorted(p.name for p in mine.parent.iterdir()) == ["config.json"]


@pytest.mark.parametrize("part", ["vqvae_f0_quantizer", "style_encoder_w2v2"])
def test_make_tiny_does_not_overwrite_expressive_speech_parts(hostile, tmp_path, part):
    folder = tmp_path / "ckpt" / "speech_tokenizer" / part
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"real weights")
    outcome = hostile.cli("make-tiny", tmp_path / "ckpt", timeout=SLOW)
    outcome.refused(rf"make-tiny: error: {folder} already holds files: refusing to overwrite them")
    assert (folder / "model.pt").read_bytes() == b"real weights"
    assert not (tmp_path / "ckpt" / "spiritlm_model").exists()
