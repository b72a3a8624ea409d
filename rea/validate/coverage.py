"""Coverage of the 96 % intervals over repeats: MBAR on exact tilted samples, TPS + MBAR on real toy chains, and
importance sampling in rare tails; each passes by :func:`rea.validate.verdicts.coverage_verdict` or its own rule."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rea import exact
from rea.sampling import LogitBias, sample
from rea.stats import ISIntervalWarning, importance_estimate
from rea.tps import MIN_CHAINS_T, prepare, tps_mbar
from rea.validate.exact_records import exact_pipeline
from rea.validate.toy import PROMPT, single_thread, tail_exact, token_count, toy_model
from rea.validate.toy_tps import (
    COV_CHAINS,
    COV_L,
    COV_LAMBDAS,
    COV_STEPS,
    COV_THRESHOLDS,
    COV_TOKENS,
    toy_coverage_runs,
)
from rea.validate.verdicts import Check, coverage_verdict


def check_coverage(scale: float = 1.0, seed: int = 3, repeats: int = 50) -> list[Check]:
    """Coverage of 96 % CIs on EXACT i.i.d. tilted samples labelled as chains (Repeats, L = 30), ≥ 50 repeats.

    Isolates MBAR and the interval constructions from MCMC correlation (every "chain" is i.i.d.); coverage on real,
    correlated TPS chains is :func:`check_coverage_tps`.
    """
    lm = toy_model()
    rng = np.random.default_rng(seed)
    L = 30
    lams = np.array([-2.0, -1.0, -0.75, -0.5, -0.25, 0.0, 0.5])
    thr = np.array([15.0, 28.0])
    p = tail_exact(exact.count_distribution(lm, PROMPT, L, "repeats"), thr)
    n_steps, n_direct = max(40, int(200 * scale)), max(300, int(2000 * scale))
    hit = {"bootstrap": [], "analytic": []}
    for _ in range(repeats):
        rec, direct = exact_pipeline(lm, L, lams, 10, n_steps, n_direct, rng)
        b = tps_mbar(rec, direct, thr, n_boot=100, seed=int(rng.integers(2**31)))
        a = tps_mbar(rec, direct, thr, method="analytic")
        hit["bootstrap"].append((b.ci_low <= p) & (p <= b.ci_high))
        hit["analytic"].append((a.ci_low <= p) & (p <= a.ci_high))
    out = []
    for method, what in (("bootstrap", "t interval over 10 chains"), ("analytic", "asymptotic")):
        ok, pooled, per = coverage_verdict(np.array(hit[method]))
        out.append(Check(f"coverage_exact_tilted_{method}", ok,
                         f"{pooled:.2f} ({repeats} repeats, exact i.i.d. tilted samples as chains, Repeats L={L}, "
                         f"{what}, 96 % CI; P(rep ≥ 15) = {p[0]:.1e}: {per[0]:.2f}, P(rep ≥ 28) = {p[1]:.1e}: "
                         f"{per[1]:.2f})"))
    return out


INTERVAL_VARIANTS = {"bootstrap": dict(method="bootstrap"), "analytic": dict(method="analytic"),
                     "percentile": dict(method="bootstrap", interval="percentile")}
"""The TPS+MBAR intervals whose coverage :func:`check_coverage_tps` measures (``percentile``: the paper's, reported
in the bootstrap row only), as keyword arguments of :func:`rea.tps.mbar.tps_mbar`."""


@dataclass
class TPSCoverage:
    """Tally of TPS+MBAR intervals over R repeats with S tails, per variant of :data:`INTERVAL_VARIANTS`: ``covered``
    bool ``[R, S]``, ``sides`` (misses with the interval below / above the truth) int ``[2]``, ``errors`` (messages of
    the runs that raised); over all variants: ``dropped`` (runs with a bias failing Gelman–Rubin), ``g_deep`` (the
    statistical inefficiency at the strongest bias, analytic) and ``vacuous`` (bootstrap intervals reaching 1)."""

    covered: dict
    sides: dict
    errors: dict
    dropped: int = 0
    g_deep: list = field(default_factory=list)
    vacuous: int = 0


def tally_tps_coverage(runs, thr, p, seed: int, lambdas) -> TPSCoverage:
    """Run :func:`rea.tps.mbar.tps_mbar` with every interval variant on each repeat ``(records, direct φ)`` of
    ``runs`` and tally which intervals cover the exact tails ``p [S]`` at thresholds ``thr [S]``. A repeat whose
    pipeline raises is a miss for every tail (its ``covered`` row stays False)."""
    n = len(runs)
    tally = TPSCoverage({k: np.zeros((n, thr.size), bool) for k in INTERVAL_VARIANTS},
                        {k: np.zeros(2, int) for k in INTERVAL_VARIANTS}, {k: [] for k in INTERVAL_VARIANTS})
    for r, (rec, direct) in enumerate(runs):
        prep = prepare(rec, direct)
        gr = prep.gelman_rubin(np.arange(len(prep.segments)))
        tally.dropped += any(not v < 1.1 for v in gr.values())
        for k, kw in INTERVAL_VARIANTS.items():
            try:
                df = tps_mbar(rec, direct, thr, seed=seed * 7919 + r, **kw)
            except ValueError as err:
                tally.errors[k].append(str(err)[:90])
                continue
            tally.covered[k][r] = (df.ci_low <= p) & (p <= df.ci_high)
            if k == "bootstrap":
                tally.vacuous += int(np.sum(df.ci_high >= 1.0))
            tally.sides[k] += [int(np.sum(df.ci_high < p)), int(np.sum(df.ci_low > p))]
            if k == "analytic":
                tally.g_deep.append(df.attrs["statistical_inefficiency"].get(min(lambdas), np.nan))
    return tally


def under_coverage_causes(k: str, tally: TPSCoverage) -> list[str]:
    """The measured causes of variant ``k`` under-covering: runs that raised, biases dropped by Gelman–Rubin, too few
    chains for the bootstrap's t interval, misses mostly on one side -- else "intervals too narrow"."""
    causes = []
    if tally.errors[k]:
        causes.append(f"{len(tally.errors[k])} runs raised ({tally.errors[k][0]})")
    if tally.dropped:
        causes.append(f"{tally.dropped} runs had a bias dropped by Gelman–Rubin (chains too short for GR < 1.1)")
    if k == "bootstrap" and COV_CHAINS < MIN_CHAINS_T:
        causes.append(f"only {COV_CHAINS} chains for the bootstrap (measured minimum {MIN_CHAINS_T})")
    below, above = tally.sides[k]
    if below > 2 * max(1, above):
        causes.append("intervals too low (estimator skewed or biased low: chains not mixed?)")
    elif above > 2 * max(1, below):
        causes.append("intervals too high")
    if not causes:
        causes.append("intervals too narrow")
    return causes


def tps_coverage_row(k: str, what: str, tally: TPSCoverage, setting: str, tails: str, lambdas) -> Check:
    """The ``coverage_tps_mbar_<k>`` row: pooled rate by :func:`coverage_verdict`, per-tail rates, misses by side,
    failed runs, and (bootstrap) the [0, 1] intervals and the percentile interval or (analytic) the median g."""
    ok, pooled, per = coverage_verdict(tally.covered[k])
    detail = (f"{pooled:.2f} ({setting}, {what}; per tail {tails}: {'/'.join(f'{x:.2f}' for x in per)}; "
              f"misses below/above {tally.sides[k][0]}/{tally.sides[k][1]}; failed runs {len(tally.errors[k])}")
    if k == "bootstrap":
        _, pp, per_p = coverage_verdict(tally.covered["percentile"])
        detail += (f"; [0, 1] intervals {tally.vacuous}; paper's percentile interval {pp:.2f} "
                   f"({'/'.join(f'{x:.2f}' for x in per_p)})")
    else:
        g = tally.g_deep
        detail += f"; g at λ = {min(lambdas):g}: median {np.nanmedian(g) if g else np.nan:.0f}"
    if not ok:
        detail += "; WARNING: under-covers: " + "; ".join(under_coverage_causes(k, tally))
    return Check(f"coverage_tps_mbar_{k}", ok, detail + ")")


def check_coverage_tps(scale: float = 1.0, seed: int = 6, repeats: int = 50, lambdas=COV_LAMBDAS,
                       thresholds=COV_THRESHOLDS) -> list[Check]:
    """Coverage of TPS+MBAR 96 % intervals on REAL toy TPS chains: bootstrap (t interval) and analytic (effective
    counts), over ``repeats`` ≥ 50 independent repeats of :func:`rea.validate.toy_tps.toy_coverage_runs`, at tails
    1.6e-2, 7.8e-4, 6.6e-6.

    A repeat whose pipeline raises (a bias dropped by Gelman–Rubin leaving a threshold unreached) counts as a miss
    for every tail. The pass rule is :func:`coverage_verdict`. When a method fails the detail says WARNING and names
    the measured cause (:func:`under_coverage_causes`). The detail of the bootstrap row also reports the paper's
    percentile interval (same runs, other replicas) and how many bootstrap intervals were the uninformative [0, 1]
    (tail hits in ≤ ~2 chains, see :func:`rea.stats.bootstrap_over_chains`). ``lambdas``/``thresholds``
    give the fast test's shallower variant.
    At scale 1.0: 2.5 min on one core (measured 152 s: ~125 s the one batched TPS run of 800 chains × 4000 steps).
    """
    lm = toy_model()
    thr = np.array(thresholds, dtype=float)
    p = tail_exact(exact.count_distribution(lm, PROMPT, COV_L, "count", tokens=COV_TOKENS), thr)
    runs = toy_coverage_runs(scale, seed, repeats, lambdas=lambdas)
    n_steps = max(200, int(COV_STEPS * scale))
    tally = tally_tps_coverage(runs, thr, p, seed, lambdas)
    setting = (f"{len(runs)} repeats, real TPS chains, toy det-count L={COV_L}, {COV_CHAINS} chains × {n_steps} "
               f"steps at λ ∈ {{{', '.join(f'{x:g}' for x in lambdas)}}}, 96 % CI")
    tails = f"P(φ ≥ {'/'.join(f'{x:g}' for x in thr)}) = {'/'.join(f'{x:.1e}' for x in p)}"
    return [tps_coverage_row(k, what, tally, setting, tails, lambdas)
            for k, what in (("bootstrap", "t interval"), ("analytic", "effective counts N_k/g_k"))]


# --------------------------------------------------------------------------------------------- IS interval coverage

IS_COV_PROMPT = "Oh, ha"
"""Prompt of :func:`check_is_coverage` (Markov state " ha"; no other check uses it)."""
IS_COV_TOKENS = [" cat", " dog", " bird", " forest", " tree", " time", " rhinoceros", " river", " elephant",
                 " hippopotamus", " friend"]
"""The toy's nouns: φ = their count in L = 16 tokens; P(φ ≥ 6) = 2.7e-5, P(φ ≥ 7) = 2.0e-7."""
IS_COV_L = 16
IS_COV_THRESHOLDS = (6.0, 7.0)
IS_COV_BIASES = (2.0, 1.5)


def is_coverage_runs(seed: int = 6, repeats: int = 100, n: int = 3000, biases=IS_COV_BIASES) -> pd.DataFrame:
    """Repeated importance sampling of the noun-count tail of the toy with ``LogitBias(nouns, b)`` proposals.

    Per bias b, repeat and threshold a: ``n`` fresh samples, :func:`rea.stats.importance_estimate` of
    P(φ ≥ a) with its default (effective-count) and its normal interval, and whether it issued an
    :class:`rea.stats.ISIntervalWarning`. Returns a DataFrame with columns ``bias, repeat, threshold, p (exact),
    hits, value, ci_low, ci_high, normal_low, normal_high, warned, covered, covered_normal``.
    """

    lm = toy_model()
    ids = [i for t in IS_COV_TOKENS for i in lm.encode(t)]
    thr = np.array(IS_COV_THRESHOLDS)
    p = tail_exact(exact.count_distribution(lm, IS_COV_PROMPT, IS_COV_L, "count", tokens=IS_COV_TOKENS), thr)
    count = token_count(IS_COV_TOKENS)
    rng = np.random.default_rng(seed)
    rows = []
    with single_thread():
        for bias in biases:
            for r in range(repeats):
                s = sample(lm, IS_COV_PROMPT, n, IS_COV_L, seed=int(rng.integers(2**31)),
                           proposal=LogitBias(ids, bias), progress=False)
                phi = count(s)
                for a, pa in zip(thr, p):
                    f = (phi >= a).astype(float)
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        e = importance_estimate(f, s.log_weights)
                    old = importance_estimate(f, s.log_weights, interval="normal")
                    rows.append({"bias": bias, "repeat": r, "threshold": a, "p": pa, "hits": int(f.sum()),
                                 "value": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high,
                                 "normal_low": old.ci_low, "normal_high": old.ci_high,
                                 "warned": any(issubclass(w.category, ISIntervalWarning) for w in caught)})
    df = pd.DataFrame(rows)
    df["covered"] = (df.ci_low <= df.p) & (df.p <= df.ci_high)
    df["covered_normal"] = (df.normal_low <= df.p) & (df.p <= df.normal_high)
    return df


def check_is_coverage(scale: float = 1.0, seed: int = 6, repeats: int = 100) -> list[Check]:
    """Coverage of importance-sampling 96 % intervals in rare tails (toy noun count, L = 16, n = 3000 per repeat).

    LogitBias(nouns, +2) and (+1.5) proposals at P = 2.7e-5 and 2.0e-7 (:func:`is_coverage_runs`). One row per
    (proposal, tail): passes when the effective-count interval covers in ≥ 90 % of the repeats, or when every miss
    came with an :class:`rea.stats.ISIntervalWarning`. The detail also gives the old normal interval's coverage.
    ``scale`` is unused (n = 3000 is part of the regime); ``repeats`` sets the precision.
    """
    df = is_coverage_runs(seed, repeats)
    out = []
    for (bias, _threshold), g in df.groupby(["bias", "threshold"], sort=False):
        cov, miss = float(g.covered.mean()), g[~g.covered]
        ok = bool(cov >= 0.90 or miss.warned.all())
        out.append(Check(
            "coverage_is_rare_tail", ok,
            f"{cov:.2f} (LogitBias{bias:+g}, P={g.p.iloc[0]:.1e}, {len(g)} repeats); normal interval "
            f"{g.covered_normal.mean():.2f}; no hit in {(g.hits == 0).mean():.0%}; warned in {g.warned.mean():.0%} "
            f"of runs, {int(miss.warned.sum())}/{len(miss)} misses",
        ))
    return out
