"""Small decisions chapters 5 (MBAR) and 6 (errors) share, each an application of a rule of :mod:`rea.book.rules`.

* :func:`depth_below` / :func:`deepest_reach`: how many decades below direct sampling's floor ``1/N`` an interval of
  a probability lies, and the deepest that informative intervals reach (claims "far below the floor");
* :func:`decide_at_least` and :func:`decide_within`: the ``effect`` rule for a claim of a stated size ("at least a
  decade", "within a factor of two");
* :func:`median_interval` and :func:`difference_interval`: distribution-free interval of a median, Newcombe's
  interval of a difference of two proportions;
* :func:`decide_bins_agree`: the ``agree`` rule over many bins or thresholds at once (a claim made for several
  cases, e.g. both observables, combines its parts with :func:`rea.book.rules.decide_all`);
* :func:`cluster_ratio_interval` (a ratio of means, bootstrapped over chains), :func:`kish` (effective samples);
* :func:`separation` (of two ensembles) and :func:`t_inflation` (how much a Student-t interval on few degrees of
  freedom widens over the normal one).
"""

from __future__ import annotations

import math

import numpy as np

from rea.book.rules import MIN_COUNTED, allowed_misses, decide_agreement


def depth_below(ci_low, ci_high, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Decades below ``floor`` of intervals ``[ci_low, ci_high]``: ``(log10(floor/ci_high), log10(floor/ci_low))``.

    The first is how far below the floor the interval lies for certain, the second how far it may reach (``inf``
    where ``ci_low`` is 0). Negative values lie above the floor.
    """
    lo, hi = np.asarray(ci_low, dtype=float), np.asarray(ci_high, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(floor / hi), np.log10(floor / lo)


def deepest_reach(ci_low, ci_high, floor: float, counted) -> tuple[float, float, int | None]:
    """The interval of the depth below ``floor`` that the ``counted`` (informative) intervals reach.

    Returns ``(lo, hi, i)``: ``lo`` the largest certain depth (:func:`depth_below`'s first value) over the counted
    intervals, ``hi`` the largest possible depth, ``i`` the position of the interval giving ``lo``; ``(nan, nan,
    None)`` when none is counted.
    """
    counted = np.asarray(counted, dtype=bool)
    if not counted.any():
        return float("nan"), float("nan"), None
    d_lo, d_hi = depth_below(ci_low, ci_high, floor)
    i = int(np.flatnonzero(counted)[np.argmax(d_lo[counted])])
    return float(d_lo[i]), float(np.max(d_hi[counted])), i


def decide_at_least(lo: float, hi: float, size: float) -> bool | None:
    """The ``effect`` rule for a claim "the effect is at least ``size``" with the effect's interval ``[lo, hi]``.

    ``True`` when ``lo ≥ size`` (the whole interval reaches the claimed size), ``False`` when ``hi < size`` (the
    interval excludes it: the power of the "not reproduced" is ``size``), ``None`` otherwise or for NaN ends.
    """
    if math.isnan(lo) or math.isnan(hi):
        return None
    if lo >= size:
        return True
    if hi < size:
        return False
    return None


def decide_within(lo: float, hi: float, bound: float) -> bool | None:
    """The ``effect`` rule for a claim "the effect lies within ``±bound``" (two quantities comparable).

    ``True`` when ``[lo, hi] ⊂ [−bound, bound]``, ``False`` when the interval lies wholly outside it, ``None``
    otherwise or for NaN ends.
    """
    if math.isnan(lo) or math.isnan(hi):
        return None
    if -bound <= lo and hi <= bound:
        return True
    if hi < -bound or lo > bound:
        return False
    return None


def median_interval(values, level: float = 0.96) -> tuple[float, float, float]:
    """``(median, lo, hi)``: the distribution-free interval of the median of ``values`` from order statistics.

    ``[x_(k), x_(n+1−k)]`` with the largest ``k`` whose binomial tail ``P(Bin(n, ½) < k) ≤ (1 − level)/2``;
    ``(−inf, inf)`` when ``n`` is too small for any ``k`` (under 6 values at 96 %), NaN for no values; NaN values
    are dropped, infinite ones kept.
    """
    from scipy.stats import binom

    x = np.asarray(values, dtype=float)
    x = np.sort(x[~np.isnan(x)])  # ±inf stay: e.g. a ratio to an estimate that does not exist
    n = x.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    k = int(binom.ppf((1 - level) / 2, n, 0.5))  # P(Bin ≤ k) ≥ α/2; step back while P(Bin ≤ k − 1) > α/2
    while k >= 1 and binom.cdf(k - 1, n, 0.5) > (1 - level) / 2:
        k -= 1
    if k < 1:
        return float(np.median(x)), -math.inf, math.inf
    return float(np.median(x)), float(x[k - 1]), float(x[n - k])


def difference_interval(k1: int, n1: int, k2: int, n2: int, confidence: float = 0.96) -> tuple[float, float, float]:
    """``(d, lo, hi)`` for ``d = k1/n1 − k2/n2``: Newcombe's hybrid score interval from the two Wilson intervals."""
    from rea.stats.intervals import wilson_interval

    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, confidence)
    l2, u2 = wilson_interval(k2, n2, confidence)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def decide_bins_agree(a_low, a_high, b_low, b_high, a_informative, b_informative,
                      level: float) -> tuple[bool | None, dict]:
    """The ``agree`` rule (:func:`rea.book.rules.decide_agreement`) over many bins of two independent estimators.

    Each bin is decided by ``decide_agreement``; over the ``n`` bins: *fails* when more are disjoint than
    :func:`rea.book.rules.allowed_misses` ``(n, level)`` (disjoint ``level`` intervals are rarer than misses, so
    this is lenient towards agreement), *passes* when not failing and at least :data:`MIN_COUNTED` bins are decided
    agreeing (both informative), *inconclusive* otherwise. Returns ``(holds, counts)`` with counts ``n``,
    ``agree`` (informative and overlapping), ``disjoint``, ``allowed``.
    """
    decided = [decide_agreement((al, ah), (bl, bh), bool(ai), bool(bi))
               for al, ah, bl, bh, ai, bi in zip(a_low, a_high, b_low, b_high, a_informative, b_informative)]
    n = len(decided)
    counts = dict(n=n, agree=sum(d is True for d in decided), disjoint=sum(d is False for d in decided),
                  allowed=allowed_misses(n, level) if n else 0)
    if n and counts["disjoint"] > counts["allowed"]:
        return False, counts
    return (True if counts["agree"] >= MIN_COUNTED else None), counts


def separation(a, b) -> float:
    """How far apart two ensembles of values lie: ``|mean(a) − mean(b)|`` over their pooled standard deviation
    ``sqrt((var(a) + var(b))/2)``; above 1 the bulk of one lies beyond the other's."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return abs(a.mean() - b.mean()) / pooled if pooled > 0 else math.inf


def t_inflation(dof: int, level: float = 0.96) -> float:
    """The Student-t quantile on ``dof`` degrees of freedom over the normal one at two-sided ``level``: how much
    wider a t interval is than a normal interval of the same standard error."""
    from scipy.stats import norm, t

    q = (1 + level) / 2
    return float(t.ppf(q, dof) / norm.ppf(q))



def cluster_ratio_interval(x, in_a, in_b, cluster, level: float = 0.96, n_boot: int = 2000,
                           seed: int = 0) -> tuple[float, float, float]:
    """``(r, lo, hi)``: the ratio ``r`` of the mean of ``x`` over rows ``in_a`` to its mean over rows ``in_b``, with
    a percentile bootstrap interval that resamples whole ``cluster`` s (e.g. the states of one chain, which are
    correlated; give independent rows clusters of their own). NaN when a replica has no row of ``b``.
    """
    import pandas as pd

    x = np.asarray(x, dtype=float)
    df = pd.DataFrame({"c": np.asarray(cluster), "xa": x * in_a, "na": np.asarray(in_a, dtype=float),
                       "xb": x * in_b, "nb": np.asarray(in_b, dtype=float)}).groupby("c").sum()
    sums = df.to_numpy()  # per cluster: Σx over a, count a, Σx over b, count b

    def ratio(s):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (s[..., 0] / s[..., 1]) / (s[..., 2] / s[..., 3])

    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(sums), np.full(len(sums), 1 / len(sums)), size=n_boot)
    reps = ratio(counts @ sums)
    q = (1 - level) / 2
    return float(ratio(sums.sum(axis=0))), float(np.nanquantile(reps, q)), float(np.nanquantile(reps, 1 - q))


def kish(w) -> float:
    """Kish's effective number of samples of (non-negative) weights ``w``, ``(Σw)² / Σw²``
    (:func:`rea.stats.effective_sample_size` of log w); 0 when no weight is positive."""
    from rea.stats import effective_sample_size

    w = np.asarray(w, dtype=float)
    if not np.any(w > 0):
        return 0.0
    with np.errstate(divide="ignore"):
        return effective_sample_size(np.log(w))
