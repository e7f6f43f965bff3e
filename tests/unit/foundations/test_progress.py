"""The progress= rule (spiritlens.progress): None follows tqdm (bars only on a terminal), True and False
force it; transformers' loading bar and warnings follow the same switch and are restored afterwards."""

from __future__ import annotations

import io
import sys

import pytest
from helpers import tqdm_bar_updates

from spiritlens.progress import shows_progress, tqdm_disable, transformers_progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_none_follows_tqdm_and_true_false_force(monkeypatch):
    from tqdm import tqdm

    for stream, shown in ((io.StringIO(), False), (_Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        assert shows_progress(None) is shown and shows_progress(True) and not shows_progress(False)
        for _ in tqdm(range(3), disable=tqdm_disable(None), file=stream):  # tqdm's own test agrees
            pass
        assert (tqdm_bar_updates(stream.getvalue()) > 0) is shown
    assert tqdm_disable(True) is False and tqdm_disable(False) is True and tqdm_disable(None) is None


def test_transformers_settings_are_restored():
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    with transformers_progress(False):
        assert not hf_logging.is_progress_bar_enabled() and hf_logging.get_verbosity() == hf_logging.ERROR
    assert (hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()) == before


@pytest.mark.parametrize("progress", [None, False, True])
def test_model_loading_bar_follows_the_switch(tiny_base_dir, capfd, progress):
    from spiritlens import HookedSpiritLM

    HookedSpiritLM.from_pretrained(tiny_base_dir, progress=progress)
    err = capfd.readouterr().err  # pytest's stderr is not a terminal: None draws nothing
    assert (tqdm_bar_updates(err) > 0) is (progress is True), err[-500:]
    assert ("Loading weights" in err) is (progress is True)
