"""The decisions of rea.book.judging that chapters 5 and 6 use (each an application of a rule of rea.book.rules)."""

import math

import numpy as np
import pytest

from rea.book.judging import (
    cluster_ratio_interval,
    decide_at_least,
    decide_bins_agree,
    decide_within,
    deepest_reach,
    depth_below,
    difference_interval,
    kish,
    median_interval,
    separation,
    t_inflation,
)
from rea.book.rules import decide_all


def test_depth_below_and_deepest_reach_count_only_the_given_intervals():
    lo, hi = depth_below([1e-6, 0.0], [1e-5, 1.0], 1e-4)
    assert np.allclose(lo, [1.0, -4.0]) and hi[0] == 2.0 and math.isinf(hi[1])
    d_lo, d_hi, i = deepest_reach([1e-3, 1e-6, 0.0], [5e-3, 1e-5, 1.0], 1e-4, [True, True, False])
    assert (i, d_lo, d_hi) == (1, 1.0, 2.0)
    assert math.isnan(deepest_reach([0.0], [1.0], 1e-4, [False])[0])


def test_decide_at_least_and_within_follow_the_effect_rule():
    assert decide_at_least(1.0, 2.0, 1.0) is True
    assert decide_at_least(-1.0, 0.9, 1.0) is False
    assert decide_at_least(0.5, 3.0, 1.0) is None
    assert decide_at_least(float("nan"), 3.0, 1.0) is None
    assert decide_within(-0.1, 0.2, 0.3) is True
    assert decide_within(0.4, 0.9, 0.3) is False
    assert decide_within(0.1, 0.9, 0.3) is None


def test_median_interval_is_distribution_free_and_wide_for_few_values():
    m, lo, hi = median_interval(np.arange(101), 0.96)
    assert m == 50 and 35 < lo < 50 < hi < 65
    assert median_interval([1.0, 2.0, 3.0])[1:] == (-math.inf, math.inf)
    assert median_interval([math.inf] * 7)[0] == math.inf  # infinite values are kept


def test_difference_interval_contains_the_difference():
    d, lo, hi = difference_interval(3, 4, 3, 8)
    assert lo < d == 0.375 < hi and -1 <= lo and hi <= 1


def test_decide_bins_agree_fails_on_too_many_disjoint_and_needs_three_informative():
    same = [0.1, 0.2, 0.3], [0.2, 0.3, 0.4]
    assert decide_bins_agree(*same, *same, [True] * 3, [True] * 3, 0.96)[0] is True
    assert decide_bins_agree(*same, *same, [False] * 3, [True] * 3, 0.96)[0] is None
    far = [0.5, 0.6, 0.7], [0.55, 0.65, 0.75]
    holds, counts = decide_bins_agree(*same, *far, [True] * 3, [True] * 3, 0.96)
    assert holds is False and counts["disjoint"] == 3


def test_small_helpers():
    assert decide_all([True, True]) is True and decide_all([True, None]) is None and decide_all([None, False]) is False
    assert kish([1, 1, 1, 0]) == pytest.approx(3.0) and kish([0, 0]) == 0.0
    assert separation([0, 1, 2], [10, 11, 12]) > 1 > separation([0, 1, 2], [0.5, 1.5, 2.5])
    assert t_inflation(3) > 1.6 and 1 < t_inflation(1000) < 1.01
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, 2000)
    r, lo, hi = cluster_ratio_interval(x, np.arange(2000) < 1000, np.arange(2000) >= 1000, np.arange(2000) // 10)
    assert lo < 1 < hi and lo < r < hi
