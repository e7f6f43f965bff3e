"""The one 95% CI formula (spiritlens.aggregates.ci), against scipy's Student t and a numpy formula.

scipy is not a spiritlens dependency: the reference values below were computed with scipy 1.17.1
(``pip install --target /tmp/scipy scipy``) by ``scipy.stats.t.ppf(0.975, df)`` and
``scipy.stats.t.interval(0.95, n - 1, loc=mean, scale=scipy.stats.sem(x))``.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from helpers import make_result

from spiritlens.aggregates import aggregate_by_modality
from spiritlens.aggregates.ci import mean_ci, t_quantile
from spiritlens.crossmodal.summary import mean_ci as facts_mean_ci

SCIPY_T_0975 = {  # scipy.stats.t.ppf(0.975, df)
    1: 12.706204736174694, 2: 4.302652729749462, 3: 3.1824463052837078, 4: 2.7764451051977934,
    5: 2.5705818356363146, 7: 2.364624251592784, 11: 2.200985160091639, 19: 2.0930240544083087,
    29: 2.045229642132703, 99: 1.9842169515864174, 999: 1.9623414611334493, 9999: 1.960201263621357,
}


@pytest.mark.parametrize("df", sorted(SCIPY_T_0975))
def test_t_quantile_equals_scipy(df):
    assert t_quantile(df) == pytest.approx(SCIPY_T_0975[df], rel=1e-10)


def test_t_quantile_tends_to_the_normal_quantile():
    z = statistics.NormalDist().inv_cdf(0.975)  # 1.959964 (the stdlib's normal quantile)
    assert t_quantile(10 ** 6) == pytest.approx(z, abs=1e-5)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0)


def test_mean_ci_is_the_t_interval_computed_with_numpy():
    values = np.array([[0.12, 0.5], [0.31, 0.2], [0.2, 0.9], [0.6, 0.41], [0.05, 0.33]])  # 5 prompts x 2 layers
    mean, half, n = mean_ci(values)
    assert n == 5
    np.testing.assert_allclose(mean, values.mean(axis=0))
    np.testing.assert_allclose(half, SCIPY_T_0975[4] * values.std(axis=0, ddof=1) / math.sqrt(5), rtol=1e-10)


def test_the_two_values_that_gave_two_cis_now_give_scipys_interval():
    # 0 and 0.4: ROME's 1.96 * population std / sqrt(2) gave 0.277 (aggregates), 1.96 * sample std / sqrt(2)
    # 0.392 (cross-modal summary). Both paths now give scipy's t-interval.
    low, high = -2.341240947234939, 2.7412409472349393  # scipy.stats.t.interval(0.95, 1, loc=0.2, scale=sem)
    mean, half, _ = mean_ci([[0.0], [0.4]])
    assert mean[0] == pytest.approx(0.2) and (mean[0] - half[0], mean[0] + half[0]) == pytest.approx((low, high))
    assert facts_mean_ci([[0.0], [0.4]]).ci[0] == pytest.approx(half[0])
    # two prompts whose last-token effects are 0 and 0.4, each against its own corrupted score
    prompts = [make_result(5, (1, 3), low=low_score, n_layers=1, set_rows={4: [low_score + effect]})
               for low_score, effect in ((0.1, 0.0), (0.3, 0.4))]
    agg = aggregate_by_modality(prompts)["text"]["hidden"]
    assert agg.effect["last"][0] == pytest.approx(0.2) and agg.ci["last"][0] == pytest.approx(half[0])


def test_mean_ci_edge_cases():
    mean, half, n = mean_ci([[0.3, np.nan], [0.5, 0.1], [0.7, 0.2]])  # a unit with NaN is left out
    assert n == 2 and mean.tolist() == pytest.approx([0.6, 0.15])
    assert np.isnan(mean_ci([[0.4, 0.2]])[1]).all()  # one unit: no interval
    assert mean_ci([[0.25], [0.25], [0.25]])[1].tolist() == [0.0]  # equal units: exactly no width
    assert mean_ci([[0.5 - 0.1], [0.7 - 0.3]])[1].tolist() == [0.0]  # equal up to float64 rounding
    assert mean_ci(np.zeros((0, 3)))[2] == 0
