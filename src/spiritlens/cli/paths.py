"""Path checks the commands run before any model loads: one ValueError line naming the option.

A finished trace must never be lost to a ``--json`` under a file, nor a minute of loading a 7B
checkpoint to a mistyped ``--aligner``. Writes themselves (a full disk, a folder made read-only
meanwhile) are reported when they happen; these checks catch what can be known up front.
"""

from __future__ import annotations

import os
from pathlib import Path


def _writable_folder(folder: Path, option: str, value: str) -> None:
    """``folder`` is, or can be made as, a folder we may write in: its nearest existing ancestor must
    be a writable folder (a file there, or a folder without write permission, is named)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise ValueError(f"{option} {value!r}: {str(candidate)!r} is a file, not a folder")
            if not os.access(candidate, os.W_OK | os.X_OK):
                raise ValueError(f"{option} {value!r}: the folder {str(candidate)!r} is not writable")
            return


def check_output_file(path: str | os.PathLike | None, option: str) -> None:
    """``path`` (if given) can be written as a file: not an existing folder, its folder writable or makeable."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a folder, expected a file name")
    _writable_folder(target.parent, option, str(path))


def check_output_dir(path: str | os.PathLike, option: str) -> None:
    """``path`` is, or can be made as, a writable folder (an existing file there is refused)."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a file, expected a folder for the results")
    _writable_folder(target, option, str(path))


def check_aligner(spec: str | None, option: str = "--aligner") -> None:
    """``spec`` (if given) names an aligner that can load: ``pocketsphinx`` with the package installed,
    or a folder holding a CTC model's ``config.json`` (``spiritlens.align.get_aligner``'s rules)."""
    if spec is None:
        return
    from spiritlens.align.aligner import POCKETSPHINX

    if spec.strip().lower() == POCKETSPHINX:
        from spiritlens.align.pocketsphinx import PocketsphinxAligner

        if not PocketsphinxAligner().available():
            raise ValueError(f"{option} pocketsphinx: the pocketsphinx package is not installed "
                             "(pip install 'spiritlens[data]')")
        return
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"{option} {spec!r} is neither 'pocketsphinx' nor an existing CTC model folder")
    if not path.is_dir():
        raise ValueError(f"{option} {spec!r} is a file, expected 'pocketsphinx' or a CTC model folder")
    if not (path / "config.json").is_file():
        raise ValueError(f"{option} {spec!r} has no config.json: not a CTC model folder "
                         "(e.g. a local copy of facebook/hubert-large-ls960-ft)")
