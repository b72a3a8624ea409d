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
1. Burn-in: drop the first 10 % of every bias segment (:func:`rea.diagnostics.drop_burn_in`).
2. Convergence filter: Gelman–Rubin per bias over the chains (:func:`rea.diagnostics.gelman_rubin`); biases with
   GR ≥ 1.1 (or undefined GR) are dropped.
3. MBAR (:class:`rea.estimators.TiltedMBAR`) over direct samples (λ = 0) and the surviving segments, with identical
   (λ, φ) samples merged into counts (exact; fast for discrete φ such as Repeats or ARI).
4. Errors, ``method="bootstrap"`` [REA App. C]: 100 replicas of :func:`rea.diagnostics.bootstrap_over_chains`, each
   resampling whole chains with replacement (a unit is the j-th chain of every direction, so each replica keeps J
   chains per direction) and the direct samples (multinomially), then redoing 1–3; the 96 % CI is the 3rd smallest /
   3rd largest replica. Burn-in depends only on a segment itself, so it is computed once per segment (identical to
   recomputing it per replica); GR and MBAR are recomputed per replica from the replica's chains (a chain drawn twice
   counts as two chains).
   ``method="analytic"``: each surviving segment is subsampled by its statistical inefficiency
   (:func:`rea.diagnostics.subsample`) and MBAR's asymptotic log-normal interval is used (fast; no replicas).

Output: a tidy DataFrame, one row per threshold (tail probabilities) or bin (densities) -- see :func:`tps_mbar`.
Bad input raises a one-line ``ValueError`` naming the argument.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from rea.diagnostics import bootstrap_over_chains, drop_burn_in, subsample
from rea.estimators import OverlapWarning, TiltedMBAR, _as_1d_finite, _check_edges, _check_side, direct_density, \
    direct_tail

__all__ = ["tps_samples", "tps_mbar", "tps_tokens", "Prepared", "prepare"]


# --------------------------------------------------------------------------------------------- input


def tps_samples(records) -> pd.DataFrame:
    """Normalise TPS records to columns ``chain, lam, step, phi, direction`` and check them.

    Accepts a :class:`rea.tps.TPSResult` or a DataFrame with ``chain``, ``lambda`` or ``lam``, ``step``, ``phi``
    (``direction`` optional: taken as the sign of λ where missing, λ = 0 segments as +1).
    Raises ValueError for an empty table, missing columns, non-finite φ or λ, and bias segments whose chains have
    different lengths.
    """
    if hasattr(records, "records") and isinstance(getattr(records, "records"), pd.DataFrame):
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


def tps_tokens(records, length: int, n_initial: int | None = None) -> int:
    """Tokens a TPS run generated: Σ over moves of (L − cut) (the regenerated suffix) plus L per initial sample.

    ``n_initial`` defaults to the number of distinct chains (each starts from one direct sample of L tokens).
    """
    if hasattr(records, "records"):
        records = records.records
    cut = records["cut"].to_numpy(dtype=np.int64)
    if n_initial is None:
        n_initial = records["chain"].nunique()
    return int(np.sum(length - cut) + n_initial * length)


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
            d = _as_1d_finite("direct_phi", direct_phi)
            self.direct_phi = d
            self.direct_values, self.direct_counts = np.unique(d, return_counts=True)
        else:
            self.direct_phi = np.zeros(0)
            self.direct_values, self.direct_counts = np.zeros(0), np.zeros(0, np.int64)

    def gelman_rubin(self, seg_index: np.ndarray) -> dict:
        """GR per λ for the segments ``seg_index`` (repeats = distinct chains), from per-segment mean/var/length.

        Same formula as :func:`rea.diagnostics.gelman_rubin` (chains of equal length L): B = L/(J−1)Σ(ȳ_j − ȳ)²,
        W = mean s_j², GR = ((L−1)/L·W + B/L)/W; NaN with fewer than 2 chains or L < 2, inf when W = 0 < B.
        """
        out = {}
        lam_of = self.seg_lams[seg_index]
        for lam in np.unique(lam_of):
            idx = seg_index[lam_of == lam]
            L = min(self.segments[i]["n"] for i in idx)
            if idx.size < 2 or L < 2:
                out[lam] = np.nan
                continue
            means = np.array([self.segments[i]["mean"] for i in idx])
            W = np.mean([self.segments[i]["var"] for i in idx])
            B = L / (idx.size - 1) * np.sum((means - means.mean()) ** 2)
            out[lam] = (np.inf if B > 0 else np.nan) if W == 0 else ((L - 1) / L * W + B / L) / W
        return out

    def pool(self, seg_index: np.ndarray, direct_counts: np.ndarray, gr_threshold: float):
        """(phi, lam, counts, kept λ, GR dict) of the segments passing GR plus the direct samples."""
        gr = self.gelman_rubin(seg_index)
        passed = {lam for lam, g in gr.items() if g < gr_threshold}
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


def _point_log_p(mb: TiltedMBAR, events_lo, events_hi, closed_hi) -> np.ndarray:
    """ln P̂(lo ≤ φ < hi) (≤ hi where ``closed_hi``) under p_M from a solved MBAR, without errors."""
    lw = np.log(mb.counts) - mb.log_den  # ln W_n0 = f_0 − ln D_n with f_0 = 0, times the multiplicity
    phi = mb.phi
    order = np.argsort(phi, kind="stable")
    ps, lws = phi[order], lw[order]
    m = lws.max()
    cum = np.concatenate([[0.0], np.cumsum(np.exp(lws - m))])
    lo = np.searchsorted(ps, events_lo, side="left")
    hi = np.where(closed_hi, np.searchsorted(ps, events_hi, side="right"), np.searchsorted(ps, events_hi, side="left"))
    tot = np.clip(cum[hi] - cum[lo], 0.0, None)
    with np.errstate(divide="ignore"):
        return np.log(tot) + m


def _events(kind, thresholds, edges, side):
    if kind == "tail":
        thr = thresholds
        if side == "upper":
            return thr, np.full(thr.size, np.inf), np.ones(thr.size, bool)
        return np.full(thr.size, -np.inf), thr, np.ones(thr.size, bool)
    lo, hi = edges[:-1], edges[1:]
    closed = np.zeros(lo.size, bool)
    closed[-1] = True
    return lo, hi, closed


_FLOOR = -1e300  # ln 0 in replicas (bootstrap_over_chains drops non-finite replicas; an estimate of 0 is valid)


# --------------------------------------------------------------------------------------------- the one call


def tps_mbar(
    records,
    direct_phi=None,
    thresholds=None,
    bin_edges=None,
    *,
    side: str = "upper",
    method: str = "bootstrap",
    n_boot: int = 100,
    burn_in: float = 0.1,
    gr_threshold: float = 1.1,
    confidence: float = 0.96,
    seed=0,
) -> pd.DataFrame:
    r"""MBAR estimates of tail probabilities or bin probabilities/densities from TPS records and direct samples.

    Parameters
    ----------
    records : :class:`rea.tps.TPSResult` or records DataFrame (see :func:`tps_samples`); None for direct only
    direct_phi : float ``[N₀]`` φ of direct samples of p_M (λ = 0); may be None if the records have a λ = 0 bias
    thresholds : float ``[S]`` -> tail rows P(φ ≥ a) (``side="lower"``: P(φ ≤ a)); or
    bin_edges : float ``[B+1]`` -> bin rows P(φ ∈ bin), density = P/width (``numpy.histogram`` bins)
    method : ``"bootstrap"`` (over chains, ``n_boot`` replicas, percentile CI) or ``"analytic"`` (subsample by
        statistical inefficiency, MBAR's asymptotic CI)
    burn_in : fraction of each bias segment dropped (0.1); gr_threshold : biases with GR ≥ this are dropped (1.1)
    confidence : CI level (0.96); seed : bootstrap RNG seed

    Returns
    -------
    DataFrame, one row per threshold (input order) or bin, with columns
    ``threshold`` (tails) or ``left, right, center, width`` (bins); ``p, log10_p, ci_low, ci_high, rel_ci_half``
    (MBAR; rel_ci_half = (ci_high − ci_low)/(2p)), ``n`` (pooled samples in the event); for bins also
    ``density, density_low, density_high``; ``direct_k, direct_n, direct_p, direct_ci_low, direct_ci_high,
    direct_rel_ci_half`` (Wilson; NaN columns without direct samples); ``method``. ``df.attrs`` holds ``lambdas``
    (biases used), ``gelman_rubin`` (λ -> GR on all chains), ``dropped`` (λ failing GR), ``min_overlap``
    (smallest neighbour overlap), ``n_valid`` (finite replicas; bootstrap), ``n_samples``.
    """
    if (thresholds is None) == (bin_edges is None):
        raise ValueError("thresholds / bin_edges: give exactly one of them")
    if method not in ("bootstrap", "analytic"):
        raise ValueError(f"method must be 'bootstrap' or 'analytic', got {method!r}")
    side = _check_side(side)
    if not (0 <= burn_in < 1):
        raise ValueError(f"burn_in must lie in [0, 1), got {burn_in!r}")
    kind = "tail" if thresholds is not None else "bin"
    thr = _as_1d_finite("thresholds", thresholds) if kind == "tail" else None
    edges = _check_edges(bin_edges) if kind == "bin" else None
    prep = prepare(records, direct_phi, burn_in)
    all_seg = np.arange(len(prep.segments))
    phi, lam, cnt, passed, gr_all = prep.pool(all_seg, prep.direct_counts, gr_threshold)
    if not np.any(lam == 0.0):
        raise ValueError(
            "direct_phi: the λ = 0 bias failed the Gelman–Rubin filter and there are no direct samples; pass direct "
            "samples of p_M"
        )
    # the asked thresholds must be reached by the samples that survive burn-in and GR
    if kind == "tail":
        far = thr > phi.max() if side == "upper" else thr < phi.min()
        if np.any(far):
            sign = "more negative" if side == "upper" else "more positive"
            raise ValueError(
                f"thresholds {thr[far].tolist()} lie beyond every sampled φ (range [{phi.min():.6g}, {phi.max():.6g}] "
                f"after burn-in and the GR filter, biases {passed}): extend the λ grid toward them ({sign} λ) or run "
                f"longer"
            )
    lo, hi, closed = _events(kind, thr, edges, side)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        mb = TiltedMBAR(phi, lam, counts=cnt, confidence=confidence)
    overlap_min = float(mb.neighbour_overlap.min()) if mb.K > 1 else np.nan
    if np.any(mb.neighbour_overlap < mb.min_overlap):
        nb = mb.neighbours()
        warnings.warn(f"neighbouring biases overlap less than {mb.min_overlap:g}: "
                      f"{nb[~nb.ok][['lam_i', 'lam_j', 'overlap']].to_dict('records')}", OverlapWarning, stacklevel=2)
    n_valid = None
    if method == "analytic":
        mb_a = _analytic_mbar(prep, passed, confidence)
        res = mb_a.tail(thr, side=side) if kind == "tail" else mb_a.density(edges)
        p, ci_low, ci_high, n_ev = (res["p"].to_numpy(), res["ci_low"].to_numpy(), res["ci_high"].to_numpy(),
                                    res["n"].to_numpy())
        n_samples = int(mb_a.counts.sum())
    else:
        p = np.exp(_point_log_p(mb, lo, hi, closed))
        n_ev = _event_counts(mb, lo, hi, closed)
        rng = np.random.default_rng(seed)
        direct_p = prep.direct_counts / max(1, prep.direct_counts.sum())
        calls = [0]

        def replica(units):
            first = calls[0] == 0
            calls[0] += 1
            seg = np.concatenate([np.flatnonzero(prep.seg_units == u) for u in units]) if len(units) else all_seg
            dc = prep.direct_counts if first or prep.direct_counts.sum() == 0 else \
                rng.multinomial(prep.direct_counts.sum(), direct_p)
            r_phi, r_lam, r_cnt, _, _ = prep.pool(seg, dc, gr_threshold)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OverlapWarning)
                r_mb = TiltedMBAR(r_phi, r_lam, counts=r_cnt, confidence=confidence)
            lp = _point_log_p(r_mb, lo, hi, closed)
            return np.where(np.isfinite(lp), lp, _FLOOR)

        units = prep.units if prep.units.size >= 2 else None
        if units is None:
            raise ValueError(
                "records: the bootstrap over chains needs at least 2 chains per direction; use method='analytic'"
            )
        bs = bootstrap_over_chains(units, replica, n_boot=n_boot, confidence=confidence, rng=rng, on_error="nan")
        with np.errstate(under="ignore"):
            ci_low, ci_high = np.exp(np.asarray(bs.ci_low)), np.exp(np.asarray(bs.ci_high))
        n_valid = np.asarray(bs.n_valid)
        n_samples = int(mb.counts.sum())

    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"threshold": thr} if kind == "tail" else {
            "left": edges[:-1], "right": edges[1:], "center": (edges[:-1] + edges[1:]) / 2, "width": np.diff(edges)}
        out.update({"p": p, "log10_p": np.log10(p), "ci_low": ci_low, "ci_high": ci_high,
                    "rel_ci_half": (ci_high - ci_low) / (2 * p), "n": n_ev})
        if kind == "bin":
            w = np.diff(edges)
            out.update({"density": p / w, "density_low": ci_low / w, "density_high": ci_high / w})
        if prep.direct_phi.size:
            d = direct_tail(prep.direct_phi, thr, confidence, side) if kind == "tail" else \
                direct_density(prep.direct_phi, edges, confidence).rename(columns={"p_low": "ci_low", "p_high": "ci_high"})
            out.update({"direct_k": d["k"].to_numpy(), "direct_n": d["n"].to_numpy(), "direct_p": d["p"].to_numpy(),
                        "direct_ci_low": d["ci_low"].to_numpy(), "direct_ci_high": d["ci_high"].to_numpy()})
            out["direct_rel_ci_half"] = (out["direct_ci_high"] - out["direct_ci_low"]) / (2 * out["direct_p"])
        else:
            for c in ("direct_k", "direct_n", "direct_p", "direct_ci_low", "direct_ci_high", "direct_rel_ci_half"):
                out[c] = np.full(len(p), np.nan)
    df = pd.DataFrame(out)
    df["method"] = method
    df.attrs.update({
        "lambdas": [float(x) for x in mb.lambdas], "gelman_rubin": {float(k): float(v) for k, v in gr_all.items()},
        "dropped": [float(k) for k, v in gr_all.items() if not v < gr_threshold], "min_overlap": overlap_min,
        "n_valid": None if n_valid is None else n_valid.tolist(), "n_samples": n_samples, "side": side,
    })
    return df


def _event_counts(mb, lo, hi, closed):
    ps = mb.phi
    c = mb.counts
    out = np.zeros(lo.size, dtype=np.int64)
    for i in range(lo.size):
        sel = (ps >= lo[i]) & ((ps <= hi[i]) if closed[i] else (ps < hi[i]))
        out[i] = int(round(c[sel].sum()))
    return out


def _analytic_mbar(prep: Prepared, passed, confidence) -> TiltedMBAR:
    """MBAR over direct samples and every surviving segment subsampled by its statistical inefficiency."""
    phis, lams = [prep.direct_phi], [np.zeros(prep.direct_phi.size)]
    for s in prep.segments:
        if s["lam"] not in passed:
            continue
        idx = subsample(s["phi"]) if s["phi"].size > 1 else np.array([0])
        phis.append(s["phi"][idx])
        lams.append(np.full(idx.size, s["lam"]))
    phi, lam = np.concatenate(phis), np.concatenate(lams)
    key, cnt = np.unique(np.stack([phi, lam], 1), axis=0, return_counts=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        return TiltedMBAR(key[:, 0], key[:, 1], counts=cnt, confidence=confidence)
