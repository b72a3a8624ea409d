"""Deep tails on the toy: relative RMSE, coverage and token efficiency of each estimator over independent repeats.

    .venv/bin/python bench/bench_tails.py [--repeats 10] [--scale 1.0] [--methods annealed,replica,direct]

Problem: the toy LM, φ = count of " once"/" there"/" quickly"/" extraordinarily" in L = 20 tokens, whose exact tail
P(φ ≥ a) comes from :func:`rea.exact.count_distribution`: a = 10 (1.4e-8) and a = 14 (1.7e-13).

Each method runs ``--repeats`` times with independent seeds at one fixed token budget (tokens counted as generated:
Σ over moves of the regenerated L − cut, rejected proposals included, plus L per initial state and per direct
sample). Over the repeats it reports the relative RMSE of p̂ against the exact p, the coverage of its 96 % interval,
and the token efficiency against direct sampling for 20 % relative error:

    efficiency = [L (1 − p) / (p · 0.2²)] / [T · (RMSE / 0.2)²],

the tokens direct sampling needs (binomial) over the tokens the method needs, assuming RMSE ∝ 1/√tokens (the RMSE,
not the interval width, sets the error). That scaling holds only once every repeat sees the tail: a repeat whose
estimate is 0 (no sample kept beyond the threshold) makes the efficiency "not reached" instead of a number. For
direct sampling the binomial RMSE √((1 − p)/(N p)) makes the efficiency 1 by definition; its line reports the
measured coverage. Lines printed for the record:

    efficiency_vs_direct method=M p=P: X
    coverage method=M p=P: C

Methods: ``annealed`` (the paper's TPS: 16 chains, λ ∈ {−0.5, −1, −1.5, −1.75}, 6000·scale moves per bias, MBAR with
the bootstrap over chains), ``replica`` (replica-exchange TPS, 8 ladders over λ = 0, −0.25, …, −3, swaps every 5
moves, the same number of moves as ``annealed``), ``direct`` (i.i.d. samples at the same budget, Wilson interval).
All repeats of a TPS method run as one batch of the model (:func:`rea.tps.run_tps_many`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rea import exact  # noqa: E402
from rea.sampling import sample  # noqa: E402
from rea.stats import wilson_interval  # noqa: E402
from rea.tps import TPSConfig, run_tps_many, tps_mbar, tps_tokens  # noqa: E402
from rea.validate.toy import ADV_TOKENS, PROMPT, single_thread, token_count, toy_model  # noqa: E402

L = 20
THRESHOLDS = (10.0, 14.0)
ANNEALED_LAMBDAS = (-0.5, -1.0, -1.5, -1.75)
REPLICA_LAMBDAS = tuple(-0.25 * k for k in range(1, 13))
ANNEALED_CHAINS, REPLICA_LADDERS, EXCHANGE_EVERY = 16, 8, 5


def tps_repeats(method: str, repeats: int, scale: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """``repeats`` independent TPS+MBAR estimates -> per repeat (p̂, ci_low, ci_high ``[thresholds]``, tokens)."""
    obs = token_count(ADV_TOKENS)
    n_annealed = max(100, int(6000 * scale))
    n_direct = max(500, int(2000 * scale))
    if method == "annealed":
        kw = dict(lambdas_pos=[], lambdas_neg=list(ANNEALED_LAMBDAS), n_steps=n_annealed, n_chains=ANNEALED_CHAINS)
    else:  # the same number of moves: 16 chains × 4 biases × N = 8 ladders × 13 replicas × N'
        n_moves = ANNEALED_CHAINS * len(ANNEALED_LAMBDAS) * n_annealed
        rows = REPLICA_LADDERS * (len(REPLICA_LAMBDAS) + 1)
        kw = dict(lambdas_pos=[0.0], lambdas_neg=list(REPLICA_LAMBDAS), n_steps=n_moves // rows,
                  n_chains=REPLICA_LADDERS, exchange_every=EXCHANGE_EVERY)
    configs = [TPSConfig(prompt=PROMPT, length=L, seed=1000 + r, observable=obs, checkpoint_every=10**8, **kw)
               for r in range(repeats)]
    lm = toy_model()
    with single_thread(), tempfile.TemporaryDirectory() as tmp:
        results = run_tps_many(lm, configs, [f"{tmp}/{r}" for r in range(repeats)], progress=False)
    out = []
    for r, res in enumerate(results):
        direct = obs(sample(lm, PROMPT, n_direct, L, seed=2000 + r, progress=False))
        tokens = tps_tokens(res, L) + n_direct * L
        est = np.zeros((3, len(THRESHOLDS)))
        for i, a in enumerate(THRESHOLDS):
            try:
                df = tps_mbar(res, direct, [a])
                est[:, i] = df.p.iloc[0], df.ci_low.iloc[0], df.ci_high.iloc[0]
            except ValueError:  # the threshold lies beyond every kept sample: no estimate
                est[:, i] = 0.0, 0.0, np.inf
        out.append((*est, tokens))
    return out


def direct_repeats(repeats: int, tokens: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Direct sampling at ``tokens`` per repeat: the binomial count's distribution is exact, so each repeat's
    hit count is drawn from Binomial(N, p) with N = tokens / L (sampling 10⁶+ toy completions per repeat would only
    reproduce it) -> per repeat (p̂, Wilson 96 % interval, tokens)."""
    lm = toy_model()
    dist = exact.count_distribution(lm, PROMPT, L, "count", tokens=ADV_TOKENS)
    p = np.array([np.exp(dist.log_tail(a)) for a in THRESHOLDS])
    n = int(tokens // L)
    rng = np.random.default_rng(7)
    out = []
    for _ in range(repeats):
        hits = rng.binomial(n, p)
        lo, hi = np.array([wilson_interval(int(k), n, 0.96) for k in hits]).T
        out.append((hits / n, lo, hi, float(n * L)))
    return out


def report(method: str, runs, p_exact: np.ndarray) -> None:
    """Print the RMSE, coverage and efficiency lines of one method."""
    p_hat = np.array([r[0] for r in runs])
    lo, hi = np.array([r[1] for r in runs]), np.array([r[2] for r in runs])
    tokens = float(np.mean([r[3] for r in runs]))
    for i, p in enumerate(p_exact):
        rel = p_hat[:, i] / p - 1
        rmse = float(np.sqrt(np.mean(rel ** 2)))
        cover = float(np.mean((lo[:, i] <= p) & (p <= hi[:, i])))
        missed = int(np.sum(p_hat[:, i] == 0))
        print(f"  {method}: P(φ≥{THRESHOLDS[i]:g}) = {p:.3g}: median p̂ {np.median(p_hat[:, i]):.3g}, relative RMSE "
              f"{rmse:.3g} over {len(runs)} repeats of {tokens:.3g} tokens ({missed} saw no sample beyond the "
              f"threshold), 96 % interval covers {cover:.0%}")
        if method == "direct":
            eff = "1 (by definition)"
        elif missed:
            eff = f"not reached ({missed} of {len(runs)} repeats without an estimate)"
        else:
            eff = f"{(L * (1 - p) / (p * 0.04)) / (tokens * (rmse / 0.2) ** 2):.3g}"
        print(f"efficiency_vs_direct method={method} p={p:.1e}: {eff}")
        print(f"coverage method={method} p={p:.1e}: {cover:.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--scale", type=float, default=1.0, help="moves per bias = 6000 × scale (annealed)")
    ap.add_argument("--methods", default="annealed,replica,direct")
    args = ap.parse_args(argv)
    dist = exact.count_distribution(toy_model(), PROMPT, L, "count", tokens=ADV_TOKENS)
    p_exact = np.array([np.exp(dist.log_tail(a)) for a in THRESHOLDS])
    budget = None
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        if method in ("annealed", "replica"):
            runs = tps_repeats(method, args.repeats, args.scale)
            budget = budget or float(np.mean([r[3] for r in runs]))
        elif method == "direct":
            runs = direct_repeats(args.repeats, budget or 2e7)
        else:
            raise SystemExit(f"--methods: unknown method {method!r} (annealed, replica, direct)")
        report(method, runs, p_exact)
        print(f"  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
