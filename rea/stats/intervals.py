r"""Confidence intervals for proportions: the normal quantile, Wilson's score interval and the effective-count
(Korn–Graubard) interval of an importance-sampling estimate [REA §3.2–3.3].

* :func:`z_value` -- the two-sided normal quantile z of a confidence level (the one z helper of the package).
* :func:`wilson_interval` -- the Wilson score interval of k successes in n trials (direct sampling; the one home of
  the Wilson interval).
* :func:`variance_df` -- effective degrees of freedom (Kish count) of a variance estimate Σ_n d_n.
* :func:`is_interval` -- the effective-count interval of an importance-sampling estimate p̂ ± se: Wilson's interval
  of k* = n* p̂ hits in n* = p̂(1 − p̂)/se² trials.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from rea.arguments import check_confidence

__all__ = ["z_value", "wilson_interval", "variance_df", "is_interval"]


def z_value(confidence: float) -> float:
    """Two-sided normal quantile z with P(|Z| ≤ z) = ``confidence`` (2.054 for 0.96)."""
    confidence = check_confidence(confidence)
    return float(stats.norm.ppf(0.5 + confidence / 2))




def wilson_interval(k, n, confidence: float = 0.96):
    r"""Wilson score interval for a binomial proportion, vectorised over ``k`` and ``n`` (broadcast).

    .. math:: \frac{k + z^2/2}{n + z^2} \pm \frac{z}{n + z^2}\sqrt{\frac{k(n-k)}{n} + \frac{z^2}{4}},
       \qquad z = \Phi^{-1}\!\left(\tfrac{1 + \mathrm{confidence}}{2}\right).

    Parameters
    ----------
    k : int array-like, successes, 0 ≤ k ≤ n
    n : int array-like, trials, n ≥ 1
    confidence : float, default 0.96 (the paper's level)

    Returns
    -------
    (low, high) : float64 arrays of the broadcast shape of ``k`` and ``n`` (scalars for scalar input).
    For k = 0 the interval is [0, z²/(n + z²)].
    """
    z = z_value(confidence)
    k_arr, n_arr = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64))
    if np.any(~np.isfinite(n_arr)) or np.any(n_arr < 1):
        raise ValueError("n must be ≥ 1 (at least one trial)")
    if np.any(~np.isfinite(k_arr)) or np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError("k must satisfy 0 ≤ k ≤ n")
    z2 = z * z
    centre = (k_arr + z2 / 2) / (n_arr + z2)
    half = z / (n_arr + z2) * np.sqrt(k_arr * (n_arr - k_arr) / n_arr + z2 / 4)
    low = np.clip(centre - half, 0.0, 1.0)
    high = np.clip(centre + half, 0.0, 1.0)
    low = np.where(k_arr == 0, 0.0, low)
    high = np.where(k_arr == n_arr, 1.0, high)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def variance_df(sq_dev) -> np.ndarray:
    r"""Effective degrees of freedom of a variance estimate Σ_n d_n (Satterthwaite / Kish count of its terms).

    .. math:: \nu = \frac{(\sum_n d_n)^2}{\sum_n d_n^2}, \qquad d_n = (y_n - \bar y)^2 \ge 0.

    Equal terms give ν = N; a variance carried by a few large terms (a few heavy weights) gives ν ≈ their number.

    Parameters
    ----------
    sq_dev : float ``[N]`` or ``[N, M]`` squared deviations d_n ≥ 0

    Returns
    -------
    float ``[M]`` (scalar for 1-D input), ν ≥ 1; ``inf`` where Σ d = 0 (nothing to estimate).
    """
    d = np.asarray(sq_dev, dtype=np.float64)
    d2 = d.reshape(d.shape[0], -1)
    m = d2.max(axis=0)
    safe = np.where(m > 0, m, 1.0)
    r = d2 / safe  # scale-free: no overflow of d² for huge weights
    s1, s2 = r.sum(axis=0), (r * r).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        nu = np.where(m > 0, np.maximum(s1 * s1 / s2, 1.0), np.inf)
    return float(nu[0]) if d.ndim == 1 else nu


def is_interval(value, stderr, n, df=None, confidence: float = 0.96):
    r"""Effective-count interval for an importance-sampling estimate p̂ of a probability p = E_{p_M}[f], f ∈ [0, 1].

    Korn & Graubard (1998): p̂ is read as k* successes in n* Bernoulli trials with the same variance,

    .. math:: n^* = \frac{\hat p(1 - \hat p)}{\widehat{\mathrm{se}}^2}\left(\frac{z}{t_\nu}\right)^2, \qquad
       k^* = n^* \hat p, \qquad [\mathrm{low}, \mathrm{high}] = \mathrm{Wilson}(k^*, n^*),

    with z = Φ⁻¹((1 + confidence)/2), t_ν the Student quantile at the same level and ν = max(``df``, 2), ``df`` the
    degrees of freedom of se² (:func:`variance_df`; ``None``: ν = ∞, t_ν = z). The floor 2: a variance carried by
    one term would take the Cauchy quantile t_1 (15.9 at 96 %, n* cut 60-fold); on the toy's rare tails
    (:func:`rea.validate.check_is_coverage`) ν ≥ 2 kept coverage ≥ 0.93 with intervals ~5× narrower than ν = 1.
    For rare events k* ≈ (Σ_hits w)²/Σ_hits w², the Kish count of the hits, and n* ≈ k*/p̂: the interval is that of
    k* hits at a per-hit weight p̂/k*. The factor (z/t_ν)² widens it when se² itself rests on a few large terms, where
    the sampled hits understate both p̂ and se (heavy-tailed weights: the normal interval p̂ ± z·se then misses
    high). Wilson's interval contains p̂ = k*/n*.

    **No hit** (p̂ = 0): n* = ``n`` and k* = 0, so the upper bound is z²/(n + z²), the Wilson bound on the
    *proposal's* probability q(A) of the event after 0 hits in n draws. Since p_M(A) = q(A)·E_q[w | A], it bounds
    p_M(A) only when the proposal does not make the event rarer than the model does (q(A) ≥ p_M(A), i.e.
    E_q[w | A] ≤ 1); nothing in the samples can check this. Where se = 0 or se is not finite with p̂ > 0 (every sample
    contributed the same, or N = 1), n* = ``n``. p̂ > 1 is clipped to 1 inside n*, and n* is floored at 1.

    Parameters
    ----------
    value : float, scalar or ``[M]``: estimates p̂ ≥ 0 of a mean of f ∈ [0, 1] (divide by a bound first otherwise)
    stderr : float, same shape: standard errors ≥ 0 (NaN allowed: unknown)
    n : number of samples (the n* of a zero-hit estimate), scalar or ``[M]``, ≥ 1
    df : degrees of freedom ≥ 1 (ν = max(df, 2)), scalar or ``[M]``, or ``None`` (ν = ∞)
    confidence : level (0.96)

    Returns
    -------
    (low, high, n_eff, k_eff) : float64 arrays of the broadcast shape (floats for scalar input).
    """
    conf = check_confidence(confidence)
    p, se, n_arr, nu = _checked_is_interval_inputs(value, stderr, n, df)
    z = z_value(conf)
    nu = np.maximum(nu, 2.0)
    t = np.where(np.isfinite(nu), stats.t.ppf(0.5 + conf / 2, np.where(np.isfinite(nu), nu, 2.0)), z)
    pc = np.minimum(p, 1.0)
    known = (p > 0) & np.isfinite(se) & (se > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(known, pc * (1 - pc) / np.where(known, se, 1.0) ** 2 * (z / t) ** 2, n_arr)
    n_eff = np.maximum(n_eff, 1.0)
    k_eff = n_eff * pc
    low, high = wilson_interval(k_eff, n_eff, conf)
    if np.ndim(low) == 0:
        return float(low), float(high), float(n_eff), float(k_eff)
    return low, high, n_eff, k_eff


def _checked_is_interval_inputs(value, stderr, n, df):
    """(p̂, se, n, ν) of :func:`is_interval` as float64 arrays of one broadcast shape (ν = inf for ``df`` None);
    ValueError naming the argument that is out of range."""
    p = np.asarray(value, dtype=np.float64)
    if np.any(~np.isfinite(p)) or np.any(p < 0):
        raise ValueError("value must hold finite estimates ≥ 0 (use the normal interval for f that can be negative)")
    se = np.asarray(stderr, dtype=np.float64)
    if np.any(se < 0) or np.any(se == np.inf):
        raise ValueError("stderr must hold standard errors ≥ 0 (NaN: unknown)")
    n_arr = np.asarray(n, dtype=np.float64)
    if np.any(~np.isfinite(n_arr)) or np.any(n_arr < 1):
        raise ValueError("n must be ≥ 1 (the number of samples)")
    nu = np.asarray(np.inf if df is None else df, dtype=np.float64)
    if np.any(np.isnan(nu)) or np.any(nu < 1):
        raise ValueError("df must be ≥ 1 (degrees of freedom of the variance) or None")
    return np.broadcast_arrays(p, se, n_arr, nu)
