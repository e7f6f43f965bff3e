"""Atomic writes give files the mode ``open()`` would give them under the same umask."""

from __future__ import annotations

import os
import stat

import pytest

from spiritlens._io import current_umask, write_atomic, write_json_atomic


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one after it."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o027, 0o077, 0o000])
def test_new_file_mode_matches_open_under_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    reference = tmp_path / "by_open.txt"
    with open(reference, "w") as handle:  # what every other tool does
        handle.write("x")
    written = write_atomic(tmp_path / "atomic.txt", "x")
    assert mode(written) == mode(reference) == 0o666 & ~mask, (oct(mode(written)), oct(mode(reference)))
    assert mode(write_json_atomic(tmp_path / "r.json", {"a": 1})) == mode(reference)


def test_replacing_a_file_keeps_its_mode_like_open_does(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "shared.json"
    target.write_text("old")
    os.chmod(target, 0o664)  # e.g. made group-writable for a shared results folder
    reference = tmp_path / "reference"
    reference.write_text("old")
    os.chmod(reference, 0o664)
    with open(reference, "w") as handle:
        handle.write("new")
    write_atomic(target, "new")
    assert target.read_text() == "new" and mode(target) == mode(reference) == 0o664
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
