"""Estimator benchmarks: MBAR solve time and the token efficiency of TPS+MBAR against direct sampling.

    .venv/bin/python bench/bench_estimators.py            # MBAR time + toy efficiency (+ SmolLM2 unless --quick)
    .venv/bin/python bench/bench_estimators.py --quick    # skip the SmolLM2 section
    .venv/bin/python bench/bench_estimators.py --pymbar   # also time pymbar's robust solver on the same data

Lines printed for the record:
    mbar_solve_seconds_1e6x21: X.X                 TiltedMBAR on 1e6 Gaussian samples × 21 tilted states
    tps_mbar_token_efficiency_vs_direct: X         toy, φ = count of 4 adverbs, L = 20, P(φ ≥ 10) = 1.4e-8
    smollm_tps_mbar_token_efficiency_vs_direct: X  SmolLM2, 32-token completions, a tail both methods reach

Token efficiency = (tokens direct sampling needs for 20 % relative error) / (tokens TPS+MBAR needs for 20 %).
Direct: a binomial estimate has relative error √((1 − p)/(N p)), so N = (1 − p)/(p·0.2²) samples of L tokens.
TPS+MBAR: run once with T tokens (Σ over moves of the regenerated L − cut tokens, plus L per initial chain state,
plus L per direct sample), measure the relative error r as the half-width of the 96 % bootstrap CI over chains
divided by 2.054 (its σ in log space, ≈ relative σ), and scale: relative error ∝ 1/√tokens, so
T_20% = T · (r / 0.2)².
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rea.stats import TiltedMBAR, z_value  # noqa: E402
from rea.tps import tps_mbar, tps_tokens  # noqa: E402

Z96 = z_value(0.96)


def bench_mbar(pymbar: bool = False, repeats: int = 3) -> float:
    rng = np.random.default_rng(0)
    lams = np.linspace(-7.0, 3.0, 21)
    lams[np.argmin(np.abs(lams))] = 0.0
    n = 10**6 // 21 + 1
    phi = np.concatenate([rng.normal(-lam, 1.0, n) for lam in lams])[: 10**6]
    lam = np.repeat(lams, n)[: 10**6]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mb = TiltedMBAR(phi, lam)
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(f"  newton: {mb.solver_messages[0]}; times {', '.join(f'{t:.1f}' for t in times)} s")
    if pymbar:
        t0 = time.perf_counter()
        ref = TiltedMBAR(phi, lam, solver_protocol="robust")
        print(f"  pymbar robust: {time.perf_counter() - t0:.1f} s; max |Δf| = {np.abs(ref.f_k - mb.f_k).max():.1e}")
    print(f"mbar_solve_seconds_1e6x21: {best:.1f}")
    return best


def _efficiency(df, row, tokens, length, p_exact=None):
    r = df.rel_ci_half.iloc[row] / Z96  # σ of the estimate relative to it
    t20 = tokens * (r / 0.2) ** 2
    p = p_exact if p_exact is not None else df.p.iloc[row]
    direct20 = length * (1 - p) / (p * 0.2**2)
    return direct20 / t20, r, t20, direct20


def bench_toy(scale: float = 1.0) -> float:
    """Token efficiency at a 1e-8 tail: toy, φ = count of 4 adverbs, L = 20, P(φ ≥ 10) = 1.43e-8 exactly.

    See rea.validate.toy_tail_tps_run for why this observable (forward shooting mixes the kept prefix only through
    rarely accepted early cuts; the former det-count benchmark could only reach p ≈ 6e-5 with GR < 1.1).
    """
    from rea.validate import toy_tail_tps_run

    t0 = time.perf_counter()
    res, direct, L, dist, direct_tokens, a = toy_tail_tps_run(scale, seed=0)
    t_run = time.perf_counter() - t0
    p = float(np.exp(dist.log_tail(a)))
    df = tps_mbar(res, direct, [a])
    tokens = tps_tokens(res, L) + direct_tokens
    eff, r, t20, d20 = _efficiency(df, 0, tokens, L, p)
    inside = df.ci_low.iloc[0] <= p <= df.ci_high.iloc[0]
    gr = ", ".join(f"{k:g}: {v:.3f}" for k, v in df.attrs["gelman_rubin"].items())
    print(f"  toy, φ = count of ' once'/' there'/' quickly'/' extraordinarily', L={L}, "
          f"λ {list(res.config.lambdas_neg)}, {res.config.n_chains} chains × {res.config.n_steps} steps/bias; "
          f"GR {{{gr}}}, dropped {df.attrs['dropped']}")
    print(f"  P(φ≥{a:g}) exact {p:.3g}, TPS+MBAR {df.p.iloc[0]:.3g} 96% CI [{df.ci_low.iloc[0]:.3g}, "
          f"{df.ci_high.iloc[0]:.3g}] (exact {'inside' if inside else 'OUTSIDE'} CI); rel. error {r:.2f} "
          f"(bootstrap CI½/p̂/2.054) at {tokens:.3g} tokens -> {t20:.3g} tokens for 20 % assuming error ∝ 1/√tokens;"
          f" direct needs L(1−p)/(p·0.2²) = {d20:.3g} ({t_run:.0f} s TPS, {time.perf_counter() - t0:.0f} s total)")
    print(f"tps_mbar_token_efficiency_vs_direct: {eff:.3g}")
    return eff


def bench_smollm(budget_s: float = 540.0) -> float:
    from rea.lm import load_model
    from rea.observables import repeats
    from rea.sampling import sample
    from rea.tps import TPSConfig, run_tps

    lm = load_model()
    L, prompt = 32, "The sky is"
    t0 = time.perf_counter()
    n_direct = 600
    direct = repeats(sample(lm, prompt, n_direct, L, seed=1, progress=False))
    t_direct = time.perf_counter() - t0
    thr = float(np.quantile(direct, 0.99))  # a tail both methods reach, p ≈ 1e-2
    steps = max(20, int((budget_s - 2 * t_direct) / max(1e-3, t_direct / n_direct * L / 16 * 2.0) / 2))
    cfg = TPSConfig(prompt=prompt, length=L, lambdas_pos=[], lambdas_neg=[-0.25, -0.5], n_steps=min(steps, 150),
                    n_chains=4, seed=0, observable="repeats", checkpoint_every=10**6)
    with tempfile.TemporaryDirectory() as tmp:
        res = run_tps(lm, cfg, tmp, progress=False)
    df = tps_mbar(res, direct, [thr])
    tokens = tps_tokens(res, L) + n_direct * L
    eff, r, t20, d20 = _efficiency(df, 0, tokens, L)
    dr = df.direct_rel_ci_half.iloc[0] / Z96
    print(f"  SmolLM2 repeats L={L} '{prompt}': P(φ≥{thr:g}) TPS+MBAR {df.p.iloc[0]:.3g} "
          f"(direct {df.direct_p.iloc[0]:.3g}, rel. error {dr:.2f} at {n_direct * L} tokens); "
          f"TPS+MBAR rel. error {r:.2f} at {tokens:.3g} tokens -> "
          f"{t20:.3g} for 20 %; direct needs {d20:.3g} ({time.perf_counter() - t0:.0f} s)")
    print(f"smollm_tps_mbar_token_efficiency_vs_direct: {eff:.3g}")
    return eff


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the SmolLM2 section")
    ap.add_argument("--smollm", action="store_true", help="only the SmolLM2 section")
    ap.add_argument("--pymbar", action="store_true", help="also time pymbar's robust solver (~1 min)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    if not args.smollm:
        bench_mbar(args.pymbar)
        bench_toy()
    if args.smollm or not args.quick:
        bench_smollm()


if __name__ == "__main__":
    main()
