r"""MBAR's asymptotic uncertainties [Shirts & Chodera 2008, App. D], for free energies and event probabilities.

Every quantity is a ratio of normalising constants: ln ĉ_i for a column i of the weight matrix W (a sampled state, a
target λ, or a normalised event column W_ns = 1[φ_n ∈ s] W_nt / P̂_t(s)). From the Gram matrix WᵀW of the columns,
:func:`asymptotic_covariance` gives Θ = Cov(ln ĉ), and the standard deviation of a log ratio is

.. math:: \sigma(\ln \hat c_i - \ln \hat c_j) = \sqrt{\Theta_{ii} + \Theta_{jj} - 2\Theta_{ij}}
          \quad (:func:`difference_sigma`).

For events s (tails, bins) made of disjoint groups g of samples (sorted φ between consecutive thresholds, or
bins), the event columns' Gram rows are assembled from per-group sums without forming W_ns
(:func:`event_gram_rows`), so that probabilities far below 1e-300 keep finite errors:

* :func:`event_log_probabilities` -- ln P̂_s = LSE_{g∈s} ln P̂_g;
* :func:`event_gram_rows` -- (WᵀW)_{s,s'} and (WᵀW)_{s,j} from the group sums;
* :func:`event_log_sigma` -- sd(ln P̂_s) and the events' effective sample sizes.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.special import logsumexp

__all__ = [
    "asymptotic_covariance",
    "difference_sigma",
    "event_log_probabilities",
    "event_gram_rows",
    "event_log_sigma",
]


def asymptotic_covariance(wtw: np.ndarray, n_aug: np.ndarray) -> np.ndarray:
    r"""MBAR asymptotic covariance Θ of ln c_i from the Gram matrix W^T W ``[M, M]`` ("svd-ew", [MBAR] App. D).

    .. math:: W^T W = V S^2 V^T, \qquad \Theta = V S \left(I - S V^T \mathrm{diag}(N) V S\right)^+ S V^T,

    with N = ``n_aug`` ``[M]`` the samples of each column (0 for targets and events). Same formula as pymbar's
    default. Returns Θ ``[M, M]``.
    """
    s2, v = linalg.eigh(wtw)
    s2[s2 < 0] = 0.0
    sig = np.sqrt(s2)
    vs = v * sig  # V S
    inner = np.eye(len(s2)) - vs.T @ (n_aug[:, None] * vs)
    return vs @ np.linalg.pinv(inner, rcond=1e-10) @ vs.T


def difference_sigma(theta: np.ndarray, rows: np.ndarray, ref: int) -> np.ndarray:
    r"""sd(ln ĉ_i − ln ĉ_ref) = √max(0, Θ_ii + Θ_rr − 2Θ_ir) for the columns i = ``rows`` ``[R]`` -> ``[R]``."""
    var = theta[rows, rows] + theta[ref, ref] - 2 * theta[rows, ref]
    return np.sqrt(np.clip(var, 0, None))


def event_log_probabilities(group_log_p: np.ndarray, membership: np.ndarray) -> np.ndarray:
    r"""ln P̂_s = LSE_{g: C_sg} ln P̂_g ``[S]`` from the groups' ln P̂_g ``[G]`` (−inf when empty) and the membership
    C bool ``[S, G]``; −inf for an event none of whose groups holds a sample."""
    finite = np.isfinite(group_log_p)
    return np.array([logsumexp(group_log_p[c]) if np.any(c & finite) else -np.inf for c in membership])


def event_gram_rows(membership, log_p, group_log_max, b1, a1):
    r"""The rows of WᵀW for the normalised event columns W_ns = 1[φ_n ∈ s] W_nt / P_s of events with P_s > 0.

    Per group g, with m_g = max_{n∈g} ln W_nt and e_n = e^{ln W_nt − m_g}, the group sums are B'_g = Σ_{n∈g} e_n²
    (``b1`` ``[G]``) and A'_gj = Σ_{n∈g} c_n e_n W_nj (``a1`` ``[G, K+1]``, states and the target t last). With
    r_sg = C_sg e^{m_g − ln P_s} and r2_sg = C_sg e^{2m_g − ln P_s}:

    .. math:: (W^TW)_{s,s'} = \sum_g r_{sg} r_{s'g} B'_g, \qquad (W^TW)_{s,j} = \sum_g r_{sg} A'_{gj}, \qquad
              (W^TW)_{s,t} = \sum_g r2_{sg} B'_g = \sum_{n\in s} W_{nt}^2 / P_s

    (the last from B', stable when P_s underflows). ``membership`` bool ``[S', G]`` and ``log_p`` ``[S']`` of the
    live events, ``group_log_max`` m ``[G]``. Returns ((WᵀW)_{s,s'} ``[S', S']``, (WᵀW)_{s,j} ``[S', K+1]``).
    """
    m = group_log_max
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.where(membership, np.exp(np.where(membership, m[None, :] - log_p[:, None], -np.inf)), 0.0)  # [S', G]
        r2 = np.where(membership, np.exp(np.where(membership, 2 * m[None, :] - log_p[:, None], -np.inf)), 0.0)
    ss = (r * b1[None, :]) @ r.T
    sj = r @ a1  # for states j (and the target, overwritten next)
    st = r2 @ b1
    sj[:, -1] = st
    return ss, sj


def _bordered_gram(wtw, sj, ss) -> np.ndarray:
    """The Gram matrix of states, target and events ``[K+1+S', K+1+S']`` from its blocks."""
    K1 = wtw.shape[0]
    M = K1 + ss.shape[0]
    big = np.zeros((M, M))
    big[:K1, :K1] = wtw
    big[K1:, :K1] = sj
    big[:K1, K1:] = sj.T
    big[K1:, K1:] = ss
    return big


def event_log_sigma(membership, log_p, group_log_max, b1, a1, wtw, n_k):
    r"""sd(ln P̂_t(s)) and effective sample sizes of events s under the target t (the last column of ``wtw``).

    .. math:: \mathrm{Var}(\ln \hat P_t(s)) = \Theta_{ss} + \Theta_{tt} - 2\Theta_{st}, \qquad
              n^\mathrm{eff}_s = \frac{1}{(W^TW)_{s,s}} = \frac{(\sum_{n\in s} W_{nt})^2}{\sum_{n\in s} W_{nt}^2},

    with Θ the :func:`asymptotic_covariance` of the Gram matrix of states, target (``wtw`` ``[K+1, K+1]``) and
    events (:func:`event_gram_rows`). ``membership`` bool ``[S, G]``, ``log_p`` ``[S]``, ``n_k`` ``[K]``.
    Returns (sigma ``[S]``, NaN where P̂ = 0; n_eff ``[S]``, 0 there).
    """
    S = membership.shape[0]
    sigma = np.full(S, np.nan)
    n_eff = np.zeros(S)
    live = np.isfinite(log_p)
    if np.any(live):
        n_live = int(live.sum())
        ss, sj = event_gram_rows(membership[live], log_p[live], group_log_max, b1, a1)
        n_aug = np.concatenate([n_k, [0.0], np.zeros(n_live)])
        theta = asymptotic_covariance(_bordered_gram(wtw, sj, ss), n_aug)
        K1 = wtw.shape[0]
        sigma[live] = difference_sigma(theta, K1 + np.arange(n_live), K1 - 1)
        n_eff[live] = 1.0 / np.diag(ss)
    return sigma, n_eff
