"""The toys' designed mechanism, as the trace tests check it (the toy SpiritLM's and its backbone's).

Attention is off in the first layers, so the subject reaches the last position only through attention
later: restoring the last subject token in the first half of the layers must recover far more of
p(answer) than restoring any token after the subject.
"""

from __future__ import annotations

import numpy as np


def check_designed_mechanism(last_subject: list, after: list, total: list[float], n_layers: int) -> None:
    """``last_subject``: per prompt, the IE [L/2] at its last subject token in layers 0..L/2-1;
    ``after``: per prompt, the largest IE [L/2] over its tokens after the subject (last excluded);
    ``total``: per prompt, its TE. Prints the means (the README quotes them) and asserts the last
    subject token's largest mean IE is above 20% of the mean TE and 5 times the tokens after it."""
    subject_ie, after_ie, te = np.mean(last_subject, 0), np.mean(after, 0), float(np.mean(total))
    message = (f"mean IE at the last subject token, layers 0-{n_layers // 2 - 1}: {np.round(subject_ie, 4).tolist()}; "
               f"max over the tokens after the subject: {np.round(after_ie, 4).tolist()}; mean TE {te:.4f}")
    print(message)
    assert subject_ie.max() > 0.2 * te, message
    assert subject_ie.max() > 5 * max(after_ie.max(), 1e-3), message
