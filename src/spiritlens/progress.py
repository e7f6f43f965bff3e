"""The ``progress=`` switch of spiritlens' long-running entry points, one rule for all of them.

``progress=None`` (the API default) follows tqdm's own habit, ``tqdm(disable=None)``: a bar only
when it would be seen live, i.e. when stderr is a terminal; a notebook, a log file or a pipe gets
none. ``True`` always draws bars, ``False`` never. The command line passes ``True`` unless
``--quiet``. While spiritlens loads a model through transformers, transformers' own progress bars
("Loading weights", "Loading checkpoint shards") and its warnings follow the same switch.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager


def shows_progress(progress: bool | None) -> bool:
    """Whether ``progress`` draws bars now: ``None`` when stderr is a terminal (tqdm's rule)."""
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())
    return bool(progress)


def tqdm_disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable=`` for ``progress``: ``None`` passes tqdm's own terminal test on."""
    return None if progress is None else not progress


@contextmanager
def transformers_progress(progress: bool | None):
    """Within the block, transformers' progress bars and its warnings (logger level WARNING) are on only
    if :func:`shows_progress`; their previous settings are restored afterwards."""
    if shows_progress(progress):
        yield
        return
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
