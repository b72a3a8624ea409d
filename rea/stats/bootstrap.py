r"""The bootstrap over chains [REA App. C]: resample whole chains with replacement and rerun the whole pipeline.

* :func:`bootstrap_over_chains` -- replicas of ``fn(selected chains)`` and their interval: ``interval="percentile"``
  [REA App. C]: for 100 replicas the 96 % interval is the 3rd smallest / 3rd largest replica
  (:func:`order_statistic_index`); ``interval="t"``: estimate ± t_{J−1}·s_boot·√(J/(J−1)) with a robust bootstrap
  standard error (measured on real toy TPS chains: the percentile interval under-covers deep tails with 16 chains,
  the t interval does not -- see :func:`rea.validate.check_coverage_tps`).
* :func:`chain_resample_index` -- the rows of a replica, a chain drawn twice counting as two chains.
* :class:`BootstrapResult` -- estimate, replicas, interval, valid replicas.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from rea.arguments import check_confidence

__all__ = ["order_statistic_index", "chain_resample_index", "BootstrapResult", "bootstrap_over_chains"]

_MIN_T_REPLICAS = 20
"""Fewest finite replicas for the t interval's robust standard error."""
_SD_QUANTILES = (15.865525393145708, 84.13447460685429)
"""Percentiles q_{15.87}, q_{84.13} of the replicas: (q_hi − q_lo)/2 is the standard deviation of normal replicas."""


def order_statistic_index(n_boot: int, confidence: float = 0.96) -> tuple[int, int]:
    """0-based indices (lo, hi) into the sorted replicas for a percentile interval.

    lo = ⌊n_boot·(1 − confidence)/2⌋, hi = n_boot − 1 − lo: for 100 replicas at 96 % that is (2, 97), the
    3rd smallest and 3rd largest. Needs n_boot·(1 − confidence)/2 ≥ 1 (≥ 50 replicas at 96 %).
    """
    confidence = check_confidence(confidence)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    tail = n_boot * (1 - confidence) / 2
    if tail < 1 - 1e-9:
        raise ValueError(
            f"n_boot = {n_boot} is too small for a {confidence:.0%} percentile interval: need at least "
            f"{math.ceil(2 / (1 - confidence) - 1e-9)} replicas"
        )
    lo = int(math.floor(tail + 1e-9))
    return lo, n_boot - 1 - lo


def chain_resample_index(sample_chain_ids, selected) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a replica that uses chains ``selected`` (with repeats) -> (index ``[N']``, new_chain_ids ``[N']``).

    Copy i of a chain gets new id i (0..len(selected)−1), so a chain drawn twice counts as two chains downstream
    (e.g. in Gelman–Rubin). Rows keep their within-chain order.
    """
    ids = np.asarray(sample_chain_ids)
    idx, new = [], []
    for i, c in enumerate(selected):
        rows = np.flatnonzero(ids == c)
        if rows.size == 0:
            raise ValueError(f"selected chain {c!r} has no samples in sample_chain_ids")
        idx.append(rows)
        new.append(np.full(rows.size, i, dtype=np.int64))
    return np.concatenate(idx), np.concatenate(new)


@dataclass
class BootstrapResult:
    """Bootstrap over chains (percentile or t interval).

    estimate : fn(all chains) (float or array); replicas : ``[n_boot, ...]`` (NaN where a replica failed with
    ``on_error="nan"``); ci_low, ci_high : the interval per element over the finite replicas (order statistics or
    t, see :func:`bootstrap_over_chains`); n_valid : finite replicas per element; confidence : the level;
    interval : ``"percentile"`` or ``"t"``; n_chains : J, the number of chains resampled.
    """

    estimate: float | np.ndarray
    replicas: np.ndarray
    ci_low: float | np.ndarray
    ci_high: float | np.ndarray
    n_valid: int | np.ndarray
    confidence: float
    interval: str = "percentile"
    n_chains: int = 0

    @property
    def half_width(self):
        """CI½ = (ci_high − ci_low)/2."""
        return (np.asarray(self.ci_high) - np.asarray(self.ci_low)) / 2


def bootstrap_over_chains(
    chain_ids,
    fn: Callable[[np.ndarray], float | np.ndarray],
    n_boot: int = 100,
    confidence: float = 0.96,
    rng=None,
    on_error: str = "raise",
    interval: str = "percentile",
) -> BootstrapResult:
    r"""Bootstrap resampling whole chains with replacement [REA App. C].

    Each replica draws J chain ids uniformly with replacement from the J distinct ``chain_ids`` and calls
    ``fn(selected)`` (``selected`` int/label ``[J]``, repeats possible), which must recompute the whole pipeline
    (burn-in, convergence filter, MBAR) on those chains, treating repeats as distinct chains (see
    :func:`chain_resample_index`).

    Intervals (level c, J chains, θ̂ = ``fn(all chains)``, θ*_b the finite replicas):

    * ``"percentile"`` [REA App. C]: order statistics of the sorted replicas with :func:`order_statistic_index`
      (3rd smallest / 3rd largest of 100 at 96 %). Needs ≥ 50 finite replicas at 96 %.
    * ``"t"``: θ̂ ± t_{J−1,(1+c)/2} · s · √(J/(J−1)), with s = (q_{84.13} − q_{15.87})/2 of the replicas (the
      standard deviation for normal replicas, but robust to a few replicas at an extreme, e.g. ln 0 where a replica
      has no sample in a tail). √(J/(J−1)) undoes the bootstrap's downward bias of the variance of a mean of J
      units and the Student quantile accounts for estimating it from J chains. Symmetric about θ̂: for a skewed
      estimator (ln P̂ of a deep tail, whose replicas have a long lower tail) it borrows the long side, where the
      percentile interval puts its upper end too low. Needs ≥ 20 finite replicas.

    Parameters
    ----------
    chain_ids : the chain labels (any array; duplicates are collapsed)
    fn : callable returning a float or an array of fixed shape
    n_boot : replicas (100); confidence : level (0.96); rng : ``numpy.random.Generator`` or seed
    on_error : ``"raise"`` or ``"nan"`` (a replica whose ``fn`` raises becomes NaN and is left out)
    interval : ``"percentile"`` or ``"t"`` (see above)

    Returns
    -------
    :class:`BootstrapResult`.
    """
    chains = _checked_chains(chain_ids, n_boot, confidence, on_error, interval)
    rng = np.random.default_rng(rng)
    estimate, reps = _draw_replicas(chains, fn, n_boot, rng, on_error)
    low, high, n_valid = _replica_intervals(estimate, reps, confidence, interval, chains.size)
    if not np.shape(estimate):
        low, high, n_valid = float(low), float(high), int(n_valid)
    return BootstrapResult(estimate, reps, low, high, n_valid, float(confidence), interval, int(chains.size))


def _checked_chains(chain_ids, n_boot, confidence, on_error, interval) -> np.ndarray:
    """The distinct chains ``[J]`` of ``chain_ids``; ValueError unless J ≥ 2, ``on_error`` and ``interval`` are known
    and ``n_boot`` suffices for the interval."""
    if on_error not in ("raise", "nan"):
        raise ValueError(f"on_error must be 'raise' or 'nan', got {on_error!r}")
    if interval not in ("percentile", "t"):
        raise ValueError(f"interval must be 'percentile' or 't', got {interval!r}")
    chains = pd.unique(np.asarray(chain_ids).ravel())
    if chains.size < 2:
        raise ValueError(f"chain_ids must name at least 2 chains to resample, got {chains.size}")
    if interval == "percentile":
        order_statistic_index(n_boot, confidence)
    elif isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < _MIN_T_REPLICAS:
        raise ValueError(f"n_boot must be an integer ≥ {_MIN_T_REPLICAS} for interval='t', got {n_boot!r}")
    return chains


def _draw_replicas(chains, fn, n_boot, rng, on_error):
    """θ̂ = fn(all ``chains`` ``[J]``) and the replicas ``[n_boot, ...]``: fn of J chains drawn with replacement
    (NaN where fn raised and ``on_error="nan"``)."""
    estimate = fn(chains.copy())
    shape = np.shape(estimate)
    reps = np.full((n_boot,) + shape, np.nan)
    for b in range(n_boot):
        sel = chains[rng.integers(0, chains.size, chains.size)]
        try:
            reps[b] = fn(sel)
        except Exception:
            if on_error == "raise":
                raise
    return estimate, reps


def _replica_intervals(estimate, reps, confidence, interval, n_chains):
    r"""Per element of θ̂: (low, high, finite replicas) over the finite replicas ``reps`` ``[n_boot, ...]``.

    ``"t"``: θ̂ ± t_{J−1,(1+c)/2} √(J/(J−1)) (q_{84.13} − q_{15.87})/2 (NaN below ``_MIN_T_REPLICAS`` replicas or for a
    non-finite θ̂); ``"percentile"``: the order statistics of :func:`order_statistic_index` (NaN when too few).
    """
    shape = np.shape(estimate)
    finite = np.isfinite(reps)
    n_valid = finite.sum(axis=0)
    srt = np.sort(np.where(finite, reps, np.inf), axis=0)  # non-finite replicas sort last and are not used
    low = np.full(shape, np.nan)
    high = np.full(shape, np.nan)
    J = n_chains
    t_q = stats.t.ppf((1 + confidence) / 2, J - 1) * math.sqrt(J / (J - 1))
    est = np.broadcast_to(np.asarray(estimate, dtype=np.float64), shape)
    for idx in np.ndindex(*shape) if shape else [()]:
        nv = int(n_valid[idx])
        if interval == "t":
            if nv < _MIN_T_REPLICAS or not np.isfinite(est[idx]):
                continue
            q_lo, q_hi = np.percentile(srt[(slice(0, nv),) + idx], list(_SD_QUANTILES))
            half = t_q * (q_hi - q_lo) / 2
            low[idx], high[idx] = est[idx] - half, est[idx] + half
            continue
        try:
            lo, hi = order_statistic_index(nv, confidence)
        except ValueError:
            continue
        low[idx] = srt[(lo,) + idx]
        high[idx] = srt[(hi,) + idx]
    return low, high, n_valid
