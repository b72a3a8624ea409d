r"""``make validate``: the estimators against exact answers of the toy Markov LM (:mod:`rea.lm.toy`, :mod:`rea.exact`).

Prints one table row per check, then one line per measured coverage, ``coverage_<what>: <rate> (<repeats, setting,
per-tail rates, …>)`` (the rows named ``coverage_*``), and ends with ``validate: N/M checks passed`` (exit code 1 if
any fails). ``--repeats`` overrides the repeats of every check that takes them.

Checks (each a function returning a list of :class:`Check` rows, with a ``scale`` knob the tests turn down):

* :func:`check_tps_end_to_end` -- TPS (:func:`rea.tps.run_tps`) on the toy (count of " the"/" a"), both signs of
  λ, then :func:`rea.tps.mbar.tps_mbar`: |ln Ẑ(λ) − ln Z(λ)| ≤ max(3.29σ, 1/√N_eff) nats (:func:`log_z_within`),
  tails to 6e-5 inside informative bootstrap CIs;
* :func:`check_tps_deep_tail` -- TPS + MBAR at a tail of 1.4e-8 (count of 4 adverbs, L = 20, λ down to −1.75):
  the estimate inside its bootstrap CI of the exact value;
* :func:`check_log_partition` -- ln Z(λ) of MBAR over exact tilted samples on a λ grid of both signs (same bound);
* :func:`check_deep_tail` -- tail probabilities down to ≤ 1e-10 inside their 96 % bootstrap CIs, where direct
  sampling with the same token budget sees nothing;
* :func:`check_coverage` -- bootstrap and analytic 96 % CIs on exact i.i.d. tilted samples labelled as chains
  (``coverage_exact_tilted_*``), ≥ 50 repeats, pass rule :func:`coverage_verdict` (pooled ≥ 0.90);
* :func:`check_coverage_tps` -- the same on REAL toy TPS chains (``coverage_tps_mbar_bootstrap`` / ``_analytic``):
  50 repeats × 16 chains × 2000 steps, tails 1.6e-2, 7.8e-4, 6.6e-6; says WARNING and the cause when it fails;
* :func:`check_importance_sampling` -- Temperature and LogitBias proposals (:mod:`rea.sampling`) unbiased within CI;
* :func:`check_ari` -- the ARI observable of direct toy samples against :func:`rea.exact.ari_distribution`.
* :func:`check_is_coverage` -- importance-sampling 96 % intervals cover ≥ 90 % in tails of 2.7e-5, 2.0e-7 or warn.

"Exact tilted samples": for an additive pair observable φ = Σ_τ g(x_τ, x_{τ+1}) the tilted law p_λ of the Markov toy
is itself a (time-inhomogeneous) Markov chain, the Doob transform of M_λ = A ∘ e^{−λG} with backward messages
β_τ = M_λ β_{τ+1}; :func:`exact_tilted_phi` samples it exactly (used where TPS would be too slow).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rea import exact
from rea.tps import MIN_CHAINS_T, analytic_mbar, prepare, tps_mbar
from rea.stats import importance_estimate, z_value

PROMPT = "Once upon a time, in a big forest, there lived a"


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def _toy():
    from rea.lm import load_model

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


def toy_tail_tps_run(scale: float = 1.0, seed: int = 0, n_direct: int | None = None, lambdas=TAIL_LAMBDAS,
                     threshold: float = TAIL_THRESHOLD):
    """TPS on the toy for φ = count of " once"/" there"/" quickly"/" extraordinarily" (L = 20), P(φ ≥ 10) = 1.4e-8.

    Negative biases only (the upper tail), λ ∈ {−0.5, −1, −1.5, −1.75}, 16 chains × 6000·scale steps per bias.
    Why this observable: forward shooting mixes the kept prefix only through early cuts, whose acceptance falls
    like the independence-sampler acceptance E_{p_λ × p_M}[min(1, e^{−λΔφ})]; among the toy's token-set counts
    with a tail near 1e-8 this adverb count has the highest such acceptance at a bias putting ≥ 1 % of its mass
    beyond the tail, without a self-loop-driven metastable burst state (adjectives with " little little" or
    punctuation with "!!!" stick chains for thousands of steps). Measured (16 chains, 8000 steps/bias): GR 1.08 at
    λ = −1.75, 1.55 at λ = −2 (dropped); the integrated autocorrelation time at −1.75 is still ~300 steps.
    ``lambdas``/``threshold`` replace the grid and the tail (the fast test uses a shorter grid and a shallower tail).
    Returns (result, direct φ, L, exact pmf, tokens of the direct samples, threshold).
    """
    res, direct, L, dist, tokens = _toy_count_tps(
        ADV_TOKENS, TAIL_L, [], list(lambdas), max(100, int(6000 * scale)), 16, scale, seed, n_direct
    )
    return res, direct, L, dist, tokens, float(threshold)


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
                  f"{df.ci_high.iloc[0]:.3g}]; GR {', '.join(f'{k:g}:{v:.2f}' for k, v in df.attrs['gelman_rubin'].items())}"
                  f"; dropped λ {df.attrs['dropped']}")]


def toy_tps_run(scale: float = 1.0, seed: int = 0, n_direct: int | None = None, lambdas_neg=(-0.5, -1.0, -1.5),
                lambdas_pos=(0.5, 1.0)):
    """TPS on the toy for φ = count of " the"/" a" (L = 30), λ ∈ {−1.5, −1, −0.5, 0.5, 1}, plus direct samples.

    16 chains per direction × max(100, 1000·scale) steps per bias: the statistical inefficiency at λ = −1.5 is
    g ≈ 50, so chains of 400 steps failed Gelman–Rubin there about half the time (GR ≈ 1 + g/L), dropping the bias
    and leaving P(φ ≥ 9) to luck; 1000 steps pass (GR 1.03–1.09 measured).

    Measured limits of forward-shooting TPS at this budget (a few hundred steps per bias): Repeats on the toy is
    bimodal (the "ha ha ha…" runs; the exact tilted mean jumps from 3 to 7 between λ = −0.5 and −1 at L = 12) and the
    chains do not cross that jump (GR ≫ 1.1); for the determiner count the chains' means are close to exact down to
    λ = −3, but biases beyond |λ| ≈ 1.5 still fail GR < 1.1 after 400 steps (the kept prefix changes only when the cut
    is early), so the grid stops there. Deeper tails are checked with exact tilted samples (check_deep_tail) and,
    through TPS itself, on a better-mixing observable by :func:`toy_tail_tps_run` (check_tps_deep_tail).
    Returns (result, direct φ, L, exact pmf, tokens of the direct samples).
    """
    return _toy_count_tps(DET_TOKENS, 30, list(lambdas_pos), list(lambdas_neg), max(100, int(1000 * scale)), 16, scale,
                          seed, n_direct)


def check_tps_end_to_end(scale: float = 1.0, seed: int = 0, lambdas_neg=(-0.5, -1.0, -1.5), lambdas_pos=(0.5, 1.0),
                         thresholds=(6.0, 8.0, 9.0), confidence: float = 0.96) -> list[Check]:
    """TPS + MBAR end to end on the toy (count of " the"/" a", L = 30): ln Z(λ) of both signs and tails.

    ln Z is checked on a grid inside the sampled λ range. The tests run a shorter, asymmetric ladder (a ladder
    symmetric in ±λ with equal counts makes MBAR blind to a flipped acceptance sign, which swaps p_λ and p_−λ) at
    ``confidence=0.999``: a regression check of one run should fail on a broken pipeline, not on the 4 % of runs a
    96 % interval misses (coverage itself is measured over repeats by :func:`check_coverage_tps`).
    """
    lm = _toy()
    res, direct, L, dist, _ = toy_tps_run(scale, seed, lambdas_neg=lambdas_neg, lambdas_pos=lambdas_pos)
    out = []
    prep = prepare(res, direct)
    mb = analytic_mbar(prep, list(prep.lambdas), 0.96)
    grid = np.array([-1.5, -1.25, -0.75, -0.25, 0.25, 0.75, 1.0])
    grid = grid[(grid >= min(lambdas_neg)) & (grid <= max(lambdas_pos))]
    lz = mb.log_partition_at(grid)
    truth = exact.log_partition(lm, PROMPT, L, grid, "count", tokens=DET_TOKENS)
    ok, detail = log_z_within(lz, truth, mb.counts.sum())
    out.append(Check("TPS+MBAR ln Z(λ), toy det-count L=30", bool(ok.all()),
                     f"λ ∈ [{grid.min():g}, {grid.max():g}]: {detail}"))
    thr = np.asarray(thresholds, dtype=np.float64)
    p = _tail_exact(dist, thr)
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


LOG_Z_K = z_value(0.999)
"""ln Z checks allow |ln Ẑ − ln Z| ≤ max(LOG_Z_K·σ, 1/√N_eff): z at 99.9 %, since each check compares ~10 λ at once."""


def log_z_within(lz: pd.DataFrame, truth, n_eff: float) -> tuple[np.ndarray, str]:
    r"""|ln Ẑ(λ) − ln Z(λ)| ≤ max(k·σ_λ, 1/√N_eff) per λ, k = z_{99.9 %} ≈ 3.29 -> (ok ``[T]``, one-line detail).

    σ_λ is MBAR's asymptotic standard error (with effective counts for correlated chains). The floor 1/√N_eff nats
    (N_eff: effective pooled sample size, 0.005–0.02 nats here) is the resolution of a ratio estimated from N_eff
    samples; it only matters near λ = 0, where σ_λ → 0 (exactly 0 at the reference) and round-off (~1e-15) or the
    solver's tolerance (1e-10) would otherwise decide. It replaces the old "within 2 % of |ln Z| or inside the 96 %
    CI", which at ln Z ≈ 7–25 allowed 0.14–0.5 nats. Measured over seeds (see the tests): worst |err|/σ ≈ 1.5–3.1.
    """
    err = np.abs(lz.log_z.to_numpy() - np.asarray(truth, dtype=np.float64))
    sigma = lz.sigma.to_numpy()
    floor = 1.0 / np.sqrt(float(n_eff))
    bound = np.maximum(LOG_Z_K * sigma, floor)
    ok = err <= bound
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sigma > 0, err / sigma, 0.0)
    i = int(np.argmax(err - bound))
    return ok, (f"{int(ok.sum())}/{ok.size} with |Δln Z| ≤ max({LOG_Z_K:.2f}σ, {floor:.3f} nats); worst "
                f"|Δ| = {err.max():.3f} nats, max |Δ|/σ = {ratio.max():.2f} (tightest at λ = {lz.lam.iloc[i]:g}: "
                f"{err[i]:.3f} vs {bound[i]:.3f})")


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
    mb = analytic_mbar(prepare(rec, direct), list(lams), 0.96)
    grid = np.array([-3.0, -2.5, -1.25, -0.6, -0.25, 0.25, 0.75, 1.5, 2.0])
    lz = mb.log_partition_at(grid)
    truth = exact.log_partition(lm, PROMPT, L, grid, "repeats")
    ok, detail = log_z_within(lz, truth, mb.counts.sum())
    return [Check("MBAR ln Z(λ), exact tilted samples, L=40", bool(ok.all()), f"λ ∈ [-3, 2]: {detail}")]


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


def coverage_verdict(covered) -> tuple[bool, float, np.ndarray]:
    """Pass rule of the coverage checks for a boolean ``covered[R, S]`` (R repeats, S tails; a failed run = miss).

    The headline rate pools all R·S intervals; the check passes when it is ≥ 0.90 and no single tail is
    significantly below 0.90 (one-sided binomial test, p < 0.01: with 50 repeats a tail fails at ≤ 39/50).
    Requiring every tail ≥ 0.90 would fail a perfectly calibrated 96 % interval in ~5 % of checks per tail (binomial
    noise of 50 repeats), ~25 % over six rows. Returns (passed, pooled rate, per-tail rates).
    """
    from scipy import stats

    covered = np.asarray(covered, dtype=bool)
    R = covered.shape[0]
    per = covered.mean(axis=0)
    low = stats.binom.cdf(covered.sum(axis=0), R, 0.90) < 0.01
    pooled = float(covered.mean())
    return bool(pooled >= 0.90 and not low.any()), pooled, per


def check_coverage(scale: float = 1.0, seed: int = 3, repeats: int = 50) -> list[Check]:
    """Coverage of 96 % CIs on EXACT i.i.d. tilted samples labelled as chains (Repeats, L = 30), ≥ 50 repeats.

    Isolates MBAR and the interval constructions from MCMC correlation (every "chain" is i.i.d.); coverage on real,
    correlated TPS chains is :func:`check_coverage_tps`.
    """
    lm = _toy()
    rng = np.random.default_rng(seed)
    L = 30
    lams = np.array([-2.0, -1.0, -0.75, -0.5, -0.25, 0.0, 0.5])
    thr = np.array([15.0, 28.0])
    p = _tail_exact(exact.count_distribution(lm, PROMPT, L, "repeats"), thr)
    n_steps, n_direct = max(40, int(200 * scale)), max(300, int(2000 * scale))
    hit = {"bootstrap": [], "analytic": []}
    for r in range(repeats):
        rec, direct = _exact_pipeline(lm, L, lams, 10, n_steps, n_direct, rng)
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


# --------------------------------------------------------------------------------------------- real TPS coverage

COV_TOKENS = DET_TOKENS
COV_L = 24
COV_LAMBDAS = (-1.0, -2.0)
COV_THRESHOLDS = (6.0, 7.0, 8.0)
"""P(" the"/" a" count ≥ 6, 7, 8) at L = 24: 1.6e-2, 7.8e-4, 6.6e-6 (tilted mass at λ = −2: 54 %, 15 %, 0.9 %)."""
COV_CHAINS = 16
COV_STEPS = 2000
COV_DIRECT = 2000
COV_PER_RUN = 50


def toy_coverage_runs(scale: float = 1.0, seed: int = 6, repeats: int = 50, n_chains: int = COV_CHAINS,
                      per_run: int = COV_PER_RUN, lambdas=COV_LAMBDAS) -> list[tuple[pd.DataFrame, np.ndarray]]:
    """``repeats`` independent small TPS experiments on the toy -> list of (records, direct φ), one per repeat.

    One repeat: ``n_chains`` chains of :func:`rea.tps.run_tps` (negative direction, λ ∈ ``lambdas``, N =
    max(200, 2000·scale) steps per bias) for φ = count of " the"/" a" in L = 24 tokens, and max(500, 2000·scale)
    direct samples. Measured at N = 2000 (150 repeats): GR 1.01 at λ = −1 and 1.04 (max 1.14) at −2, statistical
    inefficiency g ≈ 19 and 77 -- forward shooting mixes slowly at strong bias (g ≈ 170 at λ = −3), which is why the
    grid stops at −2. To save time ``per_run`` repeats share one batched run_tps call (further calls, for more
    repeats, use other seeds): the chains of a call are independent Markov chains (own initial sample from its own
    per-sequence stream, own cuts and uniforms, no interaction), so disjoint groups of ``n_chains`` chains are
    independent repeats; the direct samples (one stream per sequence) are split likewise. A decode step of 800
    chains costs ~3× one of 16 (measured 31 vs 11 ms), so one call of 50 repeats is ~15× cheaper than 50 calls.
    """
    from rea.sampling import sample
    from rea.tps import TPSConfig, run_tps

    lm = _toy()
    obs = token_count(COV_TOKENS)
    n_steps, n_direct = max(200, int(COV_STEPS * scale)), max(500, int(COV_DIRECT * scale))
    out = []
    for b, start in enumerate(range(0, repeats, per_run)):
        R = min(per_run, repeats - start)
        J = R * n_chains
        cfg = TPSConfig(prompt=PROMPT, length=COV_L, lambdas_pos=[], lambdas_neg=list(lambdas), n_steps=n_steps,
                        n_chains=J, seed=1000 * seed + 2 * b, observable=obs, checkpoint_every=10**7)
        with single_thread(), tempfile.TemporaryDirectory() as tmp:
            rec = run_tps(lm, cfg, tmp, progress=False).records
            direct = obs(sample(lm, PROMPT, R * n_direct, COV_L, seed=1000 * seed + 2 * b + 1, progress=False))
        group = (rec["chain"].to_numpy() - J) // n_chains  # negative-direction chains are J..2J−1
        for r in range(R):
            out.append((rec[group == r].reset_index(drop=True), direct[r * n_direct:(r + 1) * n_direct]))
    return out


def check_coverage_tps(scale: float = 1.0, seed: int = 6, repeats: int = 50, lambdas=COV_LAMBDAS,
                       thresholds=COV_THRESHOLDS) -> list[Check]:
    """Coverage of TPS+MBAR 96 % intervals on REAL toy TPS chains: bootstrap (t interval) and analytic (effective
    counts), over ``repeats`` ≥ 50 independent repeats of :func:`toy_coverage_runs`, at tails 1.6e-2, 7.8e-4, 6.6e-6.

    A repeat whose pipeline raises (a bias dropped by Gelman–Rubin leaving a threshold unreached) counts as a miss
    for every tail. The pass rule is :func:`coverage_verdict`. When a method fails the detail says WARNING and names
    the measured cause (runs failing GR, unreached thresholds, too few chains for the bootstrap, misses on one side).
    The detail of the bootstrap row also reports the paper's percentile interval (same runs, other replicas) and
    how many bootstrap intervals were the uninformative [0, 1] (tail hits in ≤ ~2 chains, see
    :func:`rea.stats.diagnostics.bootstrap_over_chains`). ``lambdas``/``thresholds`` give the fast test's shallower variant.
    At scale 1.0: 2.5 min on one core (measured 152 s: ~125 s the one batched TPS run of 800 chains × 4000 steps).
    """
    lm = _toy()
    thr = np.array(thresholds, dtype=float)
    p = _tail_exact(exact.count_distribution(lm, PROMPT, COV_L, "count", tokens=COV_TOKENS), thr)
    runs = toy_coverage_runs(scale, seed, repeats, lambdas=lambdas)
    n_steps = max(200, int(COV_STEPS * scale))
    variants = {"bootstrap": dict(method="bootstrap"), "analytic": dict(method="analytic"),
                "percentile": dict(method="bootstrap", interval="percentile")}
    cov = {k: np.zeros((len(runs), thr.size), bool) for k in variants}
    side = {k: np.zeros(2, int) for k in variants}  # misses with the interval below / above the truth
    errors = {k: [] for k in variants}
    dropped, g_deep, vacuous = 0, [], 0
    for r, (rec, direct) in enumerate(runs):
        prep = prepare(rec, direct)
        gr = prep.gelman_rubin(np.arange(len(prep.segments)))
        dropped += any(not v < 1.1 for v in gr.values())
        for k, kw in variants.items():
            try:
                df = tps_mbar(rec, direct, thr, seed=seed * 7919 + r, **kw)
            except ValueError as err:
                errors[k].append(str(err)[:90])
                continue
            cov[k][r] = (df.ci_low <= p) & (p <= df.ci_high)
            if k == "bootstrap":
                vacuous += int(np.sum(df.ci_high >= 1.0))
            side[k] += [int(np.sum(df.ci_high < p)), int(np.sum(df.ci_low > p))]
            if k == "analytic":
                g_deep.append(df.attrs["statistical_inefficiency"].get(min(lambdas), np.nan))
    setting = (f"real TPS chains, toy det-count L={COV_L}, {COV_CHAINS} chains × {n_steps} steps at λ ∈ "
               f"{{{', '.join(f'{x:g}' for x in lambdas)}}}, 96 % CI")
    tails = "/".join(f"{x:.1e}" for x in p)
    at = "/".join(f"{x:g}" for x in thr)
    out = []
    for k, what in (("bootstrap", "t interval"), ("analytic", "effective counts N_k/g_k")):
        ok, pooled, per = coverage_verdict(cov[k])
        detail = (f"{pooled:.2f} ({len(runs)} repeats, {setting}, {what}; per tail P(φ ≥ {at}) = {tails}: "
                  f"{'/'.join(f'{x:.2f}' for x in per)}; misses below/above {side[k][0]}/{side[k][1]}; "
                  f"failed runs {len(errors[k])}")
        if k == "bootstrap":
            _, pp, per_p = coverage_verdict(cov["percentile"])
            detail += (f"; [0, 1] intervals {vacuous}; paper's percentile interval {pp:.2f} "
                       f"({'/'.join(f'{x:.2f}' for x in per_p)})")
        else:
            detail += f"; g at λ = {min(lambdas):g}: median {np.nanmedian(g_deep) if g_deep else np.nan:.0f}"
        if not ok:
            causes = []
            if errors[k]:
                causes.append(f"{len(errors[k])} runs raised ({errors[k][0]})")
            if dropped:
                causes.append(f"{dropped} runs had a bias dropped by Gelman–Rubin (chains too short for GR < 1.1)")
            if k == "bootstrap" and COV_CHAINS < MIN_CHAINS_T:
                causes.append(f"only {COV_CHAINS} chains for the bootstrap (measured minimum {MIN_CHAINS_T})")
            if side[k][0] > 2 * max(1, side[k][1]):
                causes.append("intervals too low (estimator skewed or biased low: chains not mixed?)")
            elif side[k][1] > 2 * max(1, side[k][0]):
                causes.append("intervals too high")
            if not causes:
                causes.append("intervals too narrow")
            detail += "; WARNING: under-covers: " + "; ".join(causes)
        out.append(Check(f"coverage_tps_mbar_{k}", ok, detail + ")"))
    return out


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
    from rea.stats import direct_tail
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

    Per bias b, repeat and threshold a: ``n`` fresh samples, :func:`rea.stats.estimators.importance_estimate` of
    P(φ ≥ a) with its default (effective-count) and its normal interval, and whether it issued an
    :class:`rea.stats.estimators.ISIntervalWarning`. Returns a DataFrame with columns ``bias, repeat, threshold, p (exact),
    hits, value, ci_low, ci_high, normal_low, normal_high, warned, covered, covered_normal``.
    """
    from rea.stats import ISIntervalWarning
    from rea.sampling import LogitBias, sample

    lm = _toy()
    ids = [i for t in IS_COV_TOKENS for i in lm.encode(t)]
    thr = np.array(IS_COV_THRESHOLDS)
    p = _tail_exact(exact.count_distribution(lm, IS_COV_PROMPT, IS_COV_L, "count", tokens=IS_COV_TOKENS), thr)
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
    came with an :class:`rea.stats.estimators.ISIntervalWarning`. The detail also gives the old normal interval's coverage.
    ``scale`` is unused (n = 3000 is part of the regime); ``repeats`` sets the precision.
    """
    df = is_coverage_runs(seed, repeats)
    out = []
    for (bias, a), g in df.groupby(["bias", "threshold"], sort=False):
        cov, miss = float(g.covered.mean()), g[~g.covered]
        ok = bool(cov >= 0.90 or miss.warned.all())
        out.append(Check(
            "coverage_is_rare_tail", ok,
            f"{cov:.2f} (LogitBias{bias:+g}, P={g.p.iloc[0]:.1e}, {len(g)} repeats); normal interval "
            f"{g.covered_normal.mean():.2f}; no hit in {(g.hits == 0).mean():.0%}; warned in {g.warned.mean():.0%} "
            f"of runs, {int(miss.warned.sum())}/{len(miss)} misses",
        ))
    return out


CHECKS = [check_log_partition, check_deep_tail, check_importance_sampling, check_ari, check_coverage,
          check_tps_end_to_end, check_tps_deep_tail, check_coverage_tps]
CHECKS.append(check_is_coverage)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rea.validate", description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="sample sizes relative to the default (1.0)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="independent repeats of every check that takes `repeats` (default: each check's own, ≥ 50)")
    args = ap.parse_args(argv)
    rows: list[Check] = []
    t_all = time.perf_counter()
    print(f"{'check':<52} {'result':<6} {'time':>6}  detail")
    for fn in CHECKS:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                takes_repeats = "repeats" in inspect.signature(fn).parameters
                kw = {"repeats": args.repeats} if args.repeats is not None and takes_repeats else {}
                res = fn(args.scale, **kw)
        except Exception as err:  # a crash is a failed check, reported on one line
            res = [Check(fn.__name__, False, f"{type(err).__name__}: {err}")]
        dt = time.perf_counter() - t0
        for c in res:
            print(f"{c.name:<52} {'PASS' if c.passed else 'FAIL':<6} {dt:>5.0f}s  {c.detail}", flush=True)
        rows.extend(res)
    n_ok = sum(c.passed for c in rows)
    # measured coverages, one line each: "coverage_<what>: <rate> (<repeats, setting, ...>)"
    for c in rows:
        if c.name.startswith("coverage_"):
            print(f"{c.name}: {c.detail}")
    print(f"total time {time.perf_counter() - t_all:.0f} s")
    print(f"validate: {n_ok}/{len(rows)} checks passed")
    return 0 if n_ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
