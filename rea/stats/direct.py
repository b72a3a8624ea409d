r"""Direct sampling [REA §3.2]: N i.i.d. samples φ_n ~ p_M.

For an event s (a tail φ ≥ a or a bin), k = Σ_n 1[φ_n ∈ s] and P̂(s) = k/N with a Wilson score interval
(:func:`rea.stats.intervals.wilson_interval`). An event never seen has P̂ = 0 and a finite Wilson upper bound.

* :func:`bin_index` -- the bin of each φ under the ``numpy.histogram`` convention; :func:`bin_columns` -- the bins'
  ``left, right, center, width`` (both shared with MBAR's histograms).
* :func:`direct_tail` -- tail probabilities P̂(φ ≥ a) (or ≤ a) with Wilson intervals.
* :func:`direct_density` -- bin probabilities and densities with Wilson intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rea.arguments import as_1d_finite, check_edges, check_side
from rea.stats.intervals import wilson_interval

__all__ = ["bin_index", "bin_columns", "direct_tail", "direct_density"]


def bin_index(phi: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each φ ``[N]`` with the ``numpy.histogram`` convention ([e_i, e_{i+1}), the last bin closed) for
    edges ``[B+1]`` -> int ``[N]`` in [−1, B), −1 outside the edges."""
    idx = np.searchsorted(edges, phi, side="right") - 1
    nbins = edges.size - 1
    idx[phi == edges[-1]] = nbins - 1
    idx[(idx < 0) | (idx >= nbins)] = -1
    return idx


def bin_columns(edges: np.ndarray) -> dict:
    """Table columns of the bins of ``edges`` ``[B+1]``: ``left, right, center, width`` ``[B]``."""
    return {"left": edges[:-1], "right": edges[1:], "center": (edges[:-1] + edges[1:]) / 2, "width": np.diff(edges)}


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
    DataFrame with B rows: ``left, right, center, width, k, n, p, ci_low, ci_high, density, density_low,
    density_high``.
    """
    phi = as_1d_finite("phi", phi)
    edges = check_edges(bin_edges)
    idx = bin_index(phi, edges)
    nbins = edges.size - 1
    k = np.bincount(idx[idx >= 0], minlength=nbins)
    low, high = wilson_interval(k, phi.size, confidence)
    bins = bin_columns(edges)
    width = bins["width"]
    p = k / phi.size
    return pd.DataFrame({
        **bins, "k": k, "n": phi.size, "p": p, "ci_low": low, "ci_high": high,
        "density": p / width, "density_low": low / width, "density_high": high / width,
    })

