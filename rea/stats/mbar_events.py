r"""Events of φ for :class:`rea.stats.mbar.TiltedMBAR`: tails and intervals as unions of groups of sorted samples,
their table columns, and fast point estimates without errors.

An event s is a union of disjoint groups g of samples: for tails φ ≥ a_s (S sorted thresholds) group g holds the
φ in [a_g, a_{g+1}) and s ⊇ every g ≥ s (:func:`tail_groups`); for histogram bins group = bin
(:func:`rea.stats.direct.bin_index`). Then P̂_t(s) = Σ_{g∈s} Σ_{n∈g} W_nt (errors in :mod:`rea.stats.mbar_errors`).

* :func:`check_thresholds_reached` -- every threshold must have samples beyond it;
* :func:`tail_groups` -- the group of each sample and the membership matrix of tail events;
* :func:`probability_columns` -- p, ln p, log10 p, sd and log-normal interval of event probabilities;
* :func:`log_sum_in_intervals` / :func:`count_in_intervals` -- ln P̂(lo ≤ φ < hi) without errors (one sort and a
  cumulative sum: fast enough for bootstrap replicas) and the samples in each interval.
* :class:`EventQueries` -- :class:`rea.stats.mbar.TiltedMBAR`'s event methods (:meth:`~EventQueries.tail`,
  :meth:`~EventQueries.density`, :meth:`~EventQueries.interval_log_p`, :meth:`~EventQueries.interval_counts`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rea.arguments import as_1d_finite, check_edges, check_side
from rea.stats.direct import bin_columns, bin_index
from rea.stats.mbar_errors import event_log_probabilities, event_log_sigma
from rea.stats.mbar_solver import chunk_slices

__all__ = [
    "check_thresholds_reached",
    "tail_groups",
    "probability_columns",
    "log_sum_in_intervals",
    "count_in_intervals",
    "EventQueries",
]


def check_thresholds_reached(thresholds: np.ndarray, phi: np.ndarray, side: str) -> None:
    """ValueError unless some sample φ ``[N]`` lies at or beyond every threshold ``[S]`` (``side`` upper: ≥)."""
    if side == "upper":
        out = thresholds > phi.max()
        if np.any(out):
            raise ValueError(
                f"thresholds {thresholds[out].tolist()} lie above every sampled φ (max {phi.max():.6g}): P would "
                f"be estimated from zero samples; extend the λ grid toward that threshold (more negative λ)"
            )
    else:
        out = thresholds < phi.min()
        if np.any(out):
            raise ValueError(
                f"thresholds {thresholds[out].tolist()} lie below every sampled φ (min {phi.min():.6g}): P would "
                f"be estimated from zero samples; extend the λ grid toward that threshold (more positive λ)"
            )


def tail_groups(phi: np.ndarray, sorted_thresholds: np.ndarray, side: str):
    r"""Groups of the samples for the tail events of S distinct sorted thresholds a ``[S]``.

    ``side="upper"``: group g = {n: a_g ≤ φ_n < a_{g+1}} (−1 below a_0) and event s = {φ ≥ a_s} = ∪_{g ≥ s};
    ``"lower"``: g = {n: a_{g−1} < φ_n ≤ a_g} (−1 above a_{S−1}) and s = {φ ≤ a_s} = ∪_{g ≤ s}.
    Returns (group int ``[N]`` in [−1, S), membership bool ``[S, S]``).
    """
    S = sorted_thresholds.size
    if side == "upper":
        group = np.searchsorted(sorted_thresholds, phi, side="right") - 1  # φ ∈ [a_g, a_{g+1}); −1 below all
        member = np.arange(S)[None, :] >= np.arange(S)[:, None]  # s ⊇ groups g ≥ s
    else:
        group = np.searchsorted(sorted_thresholds, phi, side="left")  # φ ∈ (a_{g−1}, a_g]; S above all
        group[group >= S] = -1
        member = np.arange(S)[None, :] <= np.arange(S)[:, None]
    return group, member


def probability_columns(log_p: np.ndarray, sigma: np.ndarray, z: float) -> dict:
    r"""Table columns of event probabilities from ln P̂ ``[S]`` and σ = sd(ln P̂) ``[S]``:

    ``p`` = e^{ln P̂}, ``log_p``, ``log10_p``, ``sigma_log`` = σ, ``sigma`` = P̂σ and the log-normal interval
    ``ci_low, ci_high`` = P̂ e^{∓zσ}.
    """
    with np.errstate(over="ignore"):
        p = np.exp(log_p)
        return {
            "p": p, "log_p": log_p, "log10_p": log_p / np.log(10), "sigma_log": sigma, "sigma": p * sigma,
            "ci_low": np.exp(log_p - z * sigma), "ci_high": np.exp(log_p + z * sigma),
        }


def log_sum_in_intervals(phi, log_w, lo, hi, closed_hi) -> np.ndarray:
    r"""ln Σ_n 1[lo_s ≤ φ_n < hi_s] w_n for S intervals (≤ hi_s where ``closed_hi``), from ln w_n ``[N]``.

    One stable sort of φ ``[N]`` and a cumulative sum of e^{ln w − max ln w}: O((N + S) log N). ``lo``, ``hi``
    float ``[S]`` (±inf allowed), ``closed_hi`` bool ``[S]`` or scalar. Returns ``[S]``, −inf for an empty interval.
    """
    order = np.argsort(phi, kind="stable")
    ps, lws = phi[order], log_w[order]
    m = lws.max()
    cum = np.concatenate([[0.0], np.cumsum(np.exp(lws - m))])
    lo_i = np.searchsorted(ps, lo, side="left")
    hi_i = np.where(closed_hi, np.searchsorted(ps, hi, side="right"), np.searchsorted(ps, hi, side="left"))
    tot = np.clip(cum[hi_i] - cum[lo_i], 0.0, None)
    with np.errstate(divide="ignore"):
        return np.log(tot) + m


def count_in_intervals(phi, counts, lo, hi, closed_hi) -> np.ndarray:
    """Samples Σ_n c_n 1[lo_s ≤ φ_n < hi_s] (≤ hi_s where ``closed_hi``) in each of S intervals, rounded -> int64
    ``[S]``; ``phi``, ``counts`` ``[N]``, ``lo``, ``hi`` ``[S]``, ``closed_hi`` bool ``[S]`` or scalar."""
    closed = np.broadcast_to(closed_hi, np.shape(lo))
    out = np.zeros(np.size(lo), dtype=np.int64)
    for i in range(out.size):
        sel = (phi >= lo[i]) & ((phi <= hi[i]) if closed[i] else (phi < hi[i]))
        out[i] = int(round(counts[sel].sum()))
    return out


class EventQueries:
    """Event probabilities of a solved tilted MBAR: the tail, histogram and interval methods of
    :class:`rea.stats.mbar.TiltedMBAR` (a mixin; the host provides the solution -- ``phi``, ``counts``, ``log_den``,
    ``lambdas``, ``f_k``, ``n_k``, ``K``, ``N``, ``z``, ``chunk_size`` -- and the weight passes
    ``log_weight_block``, ``target_free_energies`` and ``gram_pass``)."""

    def _group_log_max(self, group, n_groups, lam_arr, tf) -> np.ndarray:
        """m_g = max_{n∈g} ln W_nt ``[G]`` under the target (λ_t, f_t) = (``lam_arr``, ``tf``); −inf when empty."""
        m = np.full(n_groups, -np.inf)
        for sl in chunk_slices(self.N, self.chunk_size):
            g = group[sl]
            ok = g >= 0
            lwt = self.log_weight_block(lam_arr, tf, sl)[0]
            np.maximum.at(m, g[ok], lwt[ok])
        return m

    def _group_sums(self, group, n_groups, lam_arr, tf, m):
        r"""One pass for the events under target t: W^T W ``[K+1, K+1]`` of the states and t, and per group g

        p'_g = Σ_{n∈g} c_n e_n, B'_g = Σ_{n∈g} c_n e_n², A'_gj = Σ_{n∈g} c_n e_n W_nj with e_n = e^{ln W_nt − m_g}
        (``[G]``, ``[G]``, ``[G, K+1]``), so that P̂_g = e^{m_g} p'_g.
        """
        p1 = np.zeros(n_groups)
        b1 = np.zeros(n_groups)
        a1 = np.zeros((n_groups, self.K + 1))

        def add_group_sums(sl, log_w, w, cw):
            g = group[sl]
            ok = g >= 0
            gg = g[ok]
            e = np.exp(log_w[-1, ok] - m[gg])
            ec = e * self.counts[sl][ok]
            np.add(p1, np.bincount(gg, weights=ec, minlength=n_groups), out=p1)
            np.add(b1, np.bincount(gg, weights=ec * e, minlength=n_groups), out=b1)
            for j in range(a1.shape[1]):
                a1[:, j] += np.bincount(gg, weights=ec * w[j, ok], minlength=n_groups)

        wtw = self.gram_pass(np.concatenate([self.lambdas, lam_arr]), np.concatenate([self.f_k, tf]), add_group_sums)
        return wtw, p1, b1, a1

    def _events(self, group: np.ndarray, n_groups: int, membership: np.ndarray, lam_t: float):
        r"""Probabilities of events s = ∪_{g: C[s,g]} groups under target λ_t, with asymptotic log-errors.

        ``group`` int ``[N]`` in [−1, G) (−1: in no group) for the sorted samples; ``membership`` bool ``[S, G]``.
        ln P_s = LSE_{g∈s}(m_g + ln p'_g) from the group sums (:meth:`_group_sums`); errors from
        :func:`rea.stats.mbar_errors.event_log_sigma`.
        Returns log_p ``[S]``, sigma_log ``[S]`` (NaN where P = 0), count ``[S]``, n_eff ``[S]``.
        """
        lam_arr = np.array([float(lam_t)])
        tf = self.target_free_energies(lam_arr)
        m = self._group_log_max(group, n_groups, lam_arr, tf)
        wtw, p1, b1, a1 = self._group_sums(group, n_groups, lam_arr, tf, m)
        count_g = np.rint(np.bincount(group[group >= 0], weights=self.counts[group >= 0],
                                      minlength=n_groups)).astype(np.int64)
        C = membership.astype(bool)
        with np.errstate(divide="ignore"):
            lg = m + np.log(p1)  # ln P of each group (−inf when empty)
        log_p = event_log_probabilities(lg, C)
        count = C.astype(np.int64) @ count_g
        sigma, n_eff = event_log_sigma(C, log_p, m, b1, a1, wtw, self.n_k)
        return log_p, sigma, count, n_eff

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
        check_thresholds_reached(thr, self.phi, side)
        uniq, inv = np.unique(thr, return_inverse=True)
        group, member = tail_groups(self.phi, uniq, side)
        log_p, sigma, count, n_eff = self._events(group, uniq.size, member, lam)
        df = {"threshold": thr}
        df.update({k: v[inv] for k, v in probability_columns(log_p, sigma, self.z).items()})
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
        group = bin_index(self.phi, edges)
        B = edges.size - 1
        if not np.any(group >= 0):
            raise ValueError(
                f"bin_edges [{edges[0]:.6g}, {edges[-1]:.6g}] contain no sampled φ (range "
                f"[{self.phi.min():.6g}, {self.phi.max():.6g}]); choose bins inside the sampled range"
            )
        log_p, sigma, count, n_eff = self._events(group, B, np.eye(B, dtype=bool), lam)
        df = bin_columns(edges)
        width = df["width"]
        pf = probability_columns(log_p, sigma, self.z)
        df.update(pf)
        df.update({
            "density": pf["p"] / width, "density_low": pf["ci_low"] / width, "density_high": pf["ci_high"] / width,
            "n": count, "n_eff": n_eff,
        })
        return pd.DataFrame(df)

    def interval_log_p(self, lo, hi, closed_hi=False) -> np.ndarray:
        r"""ln P̂_0(lo ≤ φ < hi) under p_M (λ = 0) for a batch of S intervals, without errors (fast: one sort):

        .. math:: \ln \hat P_0(s) = \ln \sum_n \frac{c_n\, 1[lo_s \le \phi_n < hi_s]}{\sum_j N_j e^{f_j -
                  \lambda_j \phi_n}} \quad (\le hi_s \text{ where } ``closed\_hi``).

        ``lo``, ``hi`` float ``[S]`` (±inf for tails), ``closed_hi`` bool ``[S]`` or scalar. Returns ``[S]``, −inf
        where no sample falls in the interval. Same numbers as :meth:`tail` and :meth:`density` up to round-off.
        """
        return log_sum_in_intervals(self.phi, np.log(self.counts) - self.log_den, lo, hi, closed_hi)

    def interval_counts(self, lo, hi, closed_hi=False) -> np.ndarray:
        """Pooled samples (rows times their counts, rounded) in each interval [lo, hi) (]hi] where ``closed_hi``)
        -> int64 ``[S]``; the ``n`` column of :meth:`tail` and :meth:`density`."""
        return count_in_intervals(self.phi, self.counts, lo, hi, closed_hi)
