"""The confirmation rule of screen-then-verify, by hand: an overshooting estimate counts as the total effect."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from spiritlens.traces.attribution import CONFIRM_RULE, verification_record


def test_a_cell_carrying_the_whole_effect_is_confirmed_whatever_the_estimate_overshoots():
    low, high = 0.1, 0.526  # TE 0.426
    estimates = np.array([[low + 1.51, low + 0.50, low + 0.30, low + 0.20]])  # AtP overshoots far beyond TE
    exact = np.array([[low + 0.4255, low + 0.322, low + 0.10, low - 0.01]])
    screen = SimpleNamespace(scores=estimates, low_score=low, high_score=high, method="attribution")
    record = verification_record(screen, exact, [(0, 0), (0, 1), (0, 2), (0, 3)])
    # by hand: 0.4255 >= 0.5 * min(1.51, 0.426); 0.322 >= 0.5 * 0.426; 0.10 < 0.5 * 0.30; -0.01 <= 0
    assert [c["confirmed"] for c in record["cells"]] == [True, True, False, False]
    assert record["confirmed"] == 2 and record["confirm_rule"] == CONFIRM_RULE == \
        "exact IE > 0 and >= 0.5 x min(estimated IE, TE)"
