"""How the book decides a finding: the decision rules, stated once.

Every finding (:func:`rea.book.findings.record_finding`) names the rule that decided it (``rule="effect"``, ...);
each chapter's findings table shows it and the introduction states them all (:data:`RULES`). A rule returns
``True``, ``False`` or ``None`` (the run cannot decide: *inconclusive*); a chapter passes that value on as ``holds``.

The rules, with ``z = 2`` (about 95 % two-sided) unless a chapter states its interval's own level:

``effect`` (:func:`decide_effect`)
    A paper's claim that an effect exists: one method more accurate than another, the ensemble's mean moved, a
    share above a half. The run measures the effect ``d`` with an interval ``[lo, hi]`` (``d ± z·se``, or a
    bootstrap or Wilson interval) oriented so that the claim is ``d > 0``. *Reproduced* when ``lo > 0`` (the effect
    is beyond the run's uncertainty); *not reproduced* when ``hi < δ``, where ``δ > 0`` is the smallest effect the
    claim implies, stated beside the verdict: the run had the power to see an effect of that size and did not;
    *inconclusive* otherwise (the interval holds both 0 and ``δ``).

``exact``, ``coverage`` (:func:`decide_coverage`)
    A check against exact answers (the toy LM): intervals at a stated level (e.g. 96 %) should contain the exact
    value. Only *informative* intervals count (:func:`informative`: neither end at 0 or 1, at most
    :data:`MAX_DECADES` decades wide for a probability) and, where the claim is about tails, only those below direct
    sampling's floor. With ``n`` counted intervals and ``m`` misses: *passes* when ``m`` is at most the 99 % quantile
    of Binomial(n, 1 − level), the most misses a calibrated interval gives 99 times in 100; *fails* when ``m`` is
    larger; *inconclusive* when ``n <`` :data:`MIN_COUNTED` (nothing to count: the check could not have failed).
    ``exact`` (:func:`decide_exact`) is the same rule for point checks of a sampler (chain means against exact tilted
    means, in standard errors z), with one more way to fail: a *gross* miss, |z| beyond the bound that n calibrated
    estimates all stay within 99 times in 100 (Bonferroni), fails the check by itself, however few biases there are.

``agree`` (:func:`decide_agreement`)
    Two independent estimators of one quantity (e.g. SMC and importance sampling on the real model, where no exact
    answer exists). *Passes* when both intervals are informative and overlap; *fails* when the intervals are
    disjoint (whatever their width); *inconclusive* when they overlap but one is not informative (an interval that
    reaches 0 or spans decades agrees with anything).

``bar``
    A quantity of this run that carries no sampling uncertainty the claim is about (round-off between two exact
    computations, the effective sample size of these samples, a count of this run's items) against a stated bar.

The *power* of a "not reproduced" is its ``δ``: the chapter's ``measured`` text states it ("excludes a gain of
more than ...").
"""

from __future__ import annotations

import math

import numpy as np

MAX_DECADES = 1.0
"""The widest interval of a probability that counts as informative, in decades (``log10(hi / lo)``)."""

MIN_HITS = 5.0
"""The fewest effective hits (Kish count of the weights on the event, or hits) for an estimate to count."""

MIN_COUNTED = 3
"""The fewest informative intervals a coverage check counts before it can pass or fail."""

RULES: dict[str, str] = {
    "effect": "effect beyond its interval: reproduced if the interval excludes no effect, not reproduced if it "
              "excludes the smallest effect the claim implies (stated), inconclusive otherwise",
    "exact": "against exact toy answers: informative intervals only; fails on more misses than a calibrated "
             "interval gives 99 times in 100, or on one miss beyond what n calibrated estimates all stay within "
             "99 times in 100",
    "coverage": "coverage of informative intervals below direct sampling's floor; fails on more misses than a "
                "calibrated interval gives 99 times in 100; inconclusive under 3 such intervals",
    "agree": "two independent estimators: passes if both intervals are informative (≤ 1 decade, not reaching 0 "
             "or 1) and overlap, fails if disjoint, inconclusive otherwise",
    "bar": "a quantity of this run without sampling noise against a stated bar",
}
"""Each rule's name and a one-line statement of it (the findings tables' "Rule" column links here)."""


def check_rule(rule: str) -> str:
    """``rule`` if it is a name of :data:`RULES`, else a one-line ``ValueError`` listing them."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    return rule


def decide_effect(lo: float, hi: float, smallest: float) -> bool | None:
    """The ``effect`` rule: ``True`` if ``lo > 0``, ``False`` if ``hi < smallest``, else ``None``.

    ``[lo, hi]`` is the interval of an effect oriented so that the claim is "effect > 0"; ``smallest > 0`` is the
    smallest effect the claim implies (the power asked of a "not reproduced"). NaN ends give ``None``.
    """
    if not smallest > 0:
        raise ValueError(f"smallest must be a positive effect size, got {smallest!r}")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if lo > hi:
        raise ValueError(f"lo must not exceed hi, got lo={lo!r}, hi={hi!r}")
    if lo > 0:
        return True
    if hi < smallest:
        return False
    return None


def effect_interval(estimate: float, se: float, z: float = 2.0) -> tuple[float, float]:
    """``(estimate − z·se, estimate + z·se)``: the interval :func:`decide_effect` takes from a normal estimate."""
    return estimate - z * se, estimate + z * se


def informative(lo, hi, hits=None, max_decades: float = MAX_DECADES, min_hits: float = MIN_HITS):
    """Whether intervals ``[lo, hi]`` of probabilities say something: ``0 < lo``, ``hi < 1``, ``hi/lo ≤ 10^d``.

    ``d`` is ``max_decades``. ``lo``, ``hi`` (and ``hits``, the effective number of hits behind each estimate, if
    given: at least ``min_hits``) are scalars or arrays of one shape; returns a bool or a bool array of that shape.
    """
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (lo > 0) & (hi < 1) & np.isfinite(lo) & np.isfinite(hi) & (np.log10(hi / lo) <= max_decades)
    if hits is not None:
        ok &= np.asarray(hits, dtype=float) >= min_hits
    return bool(ok) if ok.ndim == 0 else ok


def allowed_misses(n: int, level: float) -> int:
    """The 99 % quantile of Binomial(n, 1 − level): the most misses ``n`` calibrated ``level`` intervals give, 99
    times in 100."""
    from scipy.stats import binom

    return int(binom.ppf(0.99, n, 1.0 - level))


def decide_coverage(covered, counted, level: float, min_counted: int = MIN_COUNTED) -> bool | None:
    """The ``coverage``/``exact`` rule over intervals: ``covered`` and ``counted`` are bool arrays of one shape.

    Among the ``n = counted.sum()`` counted (informative, below-floor) intervals, ``m`` miss: ``None`` if
    ``n < min_counted``, else ``m ≤`` :func:`allowed_misses` ``(n, level)``.
    """
    covered, counted = np.asarray(covered, dtype=bool), np.asarray(counted, dtype=bool)
    if covered.shape != counted.shape:
        raise ValueError(f"covered and counted must have one shape, got {covered.shape} and {counted.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    n = int(counted.sum())
    if n < min_counted:
        return None
    misses = int((counted & ~covered).sum())
    return misses <= allowed_misses(n, level)


def decide_agreement(a: tuple[float, float], b: tuple[float, float], a_informative: bool,
                     b_informative: bool) -> bool | None:
    """The ``agree`` rule for intervals ``a = (lo, hi)`` and ``b``: disjoint → ``False``; overlapping and both
    informative → ``True``; else ``None``."""
    overlap = a[0] <= b[1] and b[0] <= a[1]
    if not overlap:
        return False
    return True if (a_informative and b_informative) else None


def decide_all(decisions) -> bool | None:
    """A claim that holds only if each of its parts holds ("beats every other method", "for both observables"),
    from the parts' three-valued decisions: ``False`` if one part is ``False`` (one part shown absent refutes it),
    ``True`` if every part is ``True``, ``None`` otherwise (and for no parts)."""
    decisions = [d if d is None else bool(d) for d in decisions]
    if any(d is False for d in decisions):
        return False
    return True if decisions and all(d is True for d in decisions) else None


def gross_bound(n: int, df: float | None = None) -> float:
    """The |z| that ``n`` calibrated estimates all stay within 99 times in 100 (Bonferroni: each beyond it with
    probability 0.01/n, two-sided), for z normal (``df=None``) or Student t with ``df`` degrees of freedom."""
    from scipy.stats import norm, t

    tail = 0.01 / (2 * max(int(n), 1))
    return float(norm.isf(tail) if df is None else t.isf(tail, df))


def decide_exact(z, counted=None, within: float = 3.0, df: float | None = None) -> bool | None:
    """The ``exact`` rule for estimates ``z`` standard errors from exact answers (``[n]``; ``counted``: which have an
    interval, default all finite).

    A miss is |z| > ``within``; a calibrated interval of ``within`` SE holds the truth with probability
    ``level = P(|T| ≤ within)`` (T normal, or Student t with ``df``). ``None`` if fewer than :data:`MIN_COUNTED` are
    counted; ``False`` if the misses exceed :func:`allowed_misses` ``(n, level)`` or one |z| exceeds
    :func:`gross_bound` ``(n, df)``; else ``True``.
    """
    from scipy.stats import norm, t

    z = np.asarray(z, dtype=float)
    counted = np.isfinite(z) if counted is None else np.asarray(counted, dtype=bool) & np.isfinite(z)
    n = int(counted.sum())
    if n < MIN_COUNTED:
        return None
    level = 1 - 2 * float(norm.sf(within) if df is None else t.sf(within, df))
    gross = bool(np.any(np.abs(z[counted]) > gross_bound(n, df)))
    return decide_coverage(np.abs(z) <= within, counted, level) and not gross
