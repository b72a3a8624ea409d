r"""Importance sampling [REA §3.3]: samples x_n ~ p*, weights w_n = p_M(x_n)/p*(x_n),

.. math:: \hat f = \frac{1}{N} \sum_n w_n f(x_n), \qquad N_\mathrm{eff} = \frac{(\sum_n w_n)^2}{\sum_n w_n^2}.

For a mixture proposal p*_Mix = Σ_k α_k p*_k the balance-heuristic weight is w_Mix = p_M / Σ_k α_k p*_k
(:func:`mixture_log_weights`). Intervals for f ≥ 0 are effective-count (Korn–Graubard) Wilson intervals
(:func:`rea.stats.intervals.is_interval`), which cover in rare tails where f̂ ± z·se does not and stay finite without
a hit.

* :class:`Estimate` -- the result (value, log value, standard error, interval, ESS, N).
* :func:`importance_estimate` -- the unbiased estimate; :func:`self_normalized_estimate` -- the self-normalised one.
* :func:`effective_sample_size` -- Kish's N_eff of the weights; :func:`mixture_log_weights` -- balance heuristic.
* :class:`ISIntervalWarning`, :data:`IS_FEW_HITS` -- the warnings when the interval rests on no or few hits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from rea.arguments import as_1d_finite
from rea.stats.intervals import is_interval, variance_df, z_value

__all__ = [
    "Estimate",
    "ISIntervalWarning",
    "IS_FEW_HITS",
    "importance_estimate",
    "self_normalized_estimate",
    "effective_sample_size",
    "mixture_log_weights",
]


@dataclass
class Estimate:
    """A Monte-Carlo estimate. Fields are floats for one observable, arrays ``[M]`` for ``f_values[N, M]``.

    value : the estimate; log_value : its natural log (−inf when 0; NaN when negative)
    stderr : standard error; ci_low, ci_high : the interval (by default the effective-count interval of
    :func:`is_interval` for f ≥ 0, the normal interval value ± z·stderr for f that can be negative)
    ess : effective sample size (Σw)²/Σw² of the weights (same for every column); n : number of samples
    """

    value: float | np.ndarray
    log_value: float | np.ndarray
    stderr: float | np.ndarray
    ci_low: float | np.ndarray
    ci_high: float | np.ndarray
    ess: float
    n: int

    def as_frame(self) -> pd.DataFrame:
        """The estimate as a one-row (or M-row) DataFrame."""
        return pd.DataFrame({k: np.atleast_1d(v) for k, v in self.__dict__.items()})


class ISIntervalWarning(UserWarning):
    """An importance-sampling interval rests on an assumption its samples cannot check.

    Issued when no sample hit the event (the zero-hit upper bound holds only if the proposal does not make the event
    rarer than p_M does) or when fewer than :data:`IS_FEW_HITS` effective samples carry the estimate (their weights
    may not represent the event). The message names the cause.
    """


IS_FEW_HITS = 5.0
"""Kish count of the hits, (Σ_n w_n f_n)²/Σ_n (w_n f_n)², below which :func:`importance_estimate` warns."""

IS_INTERVALS = ("effective", "normal")


def _check_is_inputs(f_values, log_w):
    """Checked (f ``[N]`` or ``[N, M]``, log_w ``[N]``) as float64; ValueError naming the argument otherwise."""
    log_w = np.asarray(log_w, dtype=np.float64)
    if log_w.ndim != 1 or log_w.size == 0:
        raise ValueError(f"log_w must be a non-empty 1-D array of log-weights, got shape {log_w.shape}")
    if np.any(np.isnan(log_w)) or np.any(log_w == np.inf):
        raise ValueError("log_w contains NaN or +inf; check the log-probabilities of the model and the proposal")
    f = np.asarray(f_values, dtype=np.float64)
    if f.ndim not in (1, 2) or f.shape[0] != log_w.size:
        raise ValueError(
            f"f_values must have shape [N] or [N, M] with N = len(log_w) = {log_w.size}, got {f.shape}"
        )
    if not np.all(np.isfinite(f)):
        raise ValueError("f_values contains non-finite values")
    if np.all(log_w == -np.inf):
        raise ValueError("log_w: every weight is zero; the proposal never produced a sample p_M can generate")
    return f, log_w


def effective_sample_size(log_w) -> float:
    r"""Kish effective sample size from log-weights ``[N]``: N_eff = (Σw)²/Σw² = exp(2 LSE(log w) − LSE(2 log w))."""
    log_w = np.asarray(log_w, dtype=np.float64)
    return float(np.exp(2 * logsumexp(log_w) - logsumexp(2 * log_w)))


def _check_interval(interval: str) -> str:
    """``interval`` if it is one of :data:`IS_INTERVALS`, else ValueError."""
    if interval not in IS_INTERVALS:
        raise ValueError(f"interval must be one of {IS_INTERVALS}, got {interval!r}")
    return interval


def _columns(mask: np.ndarray) -> str:
    """Where a warning applies: '' for one column, else ' in k of M columns (first: column j)'."""
    idx = np.flatnonzero(mask)
    return "" if mask.size == 1 else f" in {idx.size} of {mask.size} columns (first: column {idx[0]})"


def _kish_hits(y: np.ndarray):
    """Per column of contributions ``y[N, M]`` (w·f): samples with y ≠ 0 and their Kish count (Σy)²/Σy² -> ``[M]``
    (:func:`variance_df` of |y|; 0 where no sample contributes)."""
    a = np.abs(y.reshape(y.shape[0], -1))
    hits = (a > 0).sum(axis=0)
    return hits, np.where(hits > 0, np.atleast_1d(variance_df(a)), 0.0)


def _finish(value, log_value, stderr, f, ess, n, confidence, interval, df, y):
    """The :class:`Estimate` with its interval.

    ``interval="effective"``: :func:`is_interval` for columns with f ≥ 0 (f/c with c = max(1, max_n f_n) so that it
    lies in [0, 1]), normal elsewhere; warns (:class:`ISIntervalWarning`) for columns without a hit or with fewer
    than :data:`IS_FEW_HITS` effective hits (Kish count of the contributions ``y`` ``[N, M]``, w·f up to a constant).
    ``"normal"``: value ± z·stderr, clipped at 0 where f ≥ 0. ``df`` ``[M]``: :func:`variance_df` of each column.
    """
    z = z_value(confidence)
    f2 = f.reshape(f.shape[0], -1)
    nonneg = np.all(f2 >= 0, axis=0)
    v, s = np.atleast_1d(value), np.atleast_1d(stderr)
    low = np.where(nonneg, np.maximum(v - z * s, 0.0), v - z * s)
    high = v + z * s
    if interval == "effective" and nonneg.any():
        c = np.maximum(1.0, f2.max(axis=0))
        lo_e, hi_e, _, _ = is_interval(np.maximum(v, 0.0) / c, s / c, n, np.atleast_1d(df), confidence)
        low = np.where(nonneg, lo_e * c, low)
        high = np.where(nonneg, hi_e * c, high)
        hits, k_eff = _kish_hits(y)
        none = nonneg & (hits == 0)
        if none.any():
            warnings.warn(
                f"no sample hit the event (f·w = 0 in all {n} samples{_columns(none)}): the upper bound "
                f"{float(high[none][0]):.3g} is the Wilson bound for 0 hits in {n} draws of the proposal q; it bounds "
                f"p_M(A) only if the proposal does not make the event rarer than the model does (q(A) ≥ p_M(A), "
                f"since p_M(A) = q(A)·E_q[w | A]); draw more samples or bias the proposal further toward the event",
                ISIntervalWarning,
                stacklevel=3,
            )
        few = nonneg & (hits > 0) & (k_eff < IS_FEW_HITS)
        if few.any():
            j = int(np.flatnonzero(few)[0])
            warnings.warn(
                f"only {int(hits[j])} sample(s) hit the event (effective hits (Σwf)²/Σ(wf)² = {float(k_eff[j]):.2g} < "
                f"{IS_FEW_HITS:g}{_columns(few)}): the interval assumes the hits' weights represent the event under "
                f"p_M; a part of it that the proposal rarely visits but p_M favours (large weights) would be missed. "
                f"Draw more samples or use a proposal closer to p_M(· | A)",
                ISIntervalWarning,
                stacklevel=3,
            )
    if np.ndim(value) == 0:
        low, high = low[0], high[0]
    scal = lambda a: float(a) if np.ndim(a) == 0 else a  # noqa: E731
    return Estimate(scal(value), scal(log_value), scal(stderr), scal(low), scal(high), float(ess), int(n))


def importance_estimate(f_values, log_w, confidence: float = 0.96, interval: str = "effective") -> Estimate:
    r"""Unbiased importance-sampling estimate of E_{p_M}[f] from samples of a proposal p*.

    .. math:: \hat f = \frac1N \sum_n w_n f_n, \qquad
       \widehat{\mathrm{se}} = \frac{\mathrm{sd}_n(w_n f_n)}{\sqrt N}, \qquad w_n = e^{\log w_n}.

    Computed as e^{m} · mean(e^{log w − m} f) with m = max log w, so weights of any magnitude are fine, and
    ``log_value`` = m + log mean(e^{log w − m} f) is exact when f̂ underflows.

    Interval (``interval="effective"``, the default, for f ≥ 0): the effective-count interval of :func:`is_interval`
    of (f̂, se) with ν = :func:`variance_df` of d_n = (w_n f_n − f̂)², applied to f/c with c = max(1, max_n f_n) (an
    indicator as it is). In rare tails with heavy-tailed weights the sampled hits understate both f̂ and se, and the
    normal interval f̂ ± z·se covers far below its level; on the toy LM at P = 2.7e-5 and 2.0e-7 with LogitBias
    proposals (:func:`rea.validate.check_is_coverage`, 96 %) it covered 0.22–0.81, this interval 0.94–0.99.
    Without any hit it returns [0, z²/(N + z²)], valid only if the proposal does not make the event rarer than p_M
    does (q(A) ≥ p_M(A)), and issues an :class:`ISIntervalWarning`, as it does when the Kish count of the hits
    (Σ_n w_n f_n)²/Σ_n (w_n f_n)² is below :data:`IS_FEW_HITS`. Known gap: a proposal shifted far past the event
    (q(A) ≈ 1, log-weights spread ≫ 1 on A) can miss the part of A it rarely reaches without any sign in the
    samples (P(x > 4) of N(0, 1) from N(7, 1), N = 200: coverage 0.84, some misses unwarned). Columns with negative
    f, and ``interval="normal"``, get the normal interval f̂ ± z·se (clipped at 0 when f ≥ 0).

    Parameters
    ----------
    f_values : float ``[N]`` or ``[N, M]`` (e.g. indicators 1[φ ≥ a] for M thresholds)
    log_w : float ``[N]`` log p_M(x_n) − log p*(x_n) (e.g. ``Samples.log_weights``; −inf allowed for w = 0)
    confidence : interval level (0.96)
    interval : ``"effective"`` (default) or ``"normal"``

    Returns
    -------
    :class:`Estimate` (floats for 1-D ``f_values``, arrays ``[M]`` otherwise).
    """
    f, log_w = _check_is_inputs(f_values, log_w)
    interval = _check_interval(interval)
    n = log_w.size
    m = np.max(log_w)
    wt = np.exp(log_w - m)
    wf = (wt[:, None] * f.reshape(n, -1)) if f.ndim == 2 else wt * f
    mean_t = wf.mean(axis=0)
    sd_t = wf.std(axis=0, ddof=1) if n > 1 else np.full_like(mean_t, np.nan)
    scale = np.exp(m)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_value = m + np.log(mean_t)
    value = scale * mean_t
    stderr = scale * sd_t / np.sqrt(n)
    df = variance_df((wf - mean_t) ** 2)
    return _finish(value, log_value, stderr, f, effective_sample_size(log_w), n, confidence, interval, df, wf)


def self_normalized_estimate(f_values, log_w, confidence: float = 0.96, interval: str = "effective") -> Estimate:
    r"""Self-normalised importance sampling: needs w only up to a constant (consistent, not unbiased).

    .. math:: \hat f = \frac{\sum_n w_n f_n}{\sum_n w_n}, \qquad
       \widehat{\mathrm{se}}^2 = \frac{\sum_n w_n^2 (f_n - \hat f)^2}{(\sum_n w_n)^2} \quad\text{(delta method)}.

    Shapes, ``confidence`` and ``interval`` as in :func:`importance_estimate`; the effective-count interval uses
    ν = :func:`variance_df` of the terms w̄_n²(f_n − f̂)² of se² (w̄ = w/Σw).
    """
    f, log_w = _check_is_inputs(f_values, log_w)
    interval = _check_interval(interval)
    n = log_w.size
    wn = np.exp(log_w - logsumexp(log_w))  # normalised weights, Σ = 1
    f2 = f.reshape(n, -1)
    value = wn @ f2
    terms = (wn**2)[:, None] * (f2 - value) ** 2
    stderr = np.sqrt(terms.sum(axis=0))
    df = variance_df(terms)
    if f.ndim == 1:
        value, stderr = value[0], stderr[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_value = np.log(value)
    return _finish(value, log_value, stderr, f, effective_sample_size(log_w), n, confidence, interval, df,
                   wn[:, None] * f2)


def mixture_log_weights(log_p, log_q_components, alpha=None) -> np.ndarray:
    r"""Balance-heuristic log-weights for samples pooled from a mixture of proposals.

    .. math:: \log w_\mathrm{Mix}(x_n) = \log p_M(x_n) - \log \sum_k \alpha_k\, q_k(x_n).

    Every sample must be scored under every component q_k (not only the one that drew it).

    Parameters
    ----------
    log_p : float ``[N]`` log p_M(x_n)
    log_q_components : float ``[K, N]`` log q_k(x_n)
    alpha : float ``[K]`` mixture fractions, α_k ≥ 0, Σα = 1 (use N_k/N for pooled samples); default uniform.

    Returns
    -------
    float ``[N]`` log w_Mix.
    """
    log_p = as_1d_finite("log_p", log_p)
    lq = np.asarray(log_q_components, dtype=np.float64)
    if lq.ndim == 1:
        lq = lq[None, :]
    if lq.ndim != 2 or lq.shape[1] != log_p.size:
        raise ValueError(
            f"log_q_components must have shape [K, N] with N = len(log_p) = {log_p.size}, got {lq.shape}"
        )
    if np.any(np.isnan(lq)) or np.any(lq == np.inf):
        raise ValueError("log_q_components contains NaN or +inf")
    k = lq.shape[0]
    a = np.full(k, 1.0 / k) if alpha is None else np.asarray(alpha, dtype=np.float64)
    if a.shape != (k,) or np.any(~np.isfinite(a)) or np.any(a < 0) or abs(a.sum() - 1) > 1e-8:
        raise ValueError(f"alpha must be {k} non-negative fractions summing to 1, got {alpha!r}")
    with np.errstate(divide="ignore"):
        log_mix = logsumexp(lq + np.log(a)[:, None], axis=0)
    if np.any(log_mix == -np.inf):
        raise ValueError("log_q_components: some sample has probability 0 under every weighted component")
    return log_p - log_mix
