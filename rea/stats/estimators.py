r"""Estimators of rare-event probabilities: direct, importance sampling and MBAR over tilted ensembles.

All functions here take arrays (observable values φ, bias labels λ, log-weights), never models, so that they can be
checked against exact answers (Gaussian or binomial φ, the toy LM) and reused by every chapter.

Direct sampling [REA §3.2]
    N i.i.d. samples φ_n ~ p_M. For an event s (a tail φ ≥ a or a bin), k = Σ_n 1[φ_n ∈ s] and P̂(s) = k/N with a
    Wilson score interval (:func:`wilson_interval`). An event never seen has P̂ = 0 and a finite Wilson upper bound.

Importance sampling [REA §3.3]
    Samples x_n ~ p*, weights w_n = p_M(x_n)/p*(x_n):

    .. math:: \hat f = \frac{1}{N} \sum_n w_n f(x_n), \qquad N_\mathrm{eff} = \frac{(\sum_n w_n)^2}{\sum_n w_n^2}.

    For a mixture proposal p*_Mix = Σ_k α_k p*_k the balance-heuristic weight is w_Mix = p_M / Σ_k α_k p*_k
    (:func:`mixture_log_weights`). Intervals for f ≥ 0 are effective-count (Korn–Graubard) Wilson intervals
    (:func:`is_interval`), which cover in rare tails where f̂ ± z·se does not and stay finite without a hit.

MBAR over tilted ensembles [REA §3.3, §4; Shirts & Chodera 2008]
    States k = 1..K are the tilted distributions p_{λ_k}(x) = Z(λ_k)^{-1} e^{-λ_k φ(x)} p_M(x); λ = 0 is p_M itself
    (direct samples). With reduced potentials u_k(x) = λ_k φ(x) and N_k samples from state k, the free energies
    f_k = −ln Z(λ_k) (relative to f at λ = 0, which is 0) solve

    .. math:: f_i = -\ln \sum_{n=1}^{N} \frac{e^{-\lambda_i \phi_n}}{\sum_j N_j e^{f_j - \lambda_j \phi_n}},

    and any expectation under p_M follows from the pooled samples, e.g. the tail probability

    .. math:: \hat P_0(\phi \ge a) = \sum_n \frac{1[\phi_n \ge a]}{\sum_j N_j e^{f_j - \lambda_j \phi_n}}.

    :class:`TiltedMBAR` solves the equations with its own damped Newton solver (identical φ merged, since
    u_kn = λ_k φ_n depends on a sample only through φ_n; converged to max_k |Σ_n W_nk − 1| < 1e-10; about 10× faster
    than ``pymbar.MBAR(..., solver_protocol="robust")``, which remains available), checks that they converged, checks the overlap of neighbouring biases, and computes everything else in log space, so that
    probabilities far below 1e-30 stay representable (the ``log_p`` columns are exact down to 1e-300 and beyond).

Sign convention: λ > 0 favours low φ, λ < 0 favours high φ.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import linalg, stats
from scipy.special import logsumexp

from rea.arguments import as_1d_finite, check_confidence, check_edges, check_side

__all__ = [
    "OverlapWarning",
    "MBARConvergenceError",
    "z_value",
    "wilson_interval",
    "direct_tail",
    "direct_density",
    "Estimate",
    "ISIntervalWarning",
    "IS_FEW_HITS",
    "is_interval",
    "variance_df",
    "importance_estimate",
    "self_normalized_estimate",
    "mixture_log_weights",
    "effective_sample_size",
    "TiltedMBAR",
]


class OverlapWarning(UserWarning):
    """Neighbouring biases overlap less than the threshold (0.03 in [REA]); the reconstruction may be unreliable."""


class MBARConvergenceError(RuntimeError):
    """The MBAR self-consistent equations did not converge (non-finite f_k or Σ_n W_nk ≠ 1)."""


# --------------------------------------------------------------------------------------------- helpers


def z_value(confidence: float) -> float:
    """Two-sided normal quantile z with P(|Z| ≤ z) = ``confidence`` (2.054 for 0.96)."""
    confidence = check_confidence(confidence)
    return float(stats.norm.ppf(0.5 + confidence / 2))








def _bin_index(phi: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each φ with the ``numpy.histogram`` convention ([e_i, e_{i+1}), last bin closed); −1 outside."""
    idx = np.searchsorted(edges, phi, side="right") - 1
    nbins = edges.size - 1
    idx[phi == edges[-1]] = nbins - 1
    idx[(idx < 0) | (idx >= nbins)] = -1
    return idx


@contextlib.contextmanager
def _captured_pymbar_output():
    """Silence pymbar's logging and Python warnings; yield a list that collects their messages."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage().strip())

    logger = logging.getLogger("pymbar")
    handler = _Collect(level=logging.WARNING)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(w.message).strip() for w in caught)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _fast_logsumexp(a, axis=None, b=None):
    """``scipy.special.logsumexp(a, axis, b)`` for real a and b ≥ 0, without scipy's per-call overhead (~4× faster)."""
    a = np.asarray(a)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(a - m)
    if b is not None:
        e *= b
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(e, axis=axis))
    return out + (np.squeeze(m, axis=axis) if axis is not None else m.reshape(()))


@contextlib.contextmanager
def _fast_pymbar_solver(pymbar):
    """Temporarily give pymbar's numpy solver path a faster logsumexp (restored on exit; JAX path untouched)."""
    solvers = pymbar.mbar_solvers
    original = getattr(solvers, "logsumexp", None)
    patch = original is logsumexp and not getattr(solvers, "use_jit", False)
    if patch:
        solvers.logsumexp = _fast_logsumexp
    try:
        yield
    finally:
        if patch:
            solvers.logsumexp = original


def import_pymbar():
    """Import pymbar without its import-time banners (JAX not found, timeseries caveat) on stderr."""
    with _captured_pymbar_output():
        import pymbar
        import pymbar.timeseries  # noqa: F401
    return pymbar


# --------------------------------------------------------------------------------------------- direct sampling


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


def direct_tail(phi, thresholds, confidence: float = 0.96, side: str = "upper") -> pd.DataFrame:
    r"""Tail probabilities from i.i.d. samples of p_M with Wilson intervals.

    .. math:: \hat P(\phi \ge a) = \frac{1}{N}\sum_n 1[\phi_n \ge a] \quad(\text{``side="lower"``}: \phi \le a).

    Parameters
    ----------
    phi : float ``[N]`` observable values of direct samples
    thresholds : float ``[S]``
    confidence : Wilson level (0.96)
    side : ``"upper"`` (P(φ ≥ a)) or ``"lower"`` (P(φ ≤ a))

    Returns
    -------
    DataFrame with S rows: ``threshold, k, n, p, ci_low, ci_high`` (input order of thresholds).
    """
    phi = as_1d_finite("phi", phi)
    thr = as_1d_finite("thresholds", thresholds)
    side = check_side(side)
    srt = np.sort(phi)
    if side == "upper":
        k = phi.size - np.searchsorted(srt, thr, side="left")
    else:
        k = np.searchsorted(srt, thr, side="right")
    low, high = wilson_interval(k, phi.size, confidence)
    return pd.DataFrame(
        {"threshold": thr, "k": k, "n": phi.size, "p": k / phi.size, "ci_low": low, "ci_high": high}
    )


def direct_density(phi, bin_edges, confidence: float = 0.96) -> pd.DataFrame:
    r"""Histogram of direct samples: bin probabilities and densities with Wilson intervals.

    Bins follow ``numpy.histogram`` ([e_i, e_{i+1}), the last one closed). The denominator is all N samples
    (samples outside the edges count as misses), so P̂_i = k_i/N estimates P(φ ∈ bin i) and the density is
    P̂_i / (e_{i+1} − e_i). An empty bin has p = 0 and a finite upper bound z²/(N + z²) per width.

    Parameters
    ----------
    phi : float ``[N]``; bin_edges : float ``[B+1]`` strictly increasing; confidence : Wilson level.

    Returns
    -------
    DataFrame with B rows: ``left, right, center, width, k, n, p, p_low, p_high, density, density_low,
    density_high``.
    """
    phi = as_1d_finite("phi", phi)
    edges = check_edges(bin_edges)
    idx = _bin_index(phi, edges)
    nbins = edges.size - 1
    k = np.bincount(idx[idx >= 0], minlength=nbins)
    low, high = wilson_interval(k, phi.size, confidence)
    width = np.diff(edges)
    p = k / phi.size
    return pd.DataFrame(
        {
            "left": edges[:-1], "right": edges[1:], "center": (edges[:-1] + edges[1:]) / 2, "width": width,
            "k": k, "n": phi.size, "p": p, "p_low": low, "p_high": high,
            "density": p / width, "density_low": low / width, "density_high": high / width,
        }
    )




# --------------------------------------------------------------------------------------------- importance sampling


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
    p, se, n_arr, nu = np.broadcast_arrays(p, se, n_arr, nu)
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


def _check_interval(interval: str) -> str:
    if interval not in IS_INTERVALS:
        raise ValueError(f"interval must be one of {IS_INTERVALS}, got {interval!r}")
    return interval


def _columns(mask: np.ndarray) -> str:
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


# --------------------------------------------------------------------------------------------- MBAR


def _asymptotic_covariance(wtw: np.ndarray, n_aug: np.ndarray) -> np.ndarray:
    r"""MBAR asymptotic covariance Θ of ln c_i from the Gram matrix W^T W ``[M, M]`` ("svd-ew", [MBAR] App. D).

    With W^T W = V S² V^T:  Θ = V S (I − S V^T diag(N) V S)^+ S V^T. Same formula as pymbar's default.
    """
    s2, v = linalg.eigh(wtw)
    s2[s2 < 0] = 0.0
    sig = np.sqrt(s2)
    vs = v * sig  # V S
    inner = np.eye(len(s2)) - vs.T @ (n_aug[:, None] * vs)
    return vs @ np.linalg.pinv(inner, rcond=1e-10) @ vs.T


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _newton_tilted_mbar(phi, count, lambdas, n_k, ref, f0, tol=1e-10, max_iter=200, rebuild_at=30.0):
    r"""Solve the MBAR equations of tilted states by damped Newton–Raphson on the convex objective.

    F(f) = Σ_u c_u ln Σ_k N_k e^{f_k − λ_k φ_u} − Σ_k N_k f_k  (f_ref = 0) over distinct values φ_u with
    multiplicities c_u -- exact, because u_kn = λ_k φ_n depends on the sample only through φ_n. With
    responsibilities P_ku = N_k W_uk (Σ_k P_ku = 1): gradient g_k = N_k(Σ_u c_u W_uk − 1), Hessian
    H = diag(P c) − (P ∘ c) Pᵀ. The matrix E_ku = N_k e^{f̄_k − λ_k φ_u − m_u} (m_u: column max) is built once
    around a base f̄ and reused while |f − f̄| ≤ ``rebuild_at``, so an iteration is two K×U mat-vecs and one
    K×K×U product. Backtracking (Armijo) line search makes it globally convergent.

    Returns f ``[K]`` and a dict (iterations, error = max_k |Σ_u c_u W_uk − 1|, converged).
    """
    K = lambdas.size
    free = np.arange(K) != ref
    log_n = np.log(n_k)
    f = np.asarray(f0, dtype=np.float64) - f0[ref]
    it = 0
    err = np.inf
    chunk = max(1, (1 << 24) // K)  # ≈ 128 MB of float64 per block when building E
    while True:
        base = f.copy()
        E = np.empty((K, phi.size))
        for sl in _chunks(phi.size, chunk):
            a = (log_n + base)[:, None] - lambdas[:, None] * phi[None, sl]
            a -= a.max(axis=0, keepdims=True)
            np.exp(a, out=E[:, sl])
        d = np.zeros(K)
        Q = np.empty_like(E)

        def evaluate(d):
            s = np.exp(d)
            den = s @ E
            return s, den, float(count @ np.log(den) - n_k @ d)

        s, den, obj = evaluate(d)
        while True:
            r = count / den
            col = s * (E @ r) / n_k  # Σ_u c_u W_uk
            err = float(np.max(np.abs(col - 1.0)))
            if err < tol or it >= max_iter:
                return base + d - (base + d)[ref], {"iterations": it, "error": err, "converged": err < tol}
            it += 1
            g = n_k * (col - 1.0)
            # H_kl = δ_kl N_k col_k − s_k s_l Σ_u c_u E_ku E_lu / den_u²
            np.multiply(E, (np.sqrt(count) / den)[None, :], out=Q)
            H = np.diag(n_k * col) - np.outer(s, s) * (Q @ Q.T)
            Hf, gf = H[np.ix_(free, free)], g[free]
            try:
                step_f = np.linalg.solve(Hf, -gf)
            except np.linalg.LinAlgError:
                step_f = np.linalg.lstsq(Hf, -gf, rcond=None)[0]
            if not np.all(np.isfinite(step_f)) or step_f @ gf >= 0:
                step_f = -gf / np.maximum(np.diag(Hf), 1e-300)  # fall back to a scaled gradient step
            step = np.zeros(K)
            step[free] = step_f
            t = 1.0
            slope = float(g @ step)
            while True:
                s_new, den_new, obj_new = evaluate(d + t * step)
                if (np.isfinite(obj_new) and obj_new <= obj + 1e-4 * t * slope + 1e-13 * abs(obj)) or t < 1e-10:
                    break
                t *= 0.5
            if not np.isfinite(obj_new):
                return base + d - (base + d)[ref], {"iterations": it, "error": np.inf, "converged": False}
            d = d + t * step
            s, den, obj = s_new, den_new, obj_new
            if np.max(np.abs(d)) > rebuild_at:
                f = base + d - (base + d)[ref]
                break


class TiltedMBAR:
    r"""MBAR reconstruction of p_M from samples of exponentially tilted ensembles [REA §4–6].

    State k is p_{λ_k}(x) ∝ e^{−λ_k φ(x)} p_M(x) with reduced potential u_k(x) = λ_k φ(x) and N_k samples; the
    state λ = 0 (direct samples of p_M) must be among them and is the reference, f(λ=0) = 0. The free energies
    f_k = −ln Z(λ_k)/Z(0) solve the MBAR equations (module docstring), by default with :func:`_newton_tilted_mbar`
    (Newton–Raphson on the convex MBAR objective over the distinct φ values, to max_k |Σ_n W_nk − 1| <
    ``newton_tolerance``), or with ``pymbar.MBAR(u_kn, N_k, solver_protocol=...)`` when ``solver_protocol`` is given
    (e.g. ``"robust"``); the solution is then checked:

    * convergence: every f_k finite and |Σ_n W_nk − 1| ≤ ``tolerance`` for every state, else
      :class:`MBARConvergenceError`;
    * overlap: the overlap matrix O_ij = N_j Σ_n W_ni W_nj [Klimovich 2015] between neighbouring biases (sorted
      by λ) must be ≥ ``min_overlap`` (0.03 in [REA]) both ways, else an :class:`OverlapWarning` naming the pair.

    The weight of sample n in a target λ_t (sampled or not) is

    .. math:: W_{nt} = \frac{e^{-\lambda_t \phi_n}}{Z_t \sum_j N_j e^{f_j - \lambda_j \phi_n}},\qquad
              Z_t = \sum_n \frac{e^{-\lambda_t \phi_n}}{\sum_j N_j e^{f_j - \lambda_j \phi_n}},

    and P̂_t(s) = Σ_n 1[φ_n ∈ s] W_nt. Uncertainties are MBAR's asymptotic ones: Θ = Cov(ln c) from the augmented
    Gram matrix W^T W of states, targets and normalised event columns W_ns = 1[φ_n ∈ s] W_nt / P̂_t(s), then
    Var(ln P̂_t(s)) = Θ_ss + Θ_tt − 2Θ_st (the formula of ``pymbar.MBAR.compute_expectations``, computed for all
    events at once and in log space). Intervals for probabilities are log-normal, P̂·e^{±zσ_ln}; for ln Z normal.

    The analytic errors assume independent samples: subsample correlated MCMC output first
    (:func:`rea.stats.diagnostics.subsample`) or use :func:`rea.stats.diagnostics.bootstrap_over_chains`.

    Parameters
    ----------
    phi : float ``[N]`` observable values of all pooled samples
    lam : float ``[N]`` the bias λ each sample was drawn at (0 for direct samples)
    lambdas : optional float ``[K]`` the intended grid; every value must have samples and every ``lam`` be in it
    confidence : interval level (0.96)
    min_overlap : neighbour overlap below which an :class:`OverlapWarning` is issued (0.03)
    tolerance : allowed |Σ_n W_nk − 1| in the final check (1e-4, pymbar's own check)
    solver_protocol : None (our Newton solver) or a pymbar protocol (``"robust"``, a tuple of dicts) to solve with
        ``pymbar.MBAR`` instead
    maximum_iterations : iteration cap of either solver (10000)
    newton_tolerance : convergence target of the Newton solver, max_k |Σ_n W_nk − 1| (1e-10)
    chunk_size : samples per block in the O(N K) passes (memory ≈ 8·K·chunk_size bytes)
    counts : optional int ``[N]`` multiplicity of each (φ, λ) row -- identical to repeating the row that many times
        (zeros are dropped); lets callers aggregate tied samples or bootstrap by multinomial counts. Not available
        with the pymbar solver, :meth:`expectation` or :attr:`mbar`. Fractional counts are allowed (effective counts
        of correlated samples, e.g. 1/g per sample with g the statistical inefficiency): the MBAR equations and the
        asymptotic covariance then use N_k = Σ_{n∈k} c_n, as for c_n-fold independent samples.

    Attributes
    ----------
    lambdas : float ``[K]`` sorted grid; n_k : int ``[K]``; f_k : float ``[K]`` (−ln Z, f = 0 at λ = 0)
    ref : index of λ = 0 in ``lambdas``; overlap_matrix : ``[K, K]``; neighbour_overlap : ``[K−1]``
    (min of O[k, k+1] and O[k+1, k]); mbar : a ``pymbar.MBAR`` object (samples sorted by state; with the Newton
    solver built lazily on first access, started from our f_k); solver : ``"newton"`` or ``"pymbar"``;
    solver_messages : what the solver reported.
    """

    def __init__(
        self,
        phi,
        lam,
        lambdas=None,
        *,
        confidence: float = 0.96,
        min_overlap: float = 0.03,
        tolerance: float = 1e-4,
        solver_protocol=None,
        maximum_iterations: int = 10000,
        newton_tolerance: float = 1e-10,
        chunk_size: int = 1 << 16,
        counts=None,
    ):
        phi = as_1d_finite("phi", phi)
        lam = np.asarray(lam, dtype=np.float64)
        if lam.ndim == 0:
            lam = np.full(phi.size, float(lam))
        if lam.ndim != 1 or lam.size != phi.size:
            raise ValueError(f"lam must give one λ per sample: length {lam.size}, but phi has length {phi.size}")
        lam = as_1d_finite("lam", lam)
        if counts is not None:
            counts = np.asarray(counts)
            numeric = np.issubdtype(counts.dtype, np.integer) or np.issubdtype(counts.dtype, np.floating)
            if counts.shape != phi.shape or not numeric or not np.all(np.isfinite(counts)) or np.any(counts < 0):
                raise ValueError(
                    f"counts must give a non-negative finite multiplicity per sample (length {phi.size}), got "
                    f"dtype {counts.dtype} and shape {counts.shape}"
                )
            keep = counts > 0
            phi, lam, counts = phi[keep], lam[keep], counts[keep].astype(np.float64)
            if phi.size == 0:
                raise ValueError("counts are all zero: no samples left")
        self.confidence = check_confidence(confidence)
        self.z = z_value(confidence)
        if lambdas is None:
            grid = np.unique(lam)
        else:
            grid = np.unique(as_1d_finite("lambdas", lambdas))
            missing = grid[~np.isin(grid, lam)]
            if missing.size:
                raise ValueError(
                    f"lambdas: state(s) λ = {missing.tolist()} have no samples; drop them from the grid or sample them"
                )
            extra = np.setdiff1d(np.unique(lam), grid)
            if extra.size:
                raise ValueError(f"lam: values {extra.tolist()} are not in lambdas; add them to the grid")
        if not np.any(grid == 0.0):
            raise ValueError(
                f"lambdas {grid.tolist()} do not include 0: add direct samples of p_M (λ = 0), the reference "
                f"state that fixes the normalisation"
            )
        self.lambdas = grid
        self.K = grid.size
        self.ref = int(np.flatnonzero(grid == 0.0)[0])
        state = np.searchsorted(grid, lam)
        self._order = np.argsort(state, kind="stable")  # sorted position -> original index
        self.phi = phi[self._order]
        self.state = state[self._order]
        self.weighted = counts is not None
        self.counts = counts[self._order] if self.weighted else np.ones(phi.size)
        n_k = np.bincount(self.state, weights=self.counts, minlength=self.K)
        # integer counts give integer N_k; fractional (effective) counts keep fractional N_k
        self.n_k = np.rint(n_k).astype(np.int64) if np.all(self.counts == np.rint(self.counts)) else n_k
        self.N = phi.size
        self.chunk_size = int(chunk_size)
        self.min_overlap = float(min_overlap)
        self.tolerance = float(tolerance)
        self.newton_tolerance = float(newton_tolerance)

        self._solve(solver_protocol, int(maximum_iterations))
        self._compute_overlap()

    @classmethod
    def from_states(cls, phis, lambdas, **kwargs) -> "TiltedMBAR":
        """Build from per-state arrays: ``phis[k]`` float ``[N_k]`` drawn at ``lambdas[k]`` (λ = 0 for direct)."""
        lambdas = as_1d_finite("lambdas", lambdas)
        if len(phis) != lambdas.size:
            raise ValueError(f"phis has {len(phis)} arrays but lambdas has {lambdas.size} values")
        if np.unique(lambdas).size != lambdas.size:
            raise ValueError("lambdas contains repeated values; concatenate their samples into one state")
        parts = []
        for k, p in enumerate(phis):
            p = np.asarray(p, dtype=np.float64).ravel()
            if p.size == 0:
                raise ValueError(f"phis[{k}] (state λ = {lambdas[k]:g}) is empty; give every state samples")
            parts.append(p)
        lam = np.concatenate([np.full(p.size, lambdas[k]) for k, p in enumerate(parts)])
        return cls(np.concatenate(parts), lam, **kwargs)

    # ------------------------------------------------------------------ solving

    def _solve(self, solver_protocol, maximum_iterations):
        if solver_protocol is None:
            self.solver = "newton"
            f, self.solver_messages = self._solve_newton(maximum_iterations)
            self._mbar = None
        else:
            self.solver = "pymbar"
            f, self.solver_messages = self._solve_pymbar(solver_protocol, maximum_iterations)
        if not np.all(np.isfinite(f)):
            raise MBARConvergenceError(
                f"MBAR gave non-finite free energies at λ = {self.lambdas[~np.isfinite(f)].tolist()}; add "
                f"intermediate λ between the biases or more samples per bias"
            )
        self._finish_solve(f, self.solver_messages)

    def _solve_newton(self, maximum_iterations):
        """Our solver: identical φ merged (weights = multiplicities), warm start by thermodynamic integration,
        damped Newton on the convex MBAR objective to max_k |Σ_n W_nk − 1| < ``newton_tolerance``."""
        if self.weighted:
            phi_u, inv = np.unique(self.phi, return_inverse=True)
            count_u = np.bincount(inv.ravel(), weights=self.counts, minlength=phi_u.size)
        else:
            phi_u, count_u = np.unique(self.phi, return_counts=True)
        # warm start: d f/dλ = E_λ[φ]  ->  f_k ≈ ∫_0^{λ_k} mean φ dλ (trapezoid over the sorted grid)
        sums = np.bincount(self.state, weights=self.phi * self.counts, minlength=self.K)
        mean = sums / self.n_k
        f0 = np.concatenate([[0.0], np.cumsum(np.diff(self.lambdas) * (mean[1:] + mean[:-1]) / 2)])
        f, info = _newton_tilted_mbar(
            phi_u, count_u.astype(np.float64), self.lambdas, self.n_k.astype(np.float64), self.ref, f0,
            tol=self.newton_tolerance, max_iter=maximum_iterations,
        )
        self.solver_info = info
        msgs = [f"newton: {info['iterations']} iterations on {phi_u.size} distinct φ, "
                f"max |Σ W - 1| = {info['error']:.2g}"]
        if not info["converged"]:
            msgs.append(f"newton stopped after {info['iterations']} iterations without converging")
        return f, msgs

    def _solve_pymbar(self, solver_protocol, maximum_iterations):
        self._no_counts("the pymbar solver")
        pymbar = import_pymbar()
        u_kn = self.lambdas[:, None] * self.phi[None, :]
        # pymbar.MBAR reseeds numpy's global RNG (np.random.seed(None)): save and restore it.
        rng_state = np.random.get_state()
        try:
            with _captured_pymbar_output() as messages:
                try:
                    with _fast_pymbar_solver(pymbar):
                        mbar = pymbar.MBAR(
                            u_kn, self.n_k, solver_protocol=solver_protocol, maximum_iterations=maximum_iterations
                        )
                except Exception as err:  # pymbar raises its own errors on hopeless inputs
                    raise MBARConvergenceError(
                        f"pymbar.MBAR failed ({type(err).__name__}: {err}); add intermediate λ between the biases "
                        f"or more samples per bias"
                    ) from err
        finally:
            np.random.set_state(rng_state)
        self._mbar = mbar
        return np.asarray(mbar.f_k, dtype=np.float64), messages

    @property
    def mbar(self):
        """A ``pymbar.MBAR`` object on the state-sorted samples (built on first use, started from our f_k)."""
        if self._mbar is None:
            self._no_counts("a pymbar.MBAR object")
            pymbar = import_pymbar()
            u_kn = self.lambdas[:, None] * self.phi[None, :]
            rng_state = np.random.get_state()
            try:
                with _captured_pymbar_output(), _fast_pymbar_solver(pymbar):
                    self._mbar = pymbar.MBAR(
                        u_kn, self.n_k, initial_f_k=self.f_k.copy(),
                        solver_protocol=(dict(method="adaptive", tol=1e-12, options=dict(min_sc_iter=0)),),
                    )
            finally:
                np.random.set_state(rng_state)
        return self._mbar

    def _no_counts(self, what):
        if self.weighted:
            raise ValueError(f"counts: {what} needs one row per sample; build TiltedMBAR without counts")

    def _finish_solve(self, f, messages):
        self.f_k = f - f[self.ref]
        self._log_nk_f = np.log(self.n_k) + self.f_k
        self.log_den = np.concatenate([
            _fast_logsumexp(self._log_nk_f[:, None] - self.lambdas[:, None] * self.phi[None, sl], axis=0)
            for sl in _chunks(self.N, self.chunk_size)
        ])
        # column sums Σ_n W_nk and the Gram matrix W^T W of the states (for the overlap), in one pass
        col = np.zeros(self.K)
        wtw = np.zeros((self.K, self.K))
        for sl in _chunks(self.N, self.chunk_size):
            w = np.exp(self._log_w_block(self.lambdas, self.f_k, sl))
            if self.weighted:
                wc = w * self.counts[None, sl]
                col += wc.sum(axis=1)
                wtw += wc @ w.T
            else:
                col += w.sum(axis=1)
                wtw += w @ w.T
        self._wtw_states = wtw
        with np.errstate(divide="ignore"):
            log_col = np.log(col)
        err = np.abs(np.expm1(log_col))
        if not np.all(err <= self.tolerance):
            bad = np.flatnonzero(~(err <= self.tolerance))
            detail = "; ".join(messages[-3:])
            raise MBARConvergenceError(
                f"MBAR did not converge: Σ_n W_nk deviates from 1 by up to {np.nanmax(err):.2g} at λ = "
                f"{self.lambdas[bad].tolist()} (tolerance {self.tolerance:g}). Add intermediate λ between "
                f"poorly overlapping biases or more samples per bias." + (f" Solver: {detail}" if detail else "")
            )
        self.convergence_error = float(err.max())

    def _log_w_block(self, lams, f, sl) -> np.ndarray:
        """log W for targets ``lams`` ``[T]`` with free energies ``f`` ``[T]`` on samples ``sl`` -> ``[T, n]``."""
        return f[:, None] - np.outer(lams, self.phi[sl]) - self.log_den[None, sl]

    def _target_f(self, lams: np.ndarray) -> np.ndarray:
        """f_t = −ln Σ_n e^{−λ_t φ_n} / Σ_j N_j e^{f_j − λ_j φ_n} for each target ``[T]``, so that Σ_n W_nt = 1."""
        parts = [_fast_logsumexp(self._log_w_block(lams, np.zeros(lams.size), sl), axis=1,
                                 b=self.counts[None, sl] if self.weighted else None)
                 for sl in _chunks(self.N, self.chunk_size)]
        return -logsumexp(np.stack(parts), axis=0)

    def _gram(self, target_lams: np.ndarray, target_f: np.ndarray):
        """W^T W ``[K+T, K+T]`` of the state and target columns, accumulated in blocks."""
        lams = np.concatenate([self.lambdas, target_lams])
        f = np.concatenate([self.f_k, target_f])
        g = np.zeros((lams.size, lams.size))
        for sl in _chunks(self.N, self.chunk_size):
            w = np.exp(self._log_w_block(lams, f, sl))
            g += ((w * self.counts[None, sl]) if self.weighted else w) @ w.T
        return g

    def _compute_overlap(self):
        wtw = self._wtw_states
        self.overlap_matrix = wtw * self.n_k[None, :]
        k = np.arange(self.K - 1)
        self.neighbour_overlap = np.minimum(self.overlap_matrix[k, k + 1], self.overlap_matrix[k + 1, k])
        for i in np.flatnonzero(self.neighbour_overlap < self.min_overlap):
            warnings.warn(
                f"biases λ = {self.lambdas[i]:g} and λ = {self.lambdas[i + 1]:g} overlap only "
                f"{self.neighbour_overlap[i]:.3g} < {self.min_overlap:g}: add intermediate λ between them or "
                f"sample them longer",
                OverlapWarning,
                stacklevel=3,
            )

    def overlap(self) -> np.ndarray:
        """Overlap matrix O ``[K, K]``: O_ij = N_j Σ_n W_ni W_nj (rows sum to 1), states in ``lambdas`` order."""
        return self.overlap_matrix.copy()

    def neighbours(self) -> pd.DataFrame:
        """Overlap of neighbouring biases: DataFrame ``lam_i, lam_j, overlap, ok`` (ok: ≥ ``min_overlap``)."""
        return pd.DataFrame({
            "lam_i": self.lambdas[:-1], "lam_j": self.lambdas[1:], "overlap": self.neighbour_overlap,
            "ok": self.neighbour_overlap >= self.min_overlap,
        })

    # ------------------------------------------------------------------ free energies

    def log_partition(self) -> pd.DataFrame:
        r"""ln Z(λ_k)/Z(0) = −f_k at the sampled biases with asymptotic errors.

        Var(f_k − f_0) = Θ_kk + Θ_00 − 2Θ_k0 with Θ from the states' W^T W (as
        ``pymbar.MBAR.compute_free_energy_differences``).

        Returns
        -------
        DataFrame with K rows: ``lam, n, log_z, sigma, ci_low, ci_high`` (normal interval ± z·sigma).
        """
        theta = _asymptotic_covariance(self._wtw_states, self.n_k.astype(float))
        r = self.ref
        var = np.diag(theta) + theta[r, r] - 2 * theta[:, r]
        sigma = np.sqrt(np.clip(var, 0, None))
        sigma[r] = 0.0
        log_z = -self.f_k
        return pd.DataFrame({
            "lam": self.lambdas, "n": self.n_k, "log_z": log_z, "sigma": sigma,
            "ci_low": log_z - self.z * sigma, "ci_high": log_z + self.z * sigma,
        })

    def log_partition_at(self, lams) -> pd.DataFrame:
        r"""ln Z(λ)/Z(0) at any λ by reweighting the pooled samples (perturbation):

        .. math:: \ln \hat Z(\lambda) = \ln \sum_n \frac{e^{-\lambda\phi_n}}{\sum_j N_j e^{f_j - \lambda_j\phi_n}}.

        Errors from the augmented Θ (as ``pymbar.MBAR.compute_perturbed_free_energies``). Only trustworthy inside
        (or slightly beyond) the sampled λ range.

        Parameters
        ----------
        lams : float ``[T]``

        Returns
        -------
        DataFrame with T rows: ``lam, log_z, sigma, ci_low, ci_high``.
        """
        lams = as_1d_finite("lams", lams)
        tf = self._target_f(lams)
        wtw = self._gram(lams, tf)
        n_aug = np.concatenate([self.n_k, np.zeros(lams.size)])
        theta = _asymptotic_covariance(wtw, n_aug)
        t = self.K + np.arange(lams.size)
        r = self.ref
        var = theta[t, t] + theta[r, r] - 2 * theta[t, r]
        sigma = np.sqrt(np.clip(var, 0, None))
        log_z = -tf
        return pd.DataFrame({
            "lam": lams, "log_z": log_z, "sigma": sigma,
            "ci_low": log_z - self.z * sigma, "ci_high": log_z + self.z * sigma,
        })

    # ------------------------------------------------------------------ events (tails, bins)

    def _events(self, group: np.ndarray, n_groups: int, membership: np.ndarray, lam_t: float):
        r"""Probabilities of events s = ∪_{g: C[s,g]} groups under target λ_t, with asymptotic log-errors.

        ``group`` int ``[N]`` in [−1, G) (−1: in no group) for the sorted samples; ``membership`` bool ``[S, G]``.
        Per group g, with m_g = max_{n∈g} ln W_nt and e_n = e^{ln W_nt − m_g}:
        p'_g = Σ e_n, B'_g = Σ e_n², A'_{g,j} = Σ e_n W_nj (j over states and the target), so that
        ln P_s = LSE_{g∈s}(m_g + ln p'_g) and the event rows of W^T W are
        (W^TW)_{s,j} = Σ_{g∈s} e^{m_g − ln P_s} A'_{g,j},  (W^TW)_{s,s'} = Σ_{g∈s∩s'} e^{2m_g − ln P_s − ln P_s'} B'_g,
        with (W^TW)_{s,t} from B' too (stable when P_s underflows).
        Returns log_p ``[S]``, sigma_log ``[S]`` (NaN where P = 0), count ``[S]``, n_eff ``[S]``.
        """
        lam_arr = np.array([float(lam_t)])
        tf = self._target_f(lam_arr)
        K1 = self.K + 1
        lams = np.concatenate([self.lambdas, lam_arr])
        f = np.concatenate([self.f_k, tf])
        m = np.full(n_groups, -np.inf)
        for sl in _chunks(self.N, self.chunk_size):
            g = group[sl]
            ok = g >= 0
            lwt = self._log_w_block(lam_arr, tf, sl)[0]
            np.maximum.at(m, g[ok], lwt[ok])
        p1 = np.zeros(n_groups)
        b1 = np.zeros(n_groups)
        a1 = np.zeros((n_groups, K1))
        wtw = np.zeros((K1, K1))
        for sl in _chunks(self.N, self.chunk_size):
            w_log = self._log_w_block(lams, f, sl)
            w = np.exp(w_log)
            wtw += ((w * self.counts[None, sl]) if self.weighted else w) @ w.T
            g = group[sl]
            ok = g >= 0
            gg = g[ok]
            e = np.exp(w_log[-1, ok] - m[gg])
            if self.weighted:
                c = self.counts[sl][ok]
                p1 += np.bincount(gg, weights=e * c, minlength=n_groups)
                ec = e * c
                b1 += np.bincount(gg, weights=ec * e, minlength=n_groups)
                for j in range(K1):
                    a1[:, j] += np.bincount(gg, weights=ec * w[j, ok], minlength=n_groups)
                continue
            p1 += np.bincount(gg, weights=e, minlength=n_groups)
            b1 += np.bincount(gg, weights=e * e, minlength=n_groups)
            for j in range(K1):
                a1[:, j] += np.bincount(gg, weights=e * w[j, ok], minlength=n_groups)
        count_g = np.rint(np.bincount(group[group >= 0], weights=self.counts[group >= 0],
                                      minlength=n_groups)).astype(np.int64)
        C = membership.astype(bool)
        with np.errstate(divide="ignore"):
            lg = m + np.log(p1)  # ln P of each group (−inf when empty)
        log_p = np.array([logsumexp(lg[c]) if np.any(c & np.isfinite(lg)) else -np.inf for c in C])
        count = C.astype(np.int64) @ count_g
        S = C.shape[0]
        sigma = np.full(S, np.nan)
        n_eff = np.zeros(S)
        live = np.isfinite(log_p)
        if np.any(live):
            Cl = C[live]
            lp = log_p[live]
            with np.errstate(invalid="ignore", over="ignore"):
                # r_sg = C_sg e^{m_g − ln P_s},  r2_sg = C_sg e^{2 m_g − ln P_s}
                r = np.where(Cl, np.exp(np.where(Cl, m[None, :] - lp[:, None], -np.inf)), 0.0)  # [S', G]
                r2 = np.where(Cl, np.exp(np.where(Cl, 2 * m[None, :] - lp[:, None], -np.inf)), 0.0)
            ss = (r * b1[None, :]) @ r.T  # (W^TW)_{s,s'} = Σ_g r_sg r_s'g B'_g
            sj = r @ a1  # (W^TW)_{s,j} for states j (and the target, overwritten next)
            st = r2 @ b1  # (W^TW)_{s,t} = Σ_{n∈s} W_nt²/P_s
            sj[:, -1] = st
            M = K1 + Cl.shape[0]
            big = np.zeros((M, M))
            big[:K1, :K1] = wtw
            big[K1:, :K1] = sj
            big[:K1, K1:] = sj.T
            big[K1:, K1:] = ss
            n_aug = np.concatenate([self.n_k, [0.0], np.zeros(Cl.shape[0])])
            theta = _asymptotic_covariance(big, n_aug)
            t = self.K
            s = K1 + np.arange(Cl.shape[0])
            var = theta[s, s] + theta[t, t] - 2 * theta[s, t]
            sigma[live] = np.sqrt(np.clip(var, 0, None))
            n_eff[live] = 1.0 / np.diag(ss)
        return log_p, sigma, count, n_eff

    def _prob_frame(self, log_p, sigma):
        with np.errstate(over="ignore"):
            p = np.exp(log_p)
            return {
                "p": p, "log_p": log_p, "log10_p": log_p / np.log(10), "sigma_log": sigma, "sigma": p * sigma,
                "ci_low": np.exp(log_p - self.z * sigma), "ci_high": np.exp(log_p + self.z * sigma),
            }

    def tail(self, thresholds, lam: float = 0.0, side: str = "upper") -> pd.DataFrame:
        r"""Tail probabilities under p_λ (default λ = 0, i.e. p_M):

        .. math:: \hat P_\lambda(\phi \ge a) = \sum_n 1[\phi_n \ge a]\, W_{n\lambda}
                  \;\overset{\lambda=0}{=}\; \sum_n \frac{1[\phi_n \ge a]}{\sum_j N_j e^{f_j - \lambda_j\phi_n}}.

        Parameters
        ----------
        thresholds : float ``[S]``; each must be reached by some sample (else ValueError: extend the λ grid)
        lam : target bias (0: the model itself)
        side : ``"upper"`` P(φ ≥ a) or ``"lower"`` P(φ ≤ a)

        Returns
        -------
        DataFrame with S rows (input order): ``threshold, p, log_p, log10_p, sigma_log, sigma, ci_low, ci_high,
        n, n_eff`` — sigma_log = sd(ln P̂); sigma = P̂·sigma_log; interval P̂·e^{±z·sigma_log}; n = samples in the
        tail; n_eff = (Σ_{tail} W)²/Σ_{tail} W² (how many samples effectively carry the estimate).
        """
        thr = as_1d_finite("thresholds", thresholds)
        side = check_side(side)
        lam = float(as_1d_finite("lam", lam)[0])
        if side == "upper":
            out = thr > self.phi.max()
            if np.any(out):
                raise ValueError(
                    f"thresholds {thr[out].tolist()} lie above every sampled φ (max {self.phi.max():.6g}): P would "
                    f"be estimated from zero samples; extend the λ grid toward that threshold (more negative λ)"
                )
        else:
            out = thr < self.phi.min()
            if np.any(out):
                raise ValueError(
                    f"thresholds {thr[out].tolist()} lie below every sampled φ (min {self.phi.min():.6g}): P would "
                    f"be estimated from zero samples; extend the λ grid toward that threshold (more positive λ)"
                )
        uniq, inv = np.unique(thr, return_inverse=True)
        S = uniq.size
        if side == "upper":
            group = np.searchsorted(uniq, self.phi, side="right") - 1  # φ ∈ [a_g, a_{g+1}); −1 below all
            member = np.arange(S)[None, :] >= np.arange(S)[:, None]  # s ⊇ groups g ≥ s
        else:
            group = np.searchsorted(uniq, self.phi, side="left")  # φ ∈ (a_{g−1}, a_g]; S above all
            group[group >= S] = -1
            member = np.arange(S)[None, :] <= np.arange(S)[:, None]
        log_p, sigma, count, n_eff = self._events(group, S, member, lam)
        df = {"threshold": thr}
        df.update({k: v[inv] for k, v in self._prob_frame(log_p, sigma).items()})
        df.update({"n": count[inv], "n_eff": n_eff[inv]})
        return pd.DataFrame(df)

    def density(self, bin_edges, lam: float = 0.0) -> pd.DataFrame:
        r"""Histogram of φ under p_λ (default p_M): P̂(φ ∈ bin i) = Σ_n 1[φ_n ∈ bin i] W_{nλ}, density P̂/width.

        Bins follow ``numpy.histogram``. A bin no sample falls in has p = 0, log_p = −inf and NaN errors (MBAR
        cannot bound it; look at the ``n`` column). Raises ValueError if no sample falls in any bin.

        Returns
        -------
        DataFrame with B rows: ``left, right, center, width, p, log_p, log10_p, sigma_log, sigma, ci_low, ci_high,
        density, density_low, density_high, n, n_eff``.
        """
        edges = check_edges(bin_edges)
        lam = float(as_1d_finite("lam", lam)[0])
        group = _bin_index(self.phi, edges)
        B = edges.size - 1
        if not np.any(group >= 0):
            raise ValueError(
                f"bin_edges [{edges[0]:.6g}, {edges[-1]:.6g}] contain no sampled φ (range "
                f"[{self.phi.min():.6g}, {self.phi.max():.6g}]); choose bins inside the sampled range"
            )
        log_p, sigma, count, n_eff = self._events(group, B, np.eye(B, dtype=bool), lam)
        width = np.diff(edges)
        df = {"left": edges[:-1], "right": edges[1:], "center": (edges[:-1] + edges[1:]) / 2, "width": width}
        pf = self._prob_frame(log_p, sigma)
        df.update(pf)
        df.update({
            "density": pf["p"] / width, "density_low": pf["ci_low"] / width, "density_high": pf["ci_high"] / width,
            "n": count, "n_eff": n_eff,
        })
        return pd.DataFrame(df)

    # ------------------------------------------------------------------ other

    def sample_log_weights(self, lam: float = 0.0) -> np.ndarray:
        """ln W_{nλ} for every sample, in the caller's original order ``[N]`` (LSE = 0): reweight to p_λ."""
        self._no_counts("sample_log_weights")
        lam_arr = np.array([float(lam)])
        lw = np.concatenate([self._log_w_block(lam_arr, self._target_f(lam_arr), sl)[0]
                             for sl in _chunks(self.N, self.chunk_size)])
        out = np.empty_like(lw)
        out[self._order] = lw
        return out

    def expectation(self, values, lam: float = 0.0) -> tuple[float, float]:
        """E_{p_λ}[A] for per-sample values ``[N]`` (caller's order) -> (mean, sd) via ``compute_expectations``."""
        self._no_counts("expectation")
        a = as_1d_finite("values", values)
        if a.size != self.N:
            raise ValueError(f"values has length {a.size}, expected one per sample ({self.N})")
        with _captured_pymbar_output():
            res = self.mbar.compute_expectations(a[self._order], u_kn=float(lam) * self.phi)
        return float(res["mu"][0]), float(res["sigma"][0])

    def __repr__(self) -> str:
        return (f"TiltedMBAR(K={self.K}, N={self.N}, lambdas=[{self.lambdas[0]:g} … {self.lambdas[-1]:g}], "
                f"min neighbour overlap={self.neighbour_overlap.min() if self.K > 1 else np.nan:.3g})")
