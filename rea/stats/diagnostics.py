r"""Diagnostics for MCMC (TPS) output and error analysis [REA §5, App. C].

* :func:`n_burn_in` -- THE burn-in rule of the package: the first ⌊fraction·L⌋ steps of a segment of L steps
  (10 % by default; ⌊·⌋ so that a segment never loses more than the fraction). :func:`burn_in_mask`,
  :func:`drop_burn_in`, :meth:`rea.tps.TPSResult.post_burn_in` and :func:`rea.tps.mbar.tps_mbar` all use it.
* :func:`burn_in_mask` / :func:`drop_burn_in` -- discard the first 10 % of every (chain, bias) segment.
* :func:`gelman_rubin` -- the potential scale reduction of J chains of L steps,

  .. math:: B = \frac{L}{J-1}\sum_j (\bar y_j - \bar y)^2,\quad W = \frac1J \sum_j s_j^2,\quad
            \mathrm{GR} = \frac{\frac{L-1}{L} W + \frac1L B}{W},

  and :func:`gelman_rubin_by_bias`, which applies it per bias and flags the biases that pass (GR < 1.1).
* :func:`statistical_inefficiency` / :func:`subsample` -- g = 1 + 2τ and an uncorrelated subsample
  (``pymbar.timeseries``); :func:`statistical_inefficiency_multiple` -- one g from several chains of the same bias
  (fluctuations about the pooled mean, so chains that disagree raise g). MBAR's analytic errors on correlated
  samples use effective counts N_k/g_k (:func:`rea.tps.mbar.tps_mbar`).
* :func:`bootstrap_over_chains` -- bootstrap that resamples whole chains with replacement and reruns the whole
  pipeline; ``interval="percentile"`` [REA App. C]: for 100 replicas the 96 % interval is the 3rd smallest / 3rd
  largest replica; ``interval="t"``: estimate ± t_{J−1}·s_boot·√(J/(J−1)) with a robust bootstrap standard error
  (measured on real toy TPS chains: the percentile interval under-covers deep tails with 16 chains, the t interval
  does not -- see :func:`rea.validate.check_coverage_tps`).
* :func:`half_vs_full_bias` -- Δh = h_full − h_half relative to h and to the CI half-width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

from rea.arguments import check_confidence
from rea.stats.estimators import _captured_pymbar_output, import_pymbar

__all__ = [
    "n_burn_in",
    "burn_in_mask",
    "drop_burn_in",
    "gelman_rubin",
    "gelman_rubin_by_bias",
    "statistical_inefficiency",
    "statistical_inefficiency_multiple",
    "subsample",
    "order_statistic_index",
    "chain_resample_index",
    "BootstrapResult",
    "bootstrap_over_chains",
    "half_vs_full_bias",
]


# --------------------------------------------------------------------------------------------- burn-in


def n_burn_in(length, fraction: float = 0.1):
    """Burn-in steps of a segment of ``length`` steps: ⌊fraction·L⌋ (the one rule used everywhere).

    ``length`` may be an int (returns an int) or an int array (returns int64 ``[...]``). A tolerance of 1e-9 keeps
    float round-off from moving an exact product (0.1·30 = 3.0000000000000004) to the next integer.
    """
    if not (0 <= fraction < 1):
        raise ValueError(f"fraction must lie in [0, 1), got {fraction!r}")
    n = np.floor(fraction * np.asarray(length, dtype=np.float64) + 1e-9).astype(np.int64)
    return int(n) if n.ndim == 0 else n


def burn_in_mask(steps_within_segment, segment_length, fraction: float = 0.1) -> np.ndarray:
    """Keep-mask that drops the first ⌊fraction·L⌋ steps of each segment.

    Parameters
    ----------
    steps_within_segment : int ``[N]`` 0-based step index of each sample within its (chain, bias) segment
    segment_length : int or int ``[N]`` the length L of that segment (e.g. steps per bias, 4·10⁴ in [REA])
    fraction : burn-in fraction (0.1)

    Returns
    -------
    bool ``[N]``: True for samples to keep (step ≥ ⌊fraction·L⌋).
    """
    steps = np.asarray(steps_within_segment)
    length = np.broadcast_to(np.asarray(segment_length), steps.shape)
    if np.any(steps < 0) or np.any(steps >= length):
        raise ValueError("steps_within_segment must lie in [0, segment_length)")
    return steps >= n_burn_in(length, fraction)


def drop_burn_in(df: pd.DataFrame, by=("chain", "lam"), step: str = "step", fraction: float = 0.1) -> pd.DataFrame:
    """Drop the first ⌊fraction·L⌋ rows (ordered by ``step``) of each group ``by`` of a tidy table.

    L is the number of rows of the group, so the rule does not depend on how steps are numbered.
    Returns a new DataFrame (original index kept, sorted by ``by`` then ``step``).
    """
    by = list(by)
    for col in by + [step]:
        if col not in df.columns:
            raise ValueError(f"df has no column {col!r} (columns: {list(df.columns)})")
    n_burn_in(0, fraction)  # checks the fraction
    d = df.sort_values(by + [step], kind="stable")
    g = d.groupby(by, sort=False)[step]
    rank = g.cumcount()
    size = g.transform("size")
    return d[rank.to_numpy() >= n_burn_in(size.to_numpy(), fraction)]


# --------------------------------------------------------------------------------------------- Gelman-Rubin


def gelman_rubin(y) -> float:
    r"""Gelman–Rubin statistic of J chains of L post-burn-in steps ``y[J, L]`` (METHODS §7).

    .. math:: \bar y_j = \frac1L\sum_l y_{jl},\; \bar y = \frac1J\sum_j \bar y_j,\;
              s_j^2 = \frac{1}{L-1}\sum_l (y_{jl} - \bar y_j)^2,

    B = L/(J−1) Σ_j (ȳ_j − ȳ)², W = (1/J) Σ_j s_j², GR = ((L−1)/L·W + B/L)/W.

    Returns a float ≥ (L−1)/L; ``inf`` when every chain is constant but they differ (stuck chains), ``nan`` when
    all chains are the same constant (no information). Treat ``nan`` as failing a GR < 1.1 filter.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 2:
        raise ValueError(f"y must have shape [J, L] with J ≥ 2 chains and L ≥ 2 steps, got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains non-finite values")
    J, L = y.shape
    means = y.mean(axis=1)
    B = L / (J - 1) * np.sum((means - means.mean()) ** 2)
    W = np.mean(y.var(axis=1, ddof=1))
    if W == 0:
        return float("inf") if B > 0 else float("nan")
    return float(((L - 1) / L * W + B / L) / W)


def gelman_rubin_by_bias(y, chain_ids, lams, threshold: float = 1.1) -> pd.DataFrame:
    """Gelman–Rubin per bias from tidy arrays (samples in step order within each chain).

    For each λ the chains that visited it are truncated to their common length L (the shortest) and
    :func:`gelman_rubin` is applied. Biases with fewer than 2 chains or L < 2 get GR = nan.

    Parameters
    ----------
    y : float ``[N]`` observable per sample (post burn-in); chain_ids : ``[N]``; lams : float ``[N]``
    threshold : biases with GR < threshold pass (1.1)

    Returns
    -------
    DataFrame, one row per λ (sorted): ``lam, gr, n_chains, length, passed``.
    """
    y = np.asarray(y, dtype=np.float64)
    chain_ids = np.asarray(chain_ids)
    lams = np.asarray(lams, dtype=np.float64)
    if not (y.shape == chain_ids.shape == lams.shape) or y.ndim != 1:
        raise ValueError(
            f"y, chain_ids and lams must be 1-D of equal length, got {y.shape}, {chain_ids.shape}, {lams.shape}"
        )
    rows = []
    for lam in np.unique(lams):
        sel = lams == lam
        chains = [y[sel][chain_ids[sel] == c] for c in pd.unique(chain_ids[sel])]
        L = min(len(c) for c in chains)
        if len(chains) < 2 or L < 2:
            gr = float("nan")
        else:
            gr = gelman_rubin(np.stack([c[:L] for c in chains]))
        rows.append({"lam": lam, "gr": gr, "n_chains": len(chains), "length": L, "passed": bool(gr < threshold)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- correlation


def statistical_inefficiency(x, fast: bool = False) -> float:
    """Statistical inefficiency g = 1 + 2τ ≥ 1 of a time series ``x[T]`` (``pymbar.timeseries``).

    A constant series (a stuck chain) has no measurable correlation time: returns ``inf``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"x must be a 1-D series of at least 2 values, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains non-finite values")
    if np.all(x == x[0]):
        return float("inf")
    pymbar = import_pymbar()
    with _captured_pymbar_output():
        return float(pymbar.timeseries.statistical_inefficiency(x, fast=fast))


def statistical_inefficiency_multiple(series) -> float:
    r"""One statistical inefficiency g ≥ 1 from several chains ``series`` (list of 1-D arrays, lengths may differ).

    ``pymbar.timeseries.statistical_inefficiency_multiple``: the normalised autocorrelation C(t) of the fluctuations
    δy = y − ȳ about the mean ȳ of all chains pooled, averaged over chains, and g = 1 + 2 Σ_t C(t)(1 − t/L̄) up to the
    first C(t) ≤ 0 after t = 10. Chains that sit at different levels keep C(t) high, so g also grows with the
    between-chain spread. All values equal (no fluctuation): ``inf``. Series shorter than 2 are ignored.
    """
    ys = [np.asarray(y, dtype=np.float64).ravel() for y in series]
    ys = [y for y in ys if y.size >= 2]
    if not ys:
        raise ValueError("series must hold at least one chain of 2 or more values")
    if not all(np.all(np.isfinite(y)) for y in ys):
        raise ValueError("series contains non-finite values")
    pooled = np.concatenate(ys)
    if np.all(pooled == pooled[0]):
        return float("inf")
    pymbar = import_pymbar()
    with _captured_pymbar_output():
        return float(pymbar.timeseries.statistical_inefficiency_multiple(ys))


def subsample(x, g: float | None = None, conservative: bool = False) -> np.ndarray:
    """Indices ``[T']`` of an effectively uncorrelated subsample of ``x[T]`` (stride ≈ g; g computed if None).

    A constant series gives the single index 0.
    """
    x = np.asarray(x, dtype=np.float64)
    if g is None:
        g = statistical_inefficiency(x)
    if not np.isfinite(g):
        return np.array([0], dtype=np.int64)
    if g < 1:
        raise ValueError(f"g must be ≥ 1, got {g!r}")
    pymbar = import_pymbar()
    with _captured_pymbar_output():
        idx = pymbar.timeseries.subsample_correlated_data(x, g=g, conservative=conservative)
    return np.asarray(idx, dtype=np.int64)


# --------------------------------------------------------------------------------------------- bootstrap


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
    rng = np.random.default_rng(rng)
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
    finite = np.isfinite(reps)
    n_valid = finite.sum(axis=0)
    srt = np.sort(np.where(finite, reps, np.inf), axis=0)  # non-finite replicas sort last and are not used
    low = np.full(shape, np.nan)
    high = np.full(shape, np.nan)
    J = chains.size
    t_q = stats.t.ppf((1 + confidence) / 2, J - 1) * math.sqrt(J / (J - 1))
    est = np.broadcast_to(np.asarray(estimate, dtype=np.float64), shape)
    for idx in np.ndindex(*shape) if shape else [()]:
        nv = int(n_valid[idx])
        if interval == "t":
            if nv < _MIN_T_REPLICAS or not np.isfinite(est[idx]):
                continue
            col = srt[(slice(0, nv),) + idx]
            q_lo, q_hi = np.percentile(col, [15.865525393145708, 84.13447460685429])
            half = t_q * (q_hi - q_lo) / 2
            low[idx], high[idx] = est[idx] - half, est[idx] + half
            continue
        try:
            lo, hi = order_statistic_index(nv, confidence)
        except ValueError:
            continue
        low[idx] = srt[(lo,) + idx]
        high[idx] = srt[(hi,) + idx]
    if not shape:
        low, high, n_valid = float(low), float(high), int(n_valid)
    return BootstrapResult(estimate, reps, low, high, n_valid, float(confidence), interval, int(J))


_MIN_T_REPLICAS = 20


# --------------------------------------------------------------------------------------------- bias check


def half_vs_full_bias(h_first_half, h_full, ci_half_width) -> pd.DataFrame:
    """Bias check per bin: estimate from the first half of every chain vs from the full chains [REA §5].

    Δh = h_full − h_half; reported relative to h_full (Δh/h) and to the CI half-width (Δh/CI½). |Δh/CI½| ≪ 1
    means the remaining bias is small against the statistical error.

    Parameters
    ----------
    h_first_half, h_full, ci_half_width : float ``[B]`` (broadcastable)

    Returns
    -------
    DataFrame: ``h_half, h_full, delta, rel_to_h, rel_to_ci`` (NaN where h_full or CI½ is 0).
    """
    h_half = np.asarray(h_first_half, dtype=np.float64)
    h_full = np.asarray(h_full, dtype=np.float64)
    ci = np.asarray(ci_half_width, dtype=np.float64)
    try:
        h_half, h_full, ci = np.broadcast_arrays(h_half, h_full, ci)
    except ValueError:
        raise ValueError(
            f"h_first_half, h_full and ci_half_width must have matching shapes, got "
            f"{np.shape(h_first_half)}, {np.shape(h_full)}, {np.shape(ci_half_width)}"
        ) from None
    delta = h_full - h_half
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_h = np.where(h_full != 0, delta / h_full, np.nan)
        rel_ci = np.where(ci != 0, delta / ci, np.nan)
    return pd.DataFrame({
        "h_half": np.atleast_1d(h_half), "h_full": np.atleast_1d(h_full), "delta": np.atleast_1d(delta),
        "rel_to_h": np.atleast_1d(rel_h), "rel_to_ci": np.atleast_1d(rel_ci),
    })
