r"""Diagnostics for MCMC (TPS) output and error analysis [REA §5, App. C].

* :func:`n_burn_in` -- THE burn-in rule of the package: the first ⌊fraction·L⌋ steps of a segment of L steps
  (10 % by default; ⌊·⌋ so that a segment never loses more than the fraction). :func:`burn_in_mask`,
  :func:`drop_burn_in`, :meth:`rea.tps.TPSResult.post_burn_in` and :func:`rea.tps.mbar.tps_mbar` all use it.
* :func:`burn_in_mask` / :func:`drop_burn_in` -- discard the first 10 % of every (chain, bias) segment.
* :func:`gelman_rubin_from_moments` -- THE Gelman–Rubin formula (the potential scale reduction of J chains of L
  steps) from the chains' means and variances,

  .. math:: B = \frac{L}{J-1}\sum_j (\bar y_j - \bar y)^2,\quad W = \frac1J \sum_j s_j^2,\quad
            \mathrm{GR} = \frac{\frac{L-1}{L} W + \frac1L B}{W};

  :func:`gelman_rubin` applies it to chains ``y[J, L]``, :func:`gelman_rubin_by_bias` per bias (flagging the biases
  that pass, GR < 1.1) and :meth:`rea.tps.mbar.Prepared.gelman_rubin` to the per-segment moments of a replica.
* :func:`statistical_inefficiency` / :func:`subsample` -- g = 1 + 2τ and an uncorrelated subsample
  (``pymbar.timeseries``); :func:`statistical_inefficiency_multiple` -- one g from several chains of the same bias
  (fluctuations about the pooled mean, so chains that disagree raise g). MBAR's analytic errors on correlated
  samples use effective counts N_k/g_k (:func:`rea.tps.mbar.tps_mbar`).
* :func:`half_vs_full_bias` -- Δh = h_full − h_half relative to h and to the CI half-width.

The bootstrap over chains lives in :mod:`rea.stats.bootstrap`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rea.stats.pymbar_compat import captured_pymbar_output, import_pymbar

__all__ = [
    "n_burn_in",
    "burn_in_mask",
    "drop_burn_in",
    "gelman_rubin_from_moments",
    "gelman_rubin",
    "gelman_rubin_by_bias",
    "statistical_inefficiency",
    "statistical_inefficiency_multiple",
    "subsample",
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


def gelman_rubin_from_moments(chain_means, chain_variances, length) -> float:
    r"""Gelman–Rubin statistic of J chains of L steps from their means ȳ_j ``[J]`` and variances s_j² ``[J]``.

    .. math:: \bar y = \frac1J\sum_j \bar y_j,\quad B = \frac{L}{J-1}\sum_j (\bar y_j - \bar y)^2,\quad
              W = \frac1J\sum_j s_j^2,\quad \mathrm{GR} = \frac{\frac{L-1}{L} W + \frac1L B}{W},

    with s_j² the unbiased (ddof = 1) variance of chain j. Needs J ≥ 2 and L ≥ 2 (callers check). Returns a
    ``numpy.float64``; ``inf`` when every chain is constant but they differ (W = 0 < B), ``nan`` when W = B = 0.
    """
    means = np.asarray(chain_means, dtype=np.float64)
    J, L = means.size, length
    B = L / (J - 1) * np.sum((means - means.mean()) ** 2)
    W = np.mean(chain_variances)
    if W == 0:
        return float("inf") if B > 0 else float("nan")
    return ((L - 1) / L * W + B / L) / W


def gelman_rubin(y) -> float:
    r"""Gelman–Rubin statistic of J chains of L post-burn-in steps ``y[J, L]`` (METHODS §7).

    .. math:: \bar y_j = \frac1L\sum_l y_{jl},\; \bar y = \frac1J\sum_j \bar y_j,\;
              s_j^2 = \frac{1}{L-1}\sum_l (y_{jl} - \bar y_j)^2,

    and GR from :func:`gelman_rubin_from_moments`.

    Returns a float ≥ (L−1)/L; ``inf`` when every chain is constant but they differ (stuck chains), ``nan`` when
    all chains are the same constant (no information). Treat ``nan`` as failing a GR < 1.1 filter.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 2:
        raise ValueError(f"y must have shape [J, L] with J ≥ 2 chains and L ≥ 2 steps, got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains non-finite values")
    return float(gelman_rubin_from_moments(y.mean(axis=1), y.var(axis=1, ddof=1), y.shape[1]))


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
    with captured_pymbar_output():
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
    with captured_pymbar_output():
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
    with captured_pymbar_output():
        idx = pymbar.timeseries.subsample_correlated_data(x, g=g, conservative=conservative)
    return np.asarray(idx, dtype=np.int64)


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
