"""Choosing a forced aligner: the paper's CTC path (a character CTC model directory) or pocketsphinx.

``get_aligner(spec)`` takes what the API and the CLIs accept: an aligner object, the word
``"pocketsphinx"`` (the bundled US-English model, offline), or a ``HubertForCTC`` /
``Wav2Vec2ForCTC`` directory (the paper's path, e.g. a local copy of facebook/hubert-large-ls960-ft).
Both aligners return :class:`~spiritlens.align.ctc.Alignment` in their own frames (CTC frames of the
model, or 10 ms pocketsphinx frames), named by ``Alignment.frame_unit``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from spiritlens.align.emissions import CTCAligner
from spiritlens.align.pocketsphinx import PocketsphinxAligner

__all__ = ["Aligner", "POCKETSPHINX", "get_aligner"]

POCKETSPHINX = "pocketsphinx"
Aligner = Union[CTCAligner, PocketsphinxAligner]


def get_aligner(spec, device: str = "cpu") -> Aligner:
    """The aligner named by ``spec``: a ``CTCAligner``/``PocketsphinxAligner`` (returned as is), the word
    ``"pocketsphinx"``, or a CTC model directory (``CTCAligner.from_pretrained``; a directory called
    pocketsphinx is given as ``./pocketsphinx``). Raises ``ValueError`` for anything else."""
    if isinstance(spec, (CTCAligner, PocketsphinxAligner)):
        return spec
    if isinstance(spec, str) and spec.strip().lower() == POCKETSPHINX:
        aligner = PocketsphinxAligner()
        if not aligner.available():
            raise ValueError("aligner 'pocketsphinx': the pocketsphinx package is not installed "
                             "(pip install 'spiritlens[data]')")
        return aligner
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.exists():
            raise ValueError(f"aligner {str(spec)!r} is neither 'pocketsphinx' nor an existing CTC model directory")
        return CTCAligner.from_pretrained(path, device=device)
    raise ValueError(f"aligner must be 'pocketsphinx', a CTC model directory or an aligner object, "
                     f"got {type(spec).__name__}")
