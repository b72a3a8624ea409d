"""The book's decision rules (rea.book.rules) and the paired comparisons of chapter 7 (rea.book.paired)."""

import numpy as np
import pytest
from scipy.stats import binom

from rea.book import held_out_losses
from rea.book.paired import decide_paired, paired_bootstrap
from rea.book.rules import (
    RULES,
    allowed_misses,
    check_rule,
    decide_agreement,
    decide_all,
    decide_coverage,
    decide_effect,
    decide_exact,
    effect_interval,
    gross_bound,
    informative,
)


@pytest.mark.parametrize("lo, hi, verdict", [(0.1, 2.0, True), (-0.5, 0.3, False), (-0.5, 2.0, None),
                                             (float("nan"), 1.0, None)])
def test_effect_rule_reproduces_beyond_uncertainty_and_refutes_only_with_power(lo, hi, verdict):
    """δ = 0.5: an interval above 0 reproduces; one below δ refutes; one holding 0 and δ decides nothing."""
    assert decide_effect(lo, hi, smallest=0.5) is verdict


def test_effect_rule_of_a_normal_estimate_at_2_9_se_is_not_a_refutation():
    """The case the review found: an effect 2.9 SE from 0 against a 3-SE bar had been called 'not reproduced'; with
    the rule it is reproduced at z = 2 and, at z = 3, inconclusive unless δ is above the interval."""
    assert decide_effect(*effect_interval(2.9, 1.0), smallest=1.0) is True
    assert decide_effect(*effect_interval(2.9, 1.0, z=3), smallest=1.0) is None
    assert decide_effect(*effect_interval(2.9, 1.0, z=3), smallest=6.0) is False


def test_informative_intervals_are_finite_narrow_and_off_the_ends():
    lo = np.array([1e-6, 0.0, 1e-6, 0.2, 1e-7])
    hi = np.array([5e-6, 1e-5, 1e-4, 1.0, 9e-7])
    np.testing.assert_array_equal(informative(lo, hi), [True, False, False, False, True])
    assert informative(1e-6, 5e-6, hits=4.9) is False and informative(1e-6, 5e-6, hits=5) is True


def test_coverage_rule_counts_only_informative_intervals_and_allows_the_binomial_misses():
    n, level = 40, 0.96
    allowed = allowed_misses(n, level)
    assert allowed == int(binom.ppf(0.99, n, 0.04)) and binom.cdf(allowed, n, 0.04) >= 0.99
    counted = np.ones(n, bool)
    covered = np.arange(n) >= allowed
    assert decide_coverage(covered, counted, level) is True
    covered[allowed] = False
    assert decide_coverage(covered, counted, level) is False
    # the vacuous intervals the review found (reaching 1 where the claim is about tails) are not counted at all
    assert decide_coverage(np.ones(5, bool), np.zeros(5, bool), level) is None
    assert decide_coverage([True, True], [True, True], level) is None  # fewer than MIN_COUNTED: cannot fail


def test_agreement_needs_informative_intervals_to_pass_and_fails_when_disjoint():
    assert decide_agreement((1e-9, 5e-9), (2e-9, 8e-9), True, True) is True
    assert decide_agreement((1e-9, 5e-9), (2e-10, 8e-7), True, False) is None  # 2.5 decades: agrees with anything
    assert decide_agreement((1e-9, 5e-9), (6e-9, 8e-7), True, False) is False


def test_decide_all_and_rule_names():
    assert decide_all([True, True]) is True and decide_all([True, None]) is None
    assert decide_all([None, False]) is False and decide_all([]) is None
    assert check_rule("agree") == "agree" and set(RULES) == {"effect", "exact", "coverage", "agree", "bar"}
    with pytest.raises(ValueError, match="rule must be one of"):
        check_rule("vibes")
    with pytest.raises(ValueError, match="smallest must be a positive effect size"):
        decide_effect(0.1, 0.2, smallest=0)


def test_paired_bootstrap_interval_covers_a_known_mean_and_decides():
    """Differences drawn around +1 (sd 1, 40 targets): the 95 % interval holds the sample mean, excludes 0 and is
    about ±2·sd/√n wide; around 0 it holds 0 and the rule refuses to decide or refutes by δ."""
    rng = np.random.default_rng(0)
    d = rng.normal(1.0, 1.0, 40)
    m, lo, hi = paired_bootstrap(d)
    assert lo < m < hi and lo > 0 and hi - lo == pytest.approx(2 * 1.96 / np.sqrt(40), rel=0.3)
    assert decide_paired(d, smallest=0.5)[3] is True
    null = rng.normal(0.0, 0.1, 40)
    assert decide_paired(null, smallest=0.5)[3] is False and decide_paired(null, smallest=0.01)[3] is None
    assert decide_paired(d[:2], smallest=0.5)[3] is None  # two targets: no interval


def test_held_out_losses_score_each_target_by_the_other_folds_fit():
    """Each target's loss is L(p, a·p̂^c) with (a, c) fitted on the other fold (by hand, two folds of six targets)."""
    from rea.single_token import fit_log_affine

    rng = np.random.default_rng(1)
    p = 10 ** rng.uniform(-9, -5, 12)
    p_hat = p * np.exp(rng.normal(0, 1, 12))
    got = held_out_losses(p, p_hat, folds=2, seed=3)
    perm = np.random.default_rng(3).permutation(12)
    for test, train in ((perm[0::2], perm[1::2]), (perm[1::2], perm[0::2])):
        a, c = fit_log_affine(p[train], p_hat[train])
        d = np.log(p[test]) - (np.log(a) + c * np.log(p_hat[test]))
        np.testing.assert_allclose(got[test], np.exp(d) - d - 1, rtol=1e-5, atol=1e-7)  # Nelder–Mead to ~1e-8


def test_exact_rule_fails_on_one_gross_miss_however_few_the_biases():
    """Six chain means with t intervals on 5 df (the review's case: misses at 4.5 and 9.9 SE passed by count alone):
    two misses of modest size pass, one at 9.9 SE fails by itself; three misses fail by count."""
    assert gross_bound(6, df=5) == pytest.approx(6.14, abs=0.01) and gross_bound(6) == pytest.approx(3.14, abs=0.01)
    assert decide_exact([0.5, -1.0, 4.5, -3.2, 0.1, 1.0], df=5) is True
    assert decide_exact([0.5, -1.0, 4.5, -9.9, 0.1, 1.0], df=5) is False
    assert decide_exact([3.5, -3.5, 3.5, 0.0, 0.1, 1.0], df=5) is False
    assert decide_exact([0.5, float("nan"), 1.0], df=5) is None  # two counted: no check
