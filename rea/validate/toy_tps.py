"""Real TPS runs on the toy (:func:`rea.tps.run_tps`) for token-count observables with an exact pmf: the runs the
end-to-end, deep-tail and coverage checks analyse (and :mod:`bench.bench_estimators` times)."""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd

from rea import exact
from rea.sampling import sample
from rea.tps import TPSConfig, run_tps
from rea.validate.toy import ADV_TOKENS, DET_TOKENS, PROMPT, single_thread, token_count, toy_model

TAIL_L = 20
TAIL_THRESHOLD = 10.0
TAIL_LAMBDAS = (-0.5, -1.0, -1.5, -1.75)


def toy_count_tps(tokens, length, lambdas_pos, lambdas_neg, n_steps, n_chains, scale, seed, n_direct):
    """TPS on the toy for φ = count of ``tokens`` plus direct samples and the exact pmf.

    Returns (result, direct φ, L, exact pmf, tokens of the direct samples).
    """
    lm = toy_model()
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
    res, direct, L, dist, tokens = toy_count_tps(
        ADV_TOKENS, TAIL_L, [], list(lambdas), max(100, int(6000 * scale)), 16, scale, seed, n_direct
    )
    return res, direct, L, dist, tokens, float(threshold)


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
    return toy_count_tps(DET_TOKENS, 30, list(lambdas_pos), list(lambdas_neg), max(100, int(1000 * scale)), 16, scale,
                          seed, n_direct)


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
    lm = toy_model()
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
