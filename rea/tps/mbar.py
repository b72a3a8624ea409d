r"""One call from TPS output to the table a chapter plots: MBAR estimates with bootstrap (or analytic) 96 % CIs next
to the direct estimate with its Wilson interval [REA §4–5, App. C].

Input
-----
* ``records``: the per-step TPS records (:class:`rea.tps.TPSResult`, its ``records`` DataFrame, or any table with
  columns ``chain``, ``lambda`` (or ``lam``), ``step``, ``phi``; ``direction`` is used when present). Each
  (chain, λ) pair is one bias segment; ``step`` orders it.
* ``direct_phi``: φ of i.i.d. samples of p_M, the λ = 0 state (may be omitted when the records contain a λ = 0
  segment).

Pipeline (:func:`tps_mbar`)
---------------------------
1. Burn-in: drop the first ⌊0.1·N⌋ steps of every bias segment of N steps (:func:`rea.stats.diagnostics.n_burn_in`, the
   package's one rule, applied by :func:`rea.stats.diagnostics.drop_burn_in`).
2. Convergence filter: Gelman–Rubin per bias over the chains (:func:`rea.stats.diagnostics.gelman_rubin`); biases with
   GR ≥ 1.1 (or undefined GR) are dropped -- or ``keep=`` names the biases (:mod:`rea.tps.selection`: those
   :func:`rea.tps.equilibrium_check` finds equilibrated against SMC, METHODS §11, or a list).
3. MBAR (:class:`rea.stats.mbar.TiltedMBAR`) over direct samples (λ = 0) and the surviving segments, with identical
   (λ, φ) samples merged into counts (exact; fast for discrete φ such as Repeats or ARI).
4. Errors, ``method="bootstrap"`` [REA App. C]: 100 replicas of :func:`rea.stats.bootstrap.bootstrap_over_chains`, each
   resampling whole chains with replacement (a unit is the j-th chain of every direction, so each replica keeps J
   chains per direction) and the direct samples (multinomially), then redoing 1–3. Burn-in depends only on a segment
   itself, so it is computed once per segment (identical to recomputing it per replica); GR and MBAR are recomputed
   per replica from the replica's chains (a chain drawn twice counts as two chains). The 96 % interval
   (``interval="t"``, the default) is ln P̂ ± t_{J−1}·s·√(J/(J−1)) with s a robust standard deviation of the
   replicas' ln P (:func:`rea.stats.bootstrap.bootstrap_over_chains`), clipped to P ≤ 1; it is [0, 1] when more than
   ~16 % of the replicas see no sample in the event (its samples come from ≤ ~2 chains). ``interval="percentile"``
   gives the paper's 3rd smallest / 3rd largest replica, which under-covers with few chains (measured on real toy
   TPS chains, 150 repeats: 0.91/0.91/0.85 at tails 1.6e-2/7.8e-4/6.6e-6 with 16 chains, 0.70–0.78 with 4; the t
   interval 0.93–0.98 with 16 and 8 chains; :func:`rea.validate.check_coverage_tps`). Fewer than
   :data:`MIN_CHAINS_T` chains (or the percentile interval with ≤ 16) issue a :class:`ChainCountWarning`.
   ``method="analytic"`` (fast; no replicas): every post-burn-in sample of the surviving biases is kept, each weighted
   by 1/g_k, with g_k the statistical inefficiency of φ at bias k pooled over its chains
   (:func:`rea.stats.diagnostics.statistical_inefficiency_multiple`); MBAR with these effective counts (N_k → N_k/g_k)
   gives the point estimate and its asymptotic log-normal interval (equations in :func:`effective_counts`).

Output: a tidy DataFrame, one row per threshold (tail probabilities) or bin (densities) -- see :func:`tps_mbar`.
Bad input raises a one-line ``ValueError`` naming the argument.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from rea.arguments import as_1d_finite, check_edges, check_side
from rea.stats import (
    OverlapWarning,
    TiltedMBAR,
    bin_columns,
    bootstrap_over_chains,
    direct_density,
    direct_tail,
    drop_burn_in,
    gelman_rubin_from_moments,
    statistical_inefficiency_multiple,
)
from rea.tps.selection import kept_biases

__all__ = ["tps_samples", "tps_mbar", "Prepared", "prepare", "effective_counts", "analytic_mbar",
           "ChainCountWarning", "MIN_CHAINS_T"]


# --------------------------------------------------------------------------------------------- input


def tps_samples(records) -> pd.DataFrame:
    """Normalise TPS records to columns ``chain, lam, step, phi, direction`` and check them.

    Accepts a :class:`rea.tps.TPSResult` or a DataFrame with ``chain``, ``lambda`` or ``lam``, ``step``, ``phi``
    (``direction`` optional: taken as the sign of λ where missing, λ = 0 segments as +1).
    Raises ValueError for an empty table, missing columns, non-finite φ or λ, and bias segments whose chains have
    different lengths.
    """
    if hasattr(records, "records") and isinstance(records.records, pd.DataFrame):
        records = records.records
    if not isinstance(records, pd.DataFrame):
        raise ValueError(f"records must be a TPSResult or a DataFrame of TPS records, got {type(records).__name__}")
    if len(records) == 0:
        raise ValueError("records is empty: no TPS steps to analyse (run TPS first, or pass only direct samples)")
    lam_col = "lambda" if "lambda" in records.columns else "lam"
    missing = [c for c in ("chain", lam_col, "step", "phi") if c not in records.columns]
    if missing:
        raise ValueError(f"records lacks column(s) {missing} (has {list(records.columns)})")
    phi = records["phi"].to_numpy(dtype=np.float64)
    lam = records[lam_col].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(phi)
    if bad.any():
        raise ValueError(f"records: phi has {int(bad.sum())} non-finite value(s) (first at row {int(np.argmax(bad))})")
    if not np.all(np.isfinite(lam)):
        raise ValueError("records: lambda has non-finite values")
    lam = lam + 0.0  # −0.0 -> 0.0
    if "direction" in records.columns:
        direction = records["direction"].to_numpy().astype(np.int64)
    else:
        direction = np.where(lam < 0, -1, 1)
    out = pd.DataFrame({
        "chain": records["chain"].to_numpy(), "lam": lam, "step": records["step"].to_numpy(dtype=np.int64),
        "phi": phi, "direction": direction,
    })
    sizes = out.groupby(["lam", "chain"]).size()
    for lam_v, s in sizes.groupby(level=0):
        if s.nunique() > 1:
            raise ValueError(
                f"records: chains at λ = {lam_v:g} have different numbers of steps "
                f"({dict(s.droplevel(0).items())}); pass complete bias segments (equal length per chain)"
            )
    return out


# --------------------------------------------------------------------------------------------- preparation


class Prepared:
    """Post-burn-in segments with their statistics, ready for replicas.

    segments : list of dicts (chain, unit, lam, phi [post burn-in, step order], values/counts [distinct φ], mean,
    var, n); units : bootstrap units (j-th chain of each direction); direct values/counts; lambdas of the segments.
    """

    def __init__(self, samples: pd.DataFrame | None, direct_phi, burn_in: float):
        self.segments: list[dict] = []
        if samples is not None:
            kept = drop_burn_in(samples, by=("chain", "lam"), step="step", fraction=burn_in)
            # bootstrap unit: rank of the chain within its direction
            chains = samples.groupby("chain")["direction"].first()
            rank = chains.index.to_series().groupby(chains.to_numpy()).rank(method="first").astype(int) - 1
            for (chain, lam), seg in kept.groupby(["chain", "lam"], sort=True):
                phi = seg["phi"].to_numpy()
                if phi.size == 0:
                    continue
                vals, cnt = np.unique(phi, return_counts=True)
                self.segments.append({
                    "chain": chain, "unit": int(rank[chain]), "lam": float(lam), "phi": phi, "values": vals,
                    "counts": cnt, "mean": phi.mean(), "var": phi.var(ddof=1) if phi.size > 1 else 0.0,
                    "n": phi.size,
                })
        self.units = np.unique([s["unit"] for s in self.segments]) if self.segments else np.zeros(0, int)
        self.seg_lams = np.array([s["lam"] for s in self.segments])
        self.seg_units = np.array([s["unit"] for s in self.segments], dtype=np.int64)
        self.lambdas = np.unique(self.seg_lams)
        if direct_phi is not None and np.size(direct_phi):
            d = as_1d_finite("direct_phi", direct_phi)
            self.direct_phi = d
            self.direct_values, self.direct_counts = np.unique(d, return_counts=True)
        else:
            self.direct_phi = np.zeros(0)
            self.direct_values, self.direct_counts = np.zeros(0), np.zeros(0, np.int64)

    def gelman_rubin(self, seg_index: np.ndarray) -> dict:
        """GR per λ for the segments ``seg_index`` (repeats = distinct chains), from per-segment mean/var/length.

        :func:`rea.stats.diagnostics.gelman_rubin_from_moments` (the formula of
        :func:`rea.stats.diagnostics.gelman_rubin`, chains of equal length L) of the segments' means and variances;
        NaN with fewer than 2 chains or L < 2, inf when W = 0 < B.
        """
        out = {}
        lam_of = self.seg_lams[seg_index]
        for lam in np.unique(lam_of):
            idx = seg_index[lam_of == lam]
            L = min(self.segments[i]["n"] for i in idx)
            if idx.size < 2 or L < 2:
                out[lam] = np.nan
                continue
            out[lam] = gelman_rubin_from_moments([self.segments[i]["mean"] for i in idx],
                                                 [self.segments[i]["var"] for i in idx], L)
        return out

    def pool(self, seg_index: np.ndarray, direct_counts: np.ndarray, gr_threshold: float, keep=None):
        """(phi, lam, counts, kept λ, GR dict) of the segments passing GR (or in the set ``keep``) + direct samples."""
        gr = self.gelman_rubin(seg_index)
        passed = {lam for lam, g in gr.items() if (g < gr_threshold if keep is None else lam in keep)}
        use = [i for i in seg_index if self.segments[i]["lam"] in passed]
        phi = [self.direct_values] + [self.segments[i]["values"] for i in use]
        lam = [np.zeros(self.direct_values.size)] + [np.full(self.segments[i]["values"].size, self.segments[i]["lam"])
                                                     for i in use]
        cnt = [np.asarray(direct_counts, np.int64)] + [self.segments[i]["counts"] for i in use]
        return np.concatenate(phi), np.concatenate(lam), np.concatenate(cnt), sorted(passed), gr


def prepare(records, direct_phi, burn_in: float = 0.1) -> Prepared:
    """Check the inputs and cut burn-in (see :func:`tps_mbar`)."""
    samples = None if records is None else tps_samples(records)
    prep = Prepared(samples, direct_phi, burn_in)
    has_zero = prep.direct_values.size > 0 or np.any(prep.seg_lams == 0.0)
    if not has_zero:
        raise ValueError(
            f"direct_phi: no direct samples and no λ = 0 bias in the records (λ grid {prep.lambdas.tolist()}): "
            f"MBAR needs samples of p_M itself (the λ = 0 reference state)"
        )
    if not prep.segments and prep.direct_values.size == 0:
        raise ValueError("records: no samples left after burn-in")
    return prep


# --------------------------------------------------------------------------------------------- MBAR per replica


def _quiet_mbar(phi, lam, counts, confidence) -> TiltedMBAR:
    """:class:`rea.stats.TiltedMBAR` of pooled (φ, λ, count) rows without its per-pair OverlapWarnings (callers judge
    the overlap once, see :func:`_warn_poor_overlap`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        return TiltedMBAR(phi, lam, counts=counts, confidence=confidence)


def _events(kind, thresholds, edges, side):
    """The events as intervals (lo ``[S]``, hi ``[S]``, closed_hi bool ``[S]``): tails [a, ∞) or (−∞, a], or bins
    [e_i, e_{i+1}) with the last one closed (``numpy.histogram``)."""
    if kind == "tail":
        thr = thresholds
        if side == "upper":
            return thr, np.full(thr.size, np.inf), np.ones(thr.size, bool)
        return np.full(thr.size, -np.inf), thr, np.ones(thr.size, bool)
    lo, hi = edges[:-1], edges[1:]
    closed = np.zeros(lo.size, bool)
    closed[-1] = True
    return lo, hi, closed


class ChainCountWarning(UserWarning):
    """Too few chains per direction for the bootstrap interval to be trusted (measured minimum, see tps_mbar)."""


MIN_CHAINS_T = 8
"""Fewest chains per direction at which the bootstrap t interval was measured to cover (150 repeats, real toy TPS:
0.95–0.98 with 8 chains, 0.93–0.97 with 16; with 4 chains the deepest tail's interval was mostly [0, 1] and 19 %
of runs never reached it)."""
PERCENTILE_UNDERCOVERS_AT = 16
"""The paper's percentile interval under-covered with this many chains (0.91/0.91/0.85 at 1.6e-2/7.8e-4/6.6e-6)."""

_FLOOR = -1e300  # ln 0 in replicas (bootstrap_over_chains drops non-finite replicas; an estimate of 0 is valid)
_DIRECT_COLUMNS = ("direct_k", "direct_n", "direct_p", "direct_ci_low", "direct_ci_high", "direct_rel_ci_half")


# --------------------------------------------------------------------------------------------- the one call


def tps_mbar(records, direct_phi=None, thresholds=None, bin_edges=None, *, side: str = "upper",
             method: str = "bootstrap", n_boot: int = 100, interval: str = "t", burn_in: float = 0.1,
             gr_threshold: float = 1.1, confidence: float = 0.96, seed=0, keep="gelman_rubin") -> pd.DataFrame:
    r"""MBAR estimates of tail probabilities or bin probabilities/densities from TPS records and direct samples.

    Parameters
    ----------
    records : :class:`rea.tps.TPSResult` or records DataFrame (see :func:`tps_samples`); None for direct only
    direct_phi : float ``[N₀]`` φ of direct samples of p_M (λ = 0); may be None if the records have a λ = 0 bias
    thresholds : float ``[S]`` -> tail rows P(φ ≥ a) (``side="lower"``: P(φ ≤ a)); or
    bin_edges : float ``[B+1]`` -> bin rows P(φ ∈ bin), density = P/width (``numpy.histogram`` bins)
    method : ``"bootstrap"`` (over chains, ``n_boot`` replicas) or ``"analytic"`` (MBAR with effective counts
        N_k/g_k, its asymptotic CI; see :func:`effective_counts`)
    interval : bootstrap interval, ``"t"`` (Student t on ln P with the bootstrap standard error; default) or
        ``"percentile"`` (the paper's order statistics); see :func:`rea.stats.bootstrap.bootstrap_over_chains`
    burn_in : fraction of each bias segment dropped (0.1); gr_threshold : biases with GR ≥ this are dropped (1.1)
    keep : ``"gelman_rubin"`` (default; per bootstrap replica), an equilibrium table (its ``equilibrated`` biases,
        :func:`rea.tps.equilibrium_check`) or a list of λ: the biases MBAR uses (:func:`rea.tps.selection.kept_biases`)
    confidence : CI level (0.96); seed : bootstrap RNG seed

    Returns
    -------
    DataFrame, one row per threshold (input order) or bin, with columns
    ``threshold`` (tails) or ``left, right, center, width`` (bins); ``p, log10_p, ci_low, ci_high, rel_ci_half``
    (MBAR; rel_ci_half = (ci_high − ci_low)/(2p)), ``n`` (pooled samples in the event); for bins also
    ``density, density_low, density_high``; ``direct_k, direct_n, direct_p, direct_ci_low, direct_ci_high,
    direct_rel_ci_half`` (Wilson; NaN columns without direct samples); ``method``. ``df.attrs`` holds ``lambdas``
    (biases used), ``gelman_rubin`` (λ -> GR on all chains), ``dropped`` (λ not used), ``keep``, ``min_overlap``
    (smallest neighbour overlap), ``n_valid`` (finite replicas; bootstrap), ``n_samples`` (pooled samples),
    ``statistical_inefficiency`` (λ -> g_k; analytic) and ``n_effective`` (Σ_k N_k/g_k; analytic).
    """
    kind, thr, edges, side = _checked_options(thresholds, bin_edges, method, interval, side, burn_in)
    prep = prepare(records, direct_phi, burn_in)
    keep = kept_biases(keep, prep.lambdas)
    phi, lam, cnt, passed, gr_all = _filtered_pool(prep, thr, side, gr_threshold, keep)
    events = _events(kind, thr, edges, side)
    mb = _quiet_mbar(phi, lam, cnt, confidence)
    _warn_poor_overlap(mb)
    if method == "analytic":
        est = _analytic_estimate(prep, passed, mb, thr, edges, side, events, confidence)
    else:
        est = _bootstrap_estimate(prep, mb, events, gr_threshold, confidence, seed, n_boot, interval, keep)
    df = _estimate_table(thr, edges, est, prep, confidence, side)
    df["method"] = method
    df.attrs.update({
        "lambdas": [float(x) for x in mb.lambdas], "gelman_rubin": {float(k): float(v) for k, v in gr_all.items()},
        "dropped": [float(k) for k, v in gr_all.items() if not (v < gr_threshold if keep is None else k in keep)],
        "keep": "gelman_rubin" if keep is None else sorted(float(k) for k in keep),
        "min_overlap": mb.min_neighbour_overlap(), "n_valid": est["n_valid"], "n_samples": int(mb.total_count),
        "side": side, "statistical_inefficiency": est["statistical_inefficiency"], "n_effective": est["n_effective"],
        "interval": interval if method == "bootstrap" else "asymptotic",
        "n_chains": int(prep.units.size) if method == "bootstrap" else None,
    })
    return df


def _checked_options(thresholds, bin_edges, method, interval, side, burn_in):
    """(kind ``"tail"``/``"bin"``, thresholds ``[S]`` or None, edges ``[B+1]`` or None, side) of a
    :func:`tps_mbar` call; a one-line ValueError naming the bad argument."""
    if (thresholds is None) == (bin_edges is None):
        raise ValueError("thresholds / bin_edges: give exactly one of them")
    if method not in ("bootstrap", "analytic"):
        raise ValueError(f"method must be 'bootstrap' or 'analytic', got {method!r}")
    if interval not in ("t", "percentile"):
        raise ValueError(f"interval must be 't' or 'percentile', got {interval!r}")
    side = check_side(side)
    if not (0 <= burn_in < 1):
        raise ValueError(f"burn_in must lie in [0, 1), got {burn_in!r}")
    kind = "tail" if thresholds is not None else "bin"
    thr = as_1d_finite("thresholds", thresholds) if kind == "tail" else None
    edges = check_edges(bin_edges) if kind == "bin" else None
    return kind, thr, edges, side


def _filtered_pool(prep: Prepared, thr, side, gr_threshold, keep=None):
    """Every segment whose bias passes GR (or is in ``keep``), plus the direct samples: (phi, lam, counts, passed λ,
    GR per λ) as :meth:`Prepared.pool`. ValueError when λ = 0 is lost or a threshold lies beyond every kept sample."""
    phi, lam, cnt, passed, gr_all = prep.pool(np.arange(len(prep.segments)), prep.direct_counts, gr_threshold, keep)
    if not np.any(lam == 0.0):
        raise ValueError(
            f"direct_phi: the λ = 0 bias {'failed the Gelman–Rubin filter' if keep is None else 'is not kept'} and "
            f"there are no direct samples; pass direct samples of p_M"
        )
    # the asked thresholds must be reached by the samples that survive burn-in and GR
    if thr is not None:
        far = thr > phi.max() if side == "upper" else thr < phi.min()
        if np.any(far):
            sign = "more negative" if side == "upper" else "more positive"
            raise ValueError(
                f"thresholds {thr[far].tolist()} lie beyond every sampled φ (range [{phi.min():.6g}, {phi.max():.6g}] "
                f"after burn-in and the GR filter, biases {passed}): extend the λ grid toward them ({sign} λ) or run "
                f"longer"
            )
    return phi, lam, cnt, passed, gr_all


def _warn_poor_overlap(mb: TiltedMBAR) -> None:
    """One OverlapWarning naming every pair of neighbouring biases that overlap less than ``mb.min_overlap``."""
    if np.any(mb.neighbour_overlap < mb.min_overlap):
        nb = mb.neighbours()
        warnings.warn(f"neighbouring biases overlap less than {mb.min_overlap:g}: "
                      f"{nb[~nb.ok][['lam_i', 'lam_j', 'overlap']].to_dict('records')}", OverlapWarning, stacklevel=3)


def _analytic_estimate(prep: Prepared, passed, mb: TiltedMBAR, thr, edges, side, events, confidence) -> dict:
    """P̂ and its asymptotic interval from MBAR with effective counts (:func:`analytic_mbar`); ``n`` counts the
    pooled samples of ``mb`` in each event (not effective counts)."""
    mb_a, g_by_lam = analytic_mbar(prep, passed, confidence, return_g=True)
    res = mb_a.tail(thr, side=side) if thr is not None else mb_a.density(edges)
    return {"p": res["p"].to_numpy(), "ci_low": res["ci_low"].to_numpy(), "ci_high": res["ci_high"].to_numpy(),
            "n": mb.interval_counts(*events), "n_valid": None, "statistical_inefficiency": g_by_lam,
            "n_effective": mb_a.total_count}


def _replica_log_p(prep: Prepared, events, gr_threshold, confidence, rng, keep=None):
    """``fn(units)`` for :func:`rea.stats.bootstrap_over_chains`: ln P̂ ``[S]`` of the events (ln 0 -> ``_FLOOR``)
    from the segments of the bootstrap ``units`` (repeats = distinct chains) after the GR filter and, from the
    second call on, direct counts drawn multinomially (the first call, on all units, keeps the observed ones)."""
    all_seg = np.arange(len(prep.segments))
    direct_p = prep.direct_counts / max(1, prep.direct_counts.sum())
    calls = [0]

    def replica(units):
        first = calls[0] == 0
        calls[0] += 1
        seg = np.concatenate([np.flatnonzero(prep.seg_units == u) for u in units]) if len(units) else all_seg
        dc = prep.direct_counts if first or prep.direct_counts.sum() == 0 else \
            rng.multinomial(prep.direct_counts.sum(), direct_p)
        r_phi, r_lam, r_cnt, _, _ = prep.pool(seg, dc, gr_threshold, keep)
        lp = _quiet_mbar(r_phi, r_lam, r_cnt, confidence).interval_log_p(*events)
        return np.where(np.isfinite(lp), lp, _FLOOR)

    return replica


def _warn_few_chains(n_chains: int, interval: str) -> None:
    """ChainCountWarning below the measured minimum of chains per direction for the bootstrap ``interval``."""
    if n_chains < MIN_CHAINS_T or (interval == "percentile" and n_chains <= PERCENTILE_UNDERCOVERS_AT):
        warnings.warn(
            f"bootstrap over {n_chains} chains per direction with the {interval} interval: on real toy TPS chains "
            f"(rea.validate.check_coverage_tps) 96 % intervals covered ≥ 90 % only with the t interval and ≥ "
            f"{MIN_CHAINS_T} chains (percentile: 0.85 at a 6.6e-6 tail with 16 chains, 0.70–0.78 with 4); run "
            f"more chains, use interval='t', or method='analytic'", ChainCountWarning, stacklevel=4)


def _bootstrap_estimate(prep: Prepared, mb: TiltedMBAR, events, gr_threshold, confidence, seed, n_boot,
                        interval, keep=None) -> dict:
    """P̂ of the pooled MBAR and its bootstrap interval over chains (replicas of :func:`_replica_log_p`, interval on
    ln P, clipped to P ≤ 1)."""
    p = np.exp(mb.interval_log_p(*events))
    n_ev = mb.interval_counts(*events)
    rng = np.random.default_rng(seed)
    replica = _replica_log_p(prep, events, gr_threshold, confidence, rng, keep)
    if prep.units.size < 2:
        raise ValueError(
            "records: the bootstrap over chains needs at least 2 chains per direction; use method='analytic'"
        )
    _warn_few_chains(int(prep.units.size), interval)
    bs = bootstrap_over_chains(prep.units, replica, n_boot=n_boot, confidence=confidence, rng=rng, on_error="nan",
                               interval=interval)
    with np.errstate(under="ignore", over="ignore"):
        # a probability is at most 1 (the t interval of a tail most replicas miss can reach beyond)
        ci_low, ci_high = np.exp(np.asarray(bs.ci_low)), np.exp(np.minimum(np.asarray(bs.ci_high), 0.0))
    return {"p": p, "ci_low": ci_low, "ci_high": ci_high, "n": n_ev, "n_valid": np.asarray(bs.n_valid).tolist(),
            "statistical_inefficiency": None, "n_effective": None}


# --------------------------------------------------------------------------------------------- the table


def _direct_columns(prep: Prepared, thr, edges, confidence, side, n_rows: int) -> dict:
    """``direct_k, direct_n, direct_p, direct_ci_low, direct_ci_high, direct_rel_ci_half`` of the direct samples
    (Wilson, :func:`rea.stats.direct_tail` / :func:`rea.stats.direct_density`); NaN without direct samples."""
    if not prep.direct_phi.size:
        return {c: np.full(n_rows, np.nan) for c in _DIRECT_COLUMNS}
    d = direct_tail(prep.direct_phi, thr, confidence, side) if thr is not None else \
        direct_density(prep.direct_phi, edges, confidence)
    out = {"direct_k": d["k"].to_numpy(), "direct_n": d["n"].to_numpy(), "direct_p": d["p"].to_numpy(),
           "direct_ci_low": d["ci_low"].to_numpy(), "direct_ci_high": d["ci_high"].to_numpy()}
    out["direct_rel_ci_half"] = (out["direct_ci_high"] - out["direct_ci_low"]) / (2 * out["direct_p"])
    return out


def _estimate_table(thr, edges, est: dict, prep: Prepared, confidence, side) -> pd.DataFrame:
    """One row per threshold or bin: the MBAR estimate ``est`` (p, ci_low, ci_high, n), for bins the densities, and
    the direct estimate beside it."""
    p, ci_low, ci_high = est["p"], est["ci_low"], est["ci_high"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"threshold": thr} if thr is not None else bin_columns(edges)
        out.update({"p": p, "log10_p": np.log10(p), "ci_low": ci_low, "ci_high": ci_high,
                    "rel_ci_half": (ci_high - ci_low) / (2 * p), "n": est["n"]})
        if thr is None:
            w = out["width"]
            out.update({"density": p / w, "density_low": ci_low / w, "density_high": ci_high / w})
        out.update(_direct_columns(prep, thr, edges, confidence, side, len(p)))
    return pd.DataFrame(out)


def effective_counts(prep: Prepared, passed) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    r"""Every post-burn-in sample of the biases ``passed`` plus the direct samples, with effective counts.

    Correlated chains carry less information than their length: a segment of n steps with statistical inefficiency
    g = 1 + 2τ is worth about n/g independent samples. Rather than thinning to every g-th sample (which can drop the
    only samples beyond a threshold, and whose result depends on the phase of the stride), every sample n is kept
    with weight c_n = 1/g_k, g_k being the statistical inefficiency of φ at its bias λ_k pooled over the chains
    (:func:`rea.stats.diagnostics.statistical_inefficiency_multiple`, capped at the segment length so that a segment
    counts at least once); direct samples are independent, c_n = 1. Then, with N_k^eff = Σ_{n∈k} c_n = N_k/g_k,

    .. math:: f_i = -\ln \sum_n \frac{c_n\, e^{-\lambda_i \phi_n}}{\sum_j N_j^{eff} e^{f_j - \lambda_j \phi_n}},
              \qquad \hat P(\phi \ge a) = \sum_n \frac{c_n\, 1[\phi_n \ge a]}{\sum_j N_j^{eff}
              e^{f_j - \lambda_j \phi_n}},

    i.e. MBAR with N_k → N_k/g_k. Because c_n is constant within a bias, the empirical law of every state is
    unchanged, so the estimator stays consistent (MBAR is consistent for any positive N_k); only the mixture
    weights change. Its asymptotic covariance is MBAR's, Θ = V S (I − S Vᵀ diag(N^eff) V S)⁺ S Vᵀ with
    WᵀW = V S² Vᵀ = Σ_n c_n w_n w_nᵀ -- the covariance of Σ_k N_k/g_k independent samples, which is what the
    correlated chains are worth to first order (the usual effective-sample-size approximation; it assumes the
    correlation of φ also describes that of the tail indicators and weights, and short chains underestimate g).

    Returns (phi ``[M]``, lam ``[M]``, counts ``[M]`` float (distinct (φ, λ) rows, summed c_n), {λ: g_k}).
    """
    phis, lams, ws = [prep.direct_values], [np.zeros(prep.direct_values.size)], \
        [np.asarray(prep.direct_counts, np.float64)]
    g_by_lam = {}
    for lam in sorted(passed):
        idx = [i for i, s in enumerate(prep.segments) if s["lam"] == lam]
        if not idx:
            continue
        series = [prep.segments[i]["phi"] for i in idx]
        n_max = max(x.size for x in series)
        g = statistical_inefficiency_multiple(series) if n_max >= 2 else 1.0
        g = float(min(g, n_max)) if np.isfinite(g) else float(n_max)  # a stuck bias counts once per segment
        g_by_lam[float(lam)] = g
        for i in idx:
            s = prep.segments[i]
            phis.append(s["values"])
            lams.append(np.full(s["values"].size, lam))
            ws.append(s["counts"] / g)
    phi, lam, w = np.concatenate(phis), np.concatenate(lams), np.concatenate(ws)
    key, inv = np.unique(np.stack([phi, lam], 1), axis=0, return_inverse=True)
    cnt = np.bincount(inv.ravel(), weights=w, minlength=key.shape[0])
    return key[:, 0], key[:, 1], cnt, g_by_lam


def analytic_mbar(prep: Prepared, passed, confidence, return_g: bool = False):
    """MBAR with effective counts (:func:`effective_counts`) over the direct samples and the biases ``passed``."""
    phi, lam, cnt, g_by_lam = effective_counts(prep, passed)
    mb = _quiet_mbar(phi, lam, cnt, confidence)
    return (mb, g_by_lam) if return_g else mb
