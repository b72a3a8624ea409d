"""The single-run checks: MBAR ln Z(λ) and deep tails on exact tilted samples, TPS + MBAR end to end on real toy
chains, importance sampling, and the ARI observable (coverage over repeats is :mod:`rea.validate.coverage`)."""

from __future__ import annotations

import numpy as np

from rea import exact
from rea.observables import ari, repeats
from rea.sampling import LogitBias, Temperature, sample
from rea.stats import direct_tail, importance_estimate, z_value
from rea.tps import analytic_mbar, prepare, tps_mbar
from rea.validate.exact_records import exact_pipeline, exact_tilted_phi
from rea.validate.toy import DET_TOKENS, PROMPT, tail_exact, toy_model
from rea.validate.toy_tps import TAIL_LAMBDAS, TAIL_THRESHOLD, toy_tail_tps_run, toy_tps_run
from rea.validate.verdicts import Check, log_z_within


def check_tps_deep_tail(scale: float = 1.0, seed: int = 0, lambdas=TAIL_LAMBDAS,
                        threshold: float = TAIL_THRESHOLD) -> list[Check]:
    """TPS + MBAR end to end at a 1e-8 tail: P(adverb count ≥ 10), L = 20, inside its 96 % bootstrap CI.

    ``lambdas``/``threshold`` give a fast variant (same pipeline, shallower tail); a 1e-8 tail needs λ = −1.75, whose
    chains pass Gelman–Rubin only after ~6000 steps (g ≈ 300-550).
    """
    res, direct, L, dist, _, a = toy_tail_tps_run(scale, seed, lambdas=lambdas, threshold=threshold)
    p = float(np.exp(dist.log_tail(a)))
    name = f"TPS+MBAR tail ≈{p:.0e}, toy adverb count L=20".replace("e-0", "e-")
    try:
        df = tps_mbar(res, direct, [a], seed=seed)
    except ValueError as err:  # the biases reaching φ ≥ a failed Gelman–Rubin
        return [Check(name, False, f"exact {p:.3g}; {err}")]
    # [0, 1] (tail hits in ≤ ~2 chains) would "cover" anything: require an informative interval
    ok = bool(df.ci_low.iloc[0] <= p <= df.ci_high.iloc[0] < 1.0)
    return [Check(name, ok,
                  f"P(φ ≥ {a:g}): exact {p:.3g}, est {df.p.iloc[0]:.3g} [{df.ci_low.iloc[0]:.3g}, "
                  f"{df.ci_high.iloc[0]:.3g}]; "
                  f"GR {', '.join(f'{k:g}:{v:.2f}' for k, v in df.attrs['gelman_rubin'].items())}"
                  f"; dropped λ {df.attrs['dropped']}")]


def check_tps_end_to_end(scale: float = 1.0, seed: int = 0, lambdas_neg=(-0.5, -1.0, -1.5), lambdas_pos=(0.5, 1.0),
                         thresholds=(6.0, 8.0, 9.0), confidence: float = 0.96) -> list[Check]:
    """TPS + MBAR end to end on the toy (count of " the"/" a", L = 30): ln Z(λ) of both signs and tails.

    ln Z is checked on a grid inside the sampled λ range. The tests run a shorter, asymmetric ladder (a ladder
    symmetric in ±λ with equal counts makes MBAR blind to a flipped acceptance sign, which swaps p_λ and p_−λ) at
    ``confidence=0.999``: a regression check of one run should fail on a broken pipeline, not on the 4 % of runs a
    96 % interval misses (coverage itself is measured over repeats by :func:`check_coverage_tps`).
    """
    lm = toy_model()
    res, direct, L, dist, _ = toy_tps_run(scale, seed, lambdas_neg=lambdas_neg, lambdas_pos=lambdas_pos)
    out = []
    prep = prepare(res, direct)
    mb = analytic_mbar(prep, list(prep.lambdas), 0.96)
    grid = np.array([-1.5, -1.25, -0.75, -0.25, 0.25, 0.75, 1.0])
    grid = grid[(grid >= min(lambdas_neg)) & (grid <= max(lambdas_pos))]
    lz = mb.log_partition_at(grid)
    truth = exact.log_partition(lm, PROMPT, L, grid, "count", tokens=DET_TOKENS)
    ok, detail = log_z_within(lz, truth, mb.total_count)
    out.append(Check("TPS+MBAR ln Z(λ), toy det-count L=30", bool(ok.all()),
                     f"λ ∈ [{grid.min():g}, {grid.max():g}]: {detail}"))
    thr = np.asarray(thresholds, dtype=np.float64)
    p = tail_exact(dist, thr)
    try:
        df = tps_mbar(res, direct, thr, seed=seed, confidence=confidence)
    except ValueError as err:  # a bias failed Gelman–Rubin and φ ≥ 9 was not reached without it
        return out + [Check(f"TPS+MBAR tails P(φ ≥ {', '.join(f'{a:g}' for a in thr)}), bootstrap CI", False,
                            str(err))]
    inside = (df.ci_low <= p) & (p <= df.ci_high) & (df.ci_high < 1.0)  # [0, 1] would cover anything
    out.append(Check(f"TPS+MBAR tails P(φ ≥ {', '.join(f'{a:g}' for a in thr)}), bootstrap CI", bool(inside.all()),
                     "exact " + ", ".join(f"{x:.2g}" for x in p) + "; est " +
                     ", ".join(f"{x:.2g}" for x in df.p) + f"; rel CI½ {df.rel_ci_half.iloc[-1]:.2f} at "
                     f"{p[-1]:.0e}; dropped λ {df.attrs['dropped']}"))
    return out


def check_log_partition(scale: float = 1.0, seed: int = 1) -> list[Check]:
    """MBAR ln Z(λ) over exact tilted samples (Repeats, L = 40) on a λ grid of both signs."""
    lm = toy_model()
    rng = np.random.default_rng(seed)
    L = 40
    lams = np.array([-3.0, -2.0, -1.5, -1.0, -0.75, -0.5, -0.25, 0.0, 0.5, 1.0, 2.0])
    rec, direct = exact_pipeline(lm, L, lams, 4, max(50, int(500 * scale)), max(500, int(5000 * scale)), rng)
    mb = analytic_mbar(prepare(rec, direct), list(lams), 0.96)
    grid = np.array([-3.0, -2.5, -1.25, -0.6, -0.25, 0.25, 0.75, 1.5, 2.0])
    lz = mb.log_partition_at(grid)
    truth = exact.log_partition(lm, PROMPT, L, grid, "repeats")
    ok, detail = log_z_within(lz, truth, mb.total_count)
    return [Check("MBAR ln Z(λ), exact tilted samples, L=40", bool(ok.all()), f"λ ∈ [-3, 2]: {detail}")]


def check_deep_tail(scale: float = 1.0, seed: int = 2) -> list[Check]:
    """Tails ≤ 1e-10 inside bootstrap CIs (Repeats, L = 50); direct sampling at the same budget sees nothing."""
    lm = toy_model()
    rng = np.random.default_rng(seed)
    L = 50
    lams = np.array([-3.0, -2.0, -1.5, -1.0, -0.75, -0.5, -0.25, 0.0, 0.5])
    n_chains, n_steps, n_direct = 8, max(50, int(300 * scale)), max(500, int(5000 * scale))
    rec, direct = exact_pipeline(lm, L, lams, n_chains, n_steps, n_direct, rng)
    dist = exact.count_distribution(lm, PROMPT, L, "repeats")
    thr = np.array([30.0, 45.0, 48.0, 49.0])
    p = tail_exact(dist, thr)
    df = tps_mbar(rec, direct, thr, n_boot=100, seed=seed)
    inside = (df.ci_low <= p) & (p <= df.ci_high)
    budget = (len(rec) + n_direct) * L
    d_phi = exact_tilted_phi(lm, PROMPT, L, 0.0, budget // L, rng)
    k = np.array([(d_phi >= a).sum() for a in thr])
    deep = p <= 1e-10
    ok = bool(inside.all() and deep.any() and np.all(k[deep] == 0))
    return [Check("MBAR tails down to ≤1e-10, L=50, bootstrap CI", ok,
                  f"exact {', '.join(f'{x:.1e}' for x in p)}; inside CI {int(inside.sum())}/{inside.size}; "
                  f"direct at the same {budget:.1e} tokens: k = {k.tolist()}")]


def check_importance_sampling(scale: float = 1.0, seed: int = 4) -> list[Check]:
    """Importance sampling with Temperature and LogitBias proposals against the exact tail (Repeats, L = 30)."""
    lm = toy_model()
    L = 30
    n = max(500, int(2000 * scale))
    dist = exact.count_distribution(lm, PROMPT, L, "repeats")
    thr = np.array([8.0, 14.0])
    p = tail_exact(dist, thr)
    out = []
    ha = lm.encode(" ha")
    for name, prop in (("Temperature(0.8)", Temperature(0.8)), ("LogitBias(' ha', +1.5)", LogitBias(ha, 1.5))):
        s = sample(lm, PROMPT, n, L, seed=seed, proposal=prop, progress=False)
        phi = repeats(s)
        est = importance_estimate(np.stack([phi >= a for a in thr], 1).astype(float), s.log_weights)
        inside = (est.ci_low <= p) & (p <= est.ci_high)
        out.append(Check(f"importance sampling, {name}", bool(inside.all()),
                         f"P(rep ≥ 8, 14): exact {p[0]:.2e}, {p[1]:.2e}; IS {est.value[0]:.2e}, {est.value[1]:.2e} "
                         f"(ESS {est.ess:.0f}/{n})"))
    return out


def check_ari(scale: float = 1.0, seed: int = 5) -> list[Check]:
    """ARI of direct toy samples (L = 20) against the exact ARI distribution: tails inside Wilson CIs, mean."""
    lm = toy_model()
    L = 20
    n = max(1000, int(10000 * scale))
    dist = exact.ari_distribution(lm, PROMPT, L)
    phi = ari(sample(lm, PROMPT, n, L, seed=seed, progress=False))
    qs = np.quantile(phi, [0.02, 0.25, 0.5, 0.75, 0.98])
    df = direct_tail(phi, qs)
    p = tail_exact(dist, qs)
    inside = (df.ci_low <= p) & (p <= df.ci_high)
    z = abs(phi.mean() - dist.mean()) / (phi.std() / np.sqrt(n))
    ok = bool(inside.sum() >= 4 and z < z_value(0.999))
    return [Check("ARI on the toy vs exact ari_distribution", ok,
                  f"{int(inside.sum())}/5 tails inside Wilson CIs; mean {phi.mean():.3f} vs exact {dist.mean():.3f} "
                  f"(z = {z:.1f})")]
