r"""``make validate``: the estimators against exact answers of the toy Markov LM (:mod:`rea.toy`, :mod:`rea.exact`).

Prints one table row per check and ends with ``validate: N/M checks passed`` (exit code 1 if any fails).

Checks (each a function returning a list of :class:`Check` rows, with a ``scale`` knob the tests turn down):

* :func:`check_tps_end_to_end` -- TPS (:func:`rea.tps.run_tps`) on the toy (count of " the"/" a"), both signs of
  λ, then :func:`rea.analysis.tps_mbar`: ln Z(λ) within 2 % or inside its CI, tails to ≈1e-8 inside bootstrap CIs;
* :func:`check_tps_deep_tail` -- TPS + MBAR at a tail of 1.4e-8 (count of 4 adverbs, L = 20, λ down to −1.75):
  the estimate inside its bootstrap CI of the exact value;
* :func:`check_log_partition` -- ln Z(λ) of MBAR over exact tilted samples on a λ grid of both signs;
* :func:`check_deep_tail` -- tail probabilities down to ≤ 1e-10 inside their 96 % bootstrap CIs, where direct
  sampling with the same token budget sees nothing;
* :func:`check_coverage` -- bootstrap and analytic 96 % CIs cover the exact tail in ≥ 85 % of ≥ 50 repeats;
* :func:`check_importance_sampling` -- Temperature and LogitBias proposals (:mod:`rea.sampling`) unbiased within CI;
* :func:`check_ari` -- the ARI observable of direct toy samples against :func:`rea.exact.ari_distribution`.

"Exact tilted samples": for an additive pair observable φ = Σ_τ g(x_τ, x_{τ+1}) the tilted law p_λ of the Markov toy
is itself a (time-inhomogeneous) Markov chain, the Doob transform of M_λ = A ∘ e^{−λG} with backward messages
β_τ = M_λ β_{τ+1}; :func:`exact_tilted_phi` samples it exactly (used where TPS would be too slow).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rea import exact
from rea.analysis import _analytic_mbar, prepare, tps_mbar
from rea.estimators import importance_estimate, z_value

PROMPT = "Once upon a time, in a big forest, there lived a"


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def _toy():
    from rea.models import load_model

    return load_model("toy", device="cpu")


# --------------------------------------------------------------------------------------------- exact tilted sampling


def exact_tilted_phi(lm, prompt, length: int, lam: float, n: int, rng, observable="repeats") -> np.ndarray:
    """φ of ``n`` exact samples of p_λ ∝ e^{−λφ} p_M for an additive pair observable of the toy -> float ``[n]``."""
    a = lm.transition_matrix
    g, g1 = exact.pair_observable(lm, observable)
    x0 = exact.prompt_state(lm, prompt)
    m, m1 = a * np.exp(-lam * g), a * np.exp(-lam * g1)
    betas = [np.ones(a.shape[0])]  # betas[k] = message after position L − k
    for _ in range(length - 1):
        b = m @ betas[-1]
        betas.append(b / b.max())
    betas = betas[::-1]  # betas[t] for completion position t = 0..L−1
    x = np.full(n, x0)
    phi = np.zeros(n)
    for t in range(length):
        mat = m1 if t == 0 else m
        gg = g1 if t == 0 else g
        p = mat * betas[t][None, :]
        cum = np.cumsum(p / p.sum(1, keepdims=True), axis=1)
        u = rng.random(n)
        nxt = np.minimum((cum[x] < u[:, None]).sum(1), a.shape[0] - 1)
        phi += gg[x, nxt]
        x = nxt
    return phi


def records_from_exact(lm, prompt, length, lambdas, n_chains, n_steps, rng, observable="repeats") -> pd.DataFrame:
    """A TPS-shaped records table (chain, direction, lambda, step, phi, cut) of exact tilted samples.

    Every nonzero λ gets ``n_chains`` chains of ``n_steps`` i.i.d. exact samples (direction = sign of λ).
    """
    rows = []
    for lam in lambdas:
        if lam == 0:
            continue
        d = 1 if lam > 0 else -1
        phi = exact_tilted_phi(lm, prompt, length, lam, n_chains * n_steps, rng, observable)
        rows.append(pd.DataFrame({
            "chain": np.repeat(np.arange(n_chains) + (0 if d > 0 else n_chains), n_steps), "direction": d,
            "lambda": float(lam), "step": np.tile(np.arange(n_steps), n_chains), "phi": phi, "cut": 0,
        }))
    return pd.concat(rows, ignore_index=True)


def _tail_exact(dist, thr):
    return np.exp(dist.log_tail(np.asarray(thr, float)))


# --------------------------------------------------------------------------------------------- checks


DET_TOKENS = [" the", " a"]


@contextlib.contextmanager
def single_thread():
    """Run torch on one intra-op thread (restored afterwards).

    The toy's ops are tiny ([B, 53]); with torch's default thread pool on a loaded machine each op waits for its
    worker threads to be scheduled, which made toy TPS ~100x slower (measured: 101 s -> 1.0 s for the same run).
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


ADV_TOKENS = [" once", " there", " quickly", " extraordinarily"]
"""The adverbs of the toy except the self-looping " very": the observable of the 1e-8 TPS tail check/benchmark."""


def token_count(tokens):
    """φ = number of tokens of the set ``tokens`` in each completion (additive: rea.exact has its pmf and ln Z)."""
    ids = np.array([i for t in tokens for i in _toy().encode(t)])

    def count(samples) -> np.ndarray:
        return np.isin(np.asarray(samples.tokens), ids).sum(axis=1).astype(np.float64)

    count.__name__ = "count_" + "_".join(t.strip() for t in tokens)
    return count


TAIL_L = 20
TAIL_THRESHOLD = 10.0
TAIL_LAMBDAS = (-0.5, -1.0, -1.5, -1.75)


def _toy_count_tps(tokens, length, lambdas_pos, lambdas_neg, n_steps, n_chains, scale, seed, n_direct):
    """TPS on the toy for φ = count of ``tokens`` plus direct samples and the exact pmf.

    Returns (result, direct φ, L, exact pmf, tokens of the direct samples).
    """
    from rea.sampling import sample
    from rea.tps import TPSConfig, run_tps

    lm = _toy()
    obs = token_count(tokens)
    cfg = TPSConfig(prompt=PROMPT, length=length, lambdas_pos=lambdas_pos, lambdas_neg=lambdas_neg,
                    n_steps=n_steps, n_chains=n_chains, seed=seed, observable=obs, checkpoint_every=10**7)
    with single_thread(), tempfile.TemporaryDirectory() as tmp:
        res = run_tps(lm, cfg, tmp, progress=False)
        n_direct = n_direct or max(500, int(2000 * scale))
        direct = obs(sample(lm, PROMPT, n_direct, length, seed=seed + 1, progress=False))
    dist = exact.count_distribution(lm, PROMPT, length, "count", tokens=tokens)
    return res, direct, length, dist, n_direct * length


def toy_tail_tps_run(scale: float = 1.0, seed: int = 0, n_direct: int | None = None):
    """TPS on the toy for φ = count of " once"/" there"/" quickly"/" extraordinarily" (L = 20), P(φ ≥ 10) = 1.4e-8.

    Negative biases only (the upper tail), λ ∈ {−0.5, −1, −1.5, −1.75}, 16 chains × 6000·scale steps per bias.
    Why this observable: forward shooting mixes the kept prefix only through early cuts, whose acceptance falls
    like the independence-sampler acceptance E_{p_λ × p_M}[min(1, e^{−λΔφ})]; among the toy's token-set counts
    with a tail near 1e-8 this adverb count has the highest such acceptance at a bias putting ≥ 1 % of its mass
    beyond the tail, without a self-loop-driven metastable burst state (adjectives with " little little" or
    punctuation with "!!!" stick chains for thousands of steps). Measured (16 chains, 8000 steps/bias): GR 1.08 at
    λ = −1.75, 1.55 at λ = −2 (dropped); the integrated autocorrelation time at −1.75 is still ~300 steps.
    Returns (result, direct φ, L, exact pmf, tokens of the direct samples, threshold).
    """
    res, direct, L, dist, tokens = _toy_count_tps(
        ADV_TOKENS, TAIL_L, [], list(TAIL_LAMBDAS), max(100, int(6000 * scale)), 16, scale, seed, n_direct
    )
    return res, direct, L, dist, tokens, TAIL_THRESHOLD


def check_tps_deep_tail(scale: float = 1.0, seed: int = 0) -> list[Check]:
    """TPS + MBAR end to end at a 1e-8 tail: P(adverb count ≥ 10), L = 20, inside its 96 % bootstrap CI."""
    res, direct, L, dist, _, a = toy_tail_tps_run(scale, seed)
    p = float(np.exp(dist.log_tail(a)))
    try:
        df = tps_mbar(res, direct, [a], seed=seed)
    except ValueError as err:  # the biases reaching φ ≥ a failed Gelman–Rubin
        return [Check("TPS+MBAR tail ≈1e-8, toy adverb count L=20", False, f"exact {p:.3g}; {err}")]
    ok = bool(df.ci_low.iloc[0] <= p <= df.ci_high.iloc[0])
    return [Check("TPS+MBAR tail ≈1e-8, toy adverb count L=20", ok,
                  f"P(φ ≥ {a:g}): exact {p:.3g}, est {df.p.iloc[0]:.3g} [{df.ci_low.iloc[0]:.3g}, "
                  f"{df.ci_high.iloc[0]:.3g}]; GR {', '.join(f'{k:g}:{v:.2f}' for k, v in df.attrs['gelman_rubin'].items())}"
                  f"; dropped λ {df.attrs['dropped']}")]


def toy_tps_run(scale: float = 1.0, seed: int = 0, n_direct: int | None = None):
    """TPS on the toy for φ = count of " the"/" a" (L = 30), λ ∈ {−1.5, −1, −0.5, 0.5, 1}, plus direct samples.

    Measured limits of forward-shooting TPS at this budget (a few hundred steps per bias): Repeats on the toy is
    bimodal (the "ha ha ha…" runs; the exact tilted mean jumps from 3 to 7 between λ = −0.5 and −1 at L = 12) and the
    chains do not cross that jump (GR ≫ 1.1); for the determiner count the chains' means are close to exact down to
    λ = −3, but biases beyond |λ| ≈ 1.5 still fail GR < 1.1 after 400 steps (the kept prefix changes only when the cut
    is early), so the grid stops there. Deeper tails are checked with exact tilted samples (check_deep_tail) and,
    through TPS itself, on a better-mixing observable by :func:`toy_tail_tps_run` (check_tps_deep_tail).
    Returns (result, direct φ, L, exact pmf, tokens of the direct samples).
    """
    return _toy_count_tps(DET_TOKENS, 30, [0.5, 1.0], [-0.5, -1.0, -1.5], max(30, int(400 * scale)), 8, scale, seed,
                          n_direct)


def check_tps_end_to_end(scale: float = 1.0, seed: int = 0) -> list[Check]:
    """TPS + MBAR end to end on the toy (count of " the"/" a", L = 30): ln Z(λ) of both signs and tails."""
    lm = _toy()
    res, direct, L, dist, _ = toy_tps_run(scale, seed)
    out = []
    prep = prepare(res, direct)
    mb = _analytic_mbar(prep, list(prep.lambdas), 0.96)
    grid = np.array([-1.5, -1.25, -0.75, -0.25, 0.25, 0.75, 1.0])
    lz = mb.log_partition_at(grid)
    truth = exact.log_partition(lm, PROMPT, L, grid, "count", tokens=DET_TOKENS)
    ok = (np.abs(lz.log_z - truth) <= 0.02 * np.abs(truth)) | ((lz.ci_low <= truth) & (truth <= lz.ci_high))
    worst = np.max(np.abs(lz.log_z - truth) / np.abs(truth))
    out.append(Check("TPS+MBAR ln Z(λ), toy det-count L=30", bool(ok.all()),
                     f"{int(ok.sum())}/{ok.size} λ in [-1.5, 1] within 2 % or CI (worst rel. err {worst:.2%})"))
    thr = np.array([6.0, 8.0, 9.0])
    df = tps_mbar(res, direct, thr, seed=seed)
    p = _tail_exact(dist, thr)
    inside = (df.ci_low <= p) & (p <= df.ci_high)
    out.append(Check("TPS+MBAR tails P(φ ≥ 6, 8, 9), bootstrap CI", bool(inside.all()),
                     "exact " + ", ".join(f"{x:.2g}" for x in p) + "; est " +
                     ", ".join(f"{x:.2g}" for x in df.p) + f"; rel CI½ {df.rel_ci_half.iloc[-1]:.2f} at "
                     f"{p[-1]:.0e}; dropped λ {df.attrs['dropped']}"))
    return out


def _exact_pipeline(lm, L, lambdas, n_chains, n_steps, n_direct, rng):
    rec = records_from_exact(lm, PROMPT, L, lambdas, n_chains, n_steps, rng)
    direct = exact_tilted_phi(lm, PROMPT, L, 0.0, n_direct, rng)
    return rec, direct


def check_log_partition(scale: float = 1.0, seed: int = 1) -> list[Check]:
    """MBAR ln Z(λ) over exact tilted samples (Repeats, L = 40) on a λ grid of both signs."""
    lm = _toy()
    rng = np.random.default_rng(seed)
    L = 40
    lams = np.array([-3.0, -2.0, -1.5, -1.0, -0.75, -0.5, -0.25, 0.0, 0.5, 1.0, 2.0])
    rec, direct = _exact_pipeline(lm, L, lams, 4, max(50, int(500 * scale)), max(500, int(5000 * scale)), rng)
    mb = _analytic_mbar(prepare(rec, direct), list(lams), 0.96)
    grid = np.array([-3.0, -2.5, -1.25, -0.6, -0.25, 0.25, 0.75, 1.5, 2.0])
    lz = mb.log_partition_at(grid)
    truth = exact.log_partition(lm, PROMPT, L, grid, "repeats")
    ok = (np.abs(lz.log_z - truth) <= 0.02 * np.abs(truth)) | ((lz.ci_low <= truth) & (truth <= lz.ci_high))
    return [Check("MBAR ln Z(λ), exact tilted samples, L=40", bool(ok.all()),
                  f"{int(ok.sum())}/{ok.size} λ ∈ [-3, 2] within 2 % or CI (worst rel. err "
                  f"{np.max(np.abs(lz.log_z - truth) / np.abs(truth)):.2%})")]


def check_deep_tail(scale: float = 1.0, seed: int = 2) -> list[Check]:
    """Tails ≤ 1e-10 inside bootstrap CIs (Repeats, L = 50); direct sampling at the same budget sees nothing."""
    lm = _toy()
    rng = np.random.default_rng(seed)
    L = 50
    lams = np.array([-3.0, -2.0, -1.5, -1.0, -0.75, -0.5, -0.25, 0.0, 0.5])
    n_chains, n_steps, n_direct = 8, max(50, int(300 * scale)), max(500, int(5000 * scale))
    rec, direct = _exact_pipeline(lm, L, lams, n_chains, n_steps, n_direct, rng)
    dist = exact.count_distribution(lm, PROMPT, L, "repeats")
    thr = np.array([30.0, 45.0, 48.0, 49.0])
    p = _tail_exact(dist, thr)
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


def check_coverage(scale: float = 1.0, seed: int = 3, repeats: int = 50) -> list[Check]:
    """Coverage of 96 % CIs (bootstrap over chains and analytic) over independent repeats (Repeats, L = 30)."""
    lm = _toy()
    rng = np.random.default_rng(seed)
    L = 30
    lams = np.array([-2.0, -1.0, -0.75, -0.5, -0.25, 0.0, 0.5])
    thr = np.array([15.0, 28.0])
    p = _tail_exact(exact.count_distribution(lm, PROMPT, L, "repeats"), thr)
    n_steps, n_direct = max(40, int(200 * scale)), max(300, int(2000 * scale))
    hit_b = np.zeros(thr.size)
    hit_a = np.zeros(thr.size)
    for r in range(repeats):
        rec, direct = _exact_pipeline(lm, L, lams, 10, n_steps, n_direct, rng)
        b = tps_mbar(rec, direct, thr, n_boot=100, seed=int(rng.integers(2**31)))
        a = tps_mbar(rec, direct, thr, method="analytic")
        hit_b += (b.ci_low <= p) & (p <= b.ci_high)
        hit_a += (a.ci_low <= p) & (p <= a.ci_high)
    rb, ra = hit_b / repeats, hit_a / repeats
    return [
        Check(f"coverage, bootstrap 96 % CI, {repeats} repeats", bool(np.all(rb >= 0.85)),
              f"P(rep ≥ 15) = {p[0]:.1e}: {rb[0]:.0%}; P(rep ≥ 28) = {p[1]:.1e}: {rb[1]:.0%}"),
        Check(f"coverage, analytic 96 % CI, {repeats} repeats", bool(np.all(ra >= 0.85)),
              f"P(rep ≥ 15): {ra[0]:.0%}; P(rep ≥ 28): {ra[1]:.0%}"),
    ]


def check_importance_sampling(scale: float = 1.0, seed: int = 4) -> list[Check]:
    """Importance sampling with Temperature and LogitBias proposals against the exact tail (Repeats, L = 30)."""
    from rea.observables import repeats
    from rea.sampling import LogitBias, Temperature, sample

    lm = _toy()
    L = 30
    n = max(500, int(2000 * scale))
    dist = exact.count_distribution(lm, PROMPT, L, "repeats")
    thr = np.array([8.0, 14.0])
    p = _tail_exact(dist, thr)
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
    from rea.estimators import direct_tail
    from rea.observables import ari
    from rea.sampling import sample

    lm = _toy()
    L = 20
    n = max(1000, int(10000 * scale))
    dist = exact.ari_distribution(lm, PROMPT, L)
    phi = ari(sample(lm, PROMPT, n, L, seed=seed, progress=False))
    qs = np.quantile(phi, [0.02, 0.25, 0.5, 0.75, 0.98])
    df = direct_tail(phi, qs)
    p = _tail_exact(dist, qs)
    inside = (df.ci_low <= p) & (p <= df.ci_high)
    z = abs(phi.mean() - dist.mean()) / (phi.std() / np.sqrt(n))
    ok = bool(inside.sum() >= 4 and z < z_value(0.999))
    return [Check("ARI on the toy vs exact ari_distribution", ok,
                  f"{int(inside.sum())}/5 tails inside Wilson CIs; mean {phi.mean():.3f} vs exact {dist.mean():.3f} "
                  f"(z = {z:.1f})")]


CHECKS = [check_log_partition, check_deep_tail, check_importance_sampling, check_ari, check_coverage,
          check_tps_end_to_end, check_tps_deep_tail]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rea.validate", description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="sample sizes relative to the default (1.0)")
    ap.add_argument("--repeats", type=int, default=50, help="independent repeats of the coverage check (≥ 50)")
    args = ap.parse_args(argv)
    rows: list[Check] = []
    t_all = time.perf_counter()
    print(f"{'check':<52} {'result':<6} {'time':>6}  detail")
    for fn in CHECKS:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = fn(args.scale, repeats=args.repeats) if fn is check_coverage else fn(args.scale)
        except Exception as err:  # a crash is a failed check, reported on one line
            res = [Check(fn.__name__, False, f"{type(err).__name__}: {err}")]
        dt = time.perf_counter() - t0
        for c in res:
            print(f"{c.name:<52} {'PASS' if c.passed else 'FAIL':<6} {dt:>5.0f}s  {c.detail}", flush=True)
        rows.extend(res)
    n_ok = sum(c.passed for c in rows)
    print(f"total time {time.perf_counter() - t_all:.0f} s")
    print(f"validate: {n_ok}/{len(rows)} checks passed")
    return 0 if n_ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
