"""The one 95% confidence interval of spiritlens: Student's t-interval of a mean over independent units.

Every band and ``±`` in spiritlens (AIE line plots and ``aie.json``'s ``ci95``, the cross-modal
summary, the report) is, over ``n`` per-unit values ``x_1..x_n`` (one per prompt, or per fact):

    mean ± t_{0.975, n-1} · s / √n,    s = the sample standard deviation (ddof = 1)

(Student 1908; e.g. NIST/SEMATECH e-Handbook of Statistical Methods, §7.2.2.1). The unit is the
prompt (or fact), never a token row: rows of one prompt are not independent draws. The t quantile
is chosen over ROME's normal ``1.96·std/√n`` because spiritlens runs on a handful of prompts (12
facts on the toy), where 1.96 is too narrow (by 11% at 12 prompts, t_{0.975,11} = 2.20; by 54% at
3, t_{0.975,2} = 4.30), and it tends to 1.96 at ROME's thousand prompts. With one unit there is no
interval (NaN).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

CI_LEVEL = 0.95


def ci_formula(unit: str = "prompts") -> str:
    """The formula in words, for legends and reports: ``unit`` names what n counts (prompts, facts)."""
    return f"mean ± t(0.975, n−1)·s/√n over the n {unit} (Student's t)"


def _two_sided_t_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` >= 1 (Abramowitz & Stegun 26.7.3-26.7.4, exact)."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2:  # odd: (2/π)(θ + sinθ (cosθ + 2/3 cos³θ + ... )), the series empty for df = 1
        total, term = 0.0, math.cos(theta)
        if df > 1:
            total = term
            for k in range(3, df - 1, 2):
                term *= (k - 1) / k * cos2
                total += term
        return 2.0 / math.pi * (theta + math.sin(theta) * total)
    total, term = 1.0, 1.0  # even: sinθ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ...)
    for k in range(2, df - 1, 2):
        term *= (k - 1) / k * cos2
        total += term
    return math.sin(theta) * total


@lru_cache(maxsize=256)
def t_quantile(df: int, level: float = CI_LEVEL) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom, t_{(1+level)/2, df}
    (bisection of the exact distribution function to 1e-12; 12.706 for df 1, 2.201 for df 11).
    Raises ValueError for ``df`` < 1 or a level outside (0, 1)."""
    if not (isinstance(df, (int, np.integer)) and df >= 1):
        raise ValueError(f"degrees of freedom must be an integer >= 1, got {df!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    low, high = 0.0, 2.0
    while _two_sided_t_cdf(high, int(df)) < level:
        high *= 2
    while high - low > 1e-12 * high:
        middle = (low + high) / 2
        if _two_sided_t_cdf(middle, int(df)) < level:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def mean_ci(values, *, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray, int]:
    """``(mean, half_width, n)`` of ``values`` ``[n, ...]`` (one row per unit: prompt or fact) by the
    module's t-interval. Rows holding NaN are left out and counted out of ``n``; ``half_width`` is NaN
    for n < 2, and exactly 0 where every unit has the same value (up to float64 rounding, a spread
    within 1e-12 of the largest value). ``mean`` is NaN for n = 0."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        raise ValueError("mean_ci needs one value per unit (an array [n, ...])")
    finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1) if len(array) else np.zeros(0, bool)
    array = array[finite]
    n, shape = len(array), array.shape[1:]
    if n == 0:
        return np.full(shape, np.nan), np.full(shape, np.nan), 0
    mean = array.mean(axis=0)
    if n < 2:
        return mean, np.full(shape, np.nan), 1
    spread = array.std(axis=0, ddof=1)
    # units equal up to float64 rounding (0.5 - 0.1 against 0.7 - 0.3): exactly no width
    spread = np.where(spread <= 1e-12 * np.abs(array).max(axis=0), 0.0, spread)
    return mean, t_quantile(n - 1, level) * spread / math.sqrt(n), n
