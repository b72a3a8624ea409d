"""Deep tails on the toy: relative RMSE, coverage and token efficiency of each estimator over independent repeats.

    .venv/bin/python bench/bench_tails.py [--repeats 10] [--scale 1.0] [--methods annealed,replica,smc,smc-ladder]
    .venv/bin/python bench/bench_tails.py --smollm      # only the SmolLM2 agreement check
    ... --json bench/results/tails_toy.json             # also write every printed result, with provenance

Problem: the toy LM, φ = count of " once"/" there"/" quickly"/" extraordinarily" in L = 20 tokens, whose exact tail
P(φ ≥ a) comes from :func:`rea.exact.count_distribution`: a = 10 (1.4e-8) and a = 14 (1.7e-13). The problem is
defined once, in :mod:`rea.book.bench` (``TOY_LENGTH``, ``TOY_THRESHOLDS``), which also reads the ``--json`` files
for the book's chapter "Deeper tails".

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
moves, the same number of moves as ``annealed``), ``smc`` (:func:`rea.smc.smc_tail`: 1000 particles × 10
replicates per estimate at the λ whose exact tilted mean sits at the threshold; a budget of its own, 2e5 tokens, as
its RMSE scales with it like the others'), ``smc-ladder`` (:func:`rea.smc.smc_ladder_tail`: the SMC sampler across
an ``"auto"`` bias ladder, its moves drawing suffixes from the local tilt at each bias, ``move_proposal="tilt"``,
:func:`rea.tps.kernel.proposal_moves`; 1000·scale particles × 10 moves per bias × 10 replicates per estimate,
|λ| ≤ 4, its pilot's tokens included; a budget of its own, as for ``smc``), ``smc-ladder-shoot`` (the same with the
paper's forward-shooting moves from p_M; not in the default list), ``smc-ladder-head`` (forward shooting with a
share :data:`HEAD_FRACTION` of the moves head moves, :func:`rea.tps.kernel.head_moves`: tokens counted are the drawn
heads; the teacher-forced suffixes are printed apart as "scored"; not in the default list),
``direct`` (i.i.d. samples at the TPS budget, Wilson interval). All repeats of a TPS method run as one batch of the
model (:func:`rea.tps.run_tps_many`).

``--smollm``: on the embedded SmolLM2 (quick-profile shape: L = 24, the paper's prompt), φ = Log-Prob, the lower tail
P(φ ≤ a): replica-exchange TPS + MBAR (6 ladders over λ = 0.02 … 0.15, 120 moves per replica, 256 direct samples)
and SMC (256 particles × 8 replicates at the strongest bias that passes Gelman–Rubin) estimate the same tail, a
being that bias's median φ. Prints the tail's distance in decades from 1/N, the smallest probability direct
sampling resolves with the two methods' tokens (N = tokens / L) and, with both estimates (yes: their 96 % intervals
overlap),

    smollm_methods_agree method=replica,smc p=…: yes/no

Then SMC at λ = 0.3 against importance sampling from the model at T = 1/(1 − λ) (exact weights), two independent
unbiased estimators of the lower tail at SMC's tilted median (:func:`deep_agreement`):

    smollm_methods_agree method=smc,importance p=…: yes/no

``--json PATH`` writes every printed result to PATH (toy: one row per method and threshold with the exact p, median
p̂, relative RMSE, coverage, efficiency or its "not reached" note, tokens per repeat, repeats, scale; ``--smollm``:
one row per pair of methods with both estimates and intervals, p, decades below direct sampling's floor and the
agreement) under ``results``, with ``provenance`` (date, command line, CPU model, threads, torch version, git
commit, wall time, and the SHA-256 of every source file the run measured: :func:`rea.book.bench.measured_sources`):
:func:`write_json`. ``tests/test_bench_results.py`` fails when a committed result is older than those sources.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rea import exact, stats  # noqa: E402
from rea.book import threshold_between  # noqa: E402
from rea.book.bench import TOY_LENGTH as L  # noqa: E402  (the book reads the same)
from rea.book.bench import TOY_THRESHOLDS as THRESHOLDS
from rea.sampling import sample  # noqa: E402
from rea.stats import wilson_interval  # noqa: E402
from rea.tps import TPSConfig, run_tps_many, tps_mbar, tps_tokens  # noqa: E402
from rea.validate.toy import ADV_TOKENS, PROMPT, single_thread, token_count, toy_model  # noqa: E402

ANNEALED_LAMBDAS = (-0.5, -1.0, -1.5, -1.75)
REPLICA_LAMBDAS = tuple(-0.25 * k for k in range(1, 13))
ANNEALED_CHAINS, REPLICA_LADDERS, EXCHANGE_EVERY = 16, 8, 5
HEAD_FRACTION = 0.5
"""Share of head moves in ``smc-ladder-head`` (measured on the toy, L = 10, λ to −3: 0.5 brings the weighted mean
closer to exact than 0.25)."""
SMOLLM_LAMBDAS = (0.02, 0.05, 0.1, 0.15)
SMOLLM_PROMPT = "Once upon a time, in a big forest, there lived a rhinoc"


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
            except ValueError:  # every bias dropped, or the threshold beyond every kept sample: no estimate
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


def smc_repeats(repeats: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """``repeats`` independent SMC estimates (1000 particles × 10 replicates each), each threshold at the λ whose
    exact tilted mean is the threshold -> per repeat (p̂, interval, tokens ``[thresholds]``)."""
    from rea.smc import smc_tail

    lm = toy_model()
    lams = [_lambda_at_mean(lm, a) for a in THRESHOLDS]
    out = []
    for r in range(repeats):
        est = [smc_tail(lm, PROMPT, L, "count", lam, [a], n_particles=1000, n_replicates=10, seed=100 * r + i,
                        tokens=ADV_TOKENS, confidence=0.96, progress=False) for i, (lam, a) in
               enumerate(zip(lams, THRESHOLDS))]
        out.append((np.array([e.tail[0] for e in est]), np.array([e.tail_lo[0] for e in est]),
                    np.array([e.tail_hi[0] for e in est]), float(np.mean([e.tokens for e in est]))))
    return out


def smc_ladder_repeats(repeats: int, scale: float, head_fraction: float = 0.0, move_proposal: str = "tilt",
                       ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """``repeats`` independent SMC-ladder estimates of both thresholds (each its own ``"auto"`` ladder toward the
    deepest one; a share ``head_fraction`` of the moves head moves) -> per repeat (p̂, 96 % interval
    ``[thresholds]``, tokens: particles and pilot)."""
    from rea.smc import smc_ladder_tail

    lm, out = toy_model(), []
    with single_thread():
        for r in range(repeats):
            res = smc_ladder_tail(lm, PROMPT, L, "count", list(THRESHOLDS), n_particles=max(20, int(1000 * scale)),
                                  n_moves=10, n_replicates=10, seed=300 + r, tokens=ADV_TOKENS, lambda_max=4.0,
                                  confidence=0.96, batch_size=10**5, progress=False, head_fraction=head_fraction,
                                  move_proposal=move_proposal)
            print(f"  smc-ladder ({move_proposal}, head {head_fraction:g}) repeat {r}: ladder "
                  f"{np.round(res.lambdas[1:], 2).tolist()}, "
                  f"bias per threshold "
                  f"{res.lambdas[res.bias_index].round(2).tolist()}, p̂ {res.p.tolist()}, {res.tokens:.3g} tokens "
                  f"(+ {res.tokens_scored:.3g} scored), frozen at the last bias "
                  f"{np.mean([h['frozen'][-1] for h in res.histories]):.2f}")
            out.append((res.p, res.ci_low, res.ci_high, float(res.tokens)))
    return out


def _lambda_at_mean(lm, target: float) -> float:
    """The bias λ < 0 whose exact tilted mean of the adverb count is ``target`` (bisection)."""
    lo, hi = -10.0, 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if exact.exact_mean(lm, PROMPT, L, "count", tokens=ADV_TOKENS, lam=mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def report(method: str, runs, p_exact: np.ndarray, scale: float) -> list[dict]:
    """Print the RMSE, coverage and efficiency lines of one method -> one row per threshold, as printed."""
    p_hat = np.array([r[0] for r in runs])
    lo, hi = np.array([r[1] for r in runs]), np.array([r[2] for r in runs])
    tokens = float(np.mean([r[3] for r in runs]))
    rows = []
    for i, p in enumerate(p_exact):
        rel = p_hat[:, i] / p - 1
        rmse = float(np.sqrt(np.mean(rel ** 2)))
        missed = int(np.sum(p_hat[:, i] == 0))
        # coverage over the repeats that gave an estimate (a failed one has the vacuous interval [0, ∞))
        has = np.isfinite(hi[:, i])
        cover = float(np.mean((lo[has, i] <= p) & (p <= hi[has, i]))) if has.any() else float("nan")
        print(f"  {method}: P(φ≥{THRESHOLDS[i]:g}) = {p:.3g}: median p̂ {np.median(p_hat[:, i]):.3g}, relative RMSE "
              f"{rmse:.3g} over {len(runs)} repeats of {tokens:.3g} tokens ({missed} saw no sample beyond the "
              f"threshold), 96 % interval covers {cover:.0%} of the {int(has.sum())} with an estimate")
        eff = None
        if method == "direct":
            eff, note = 1.0, "1 (by definition)"
        elif missed:
            note = f"not reached ({missed} of {len(runs)} repeats without an estimate)"
        else:
            eff = (L * (1 - p) / (p * 0.04)) / (tokens * (rmse / 0.2) ** 2)
            note = f"{eff:.3g}"
        print(f"efficiency_vs_direct method={method} p={p:.1e}: {note}")
        print(f"coverage method={method} p={p:.1e}: {cover:.2f}")
        rows.append(dict(method=method, threshold=THRESHOLDS[i], p_exact=float(p),
                         median_p_hat=float(np.median(p_hat[:, i])), rel_rmse=rmse, coverage=cover,
                         n_with_estimate=int(has.sum()), n_missed=missed, efficiency=eff, efficiency_text=note,
                         tokens_per_repeat=tokens, repeats=len(runs), scale=scale,
                         repeat_estimates=[dict(p=float(p_hat[r, i]), ci_low=float(lo[r, i]), ci_high=float(hi[r, i]))
                                           for r in range(len(runs))]))
    return rows


def write_json(path: str | None, results: list[dict], wall_s: float | None = None, **problem) -> None:
    """Write ``{"provenance": …, "problem": problem, "results": results}`` to ``path`` (nothing when None).

    Provenance: UTC date, the command line and its niceness, the CPU model (``/proc/cpuinfo``) and core count,
    torch's intra-op threads and ``REA_THREADS``/``OMP_NUM_THREADS`` (the toy runs on one thread, SmolLM2's decode
    on at most that many, :mod:`rea.lm.threads`), the torch version, the git commit (and whether the checkout had
    changes), the run's wall time (``wall_s``), and the source files it measured
    (:func:`rea.book.bench.measured_sources`: the modules loaded by now, lazy imports included) as ``sources``
    ``{path: SHA-256}`` with one ``source_hash`` over them and ``sources_dirty``, those of them with uncommitted
    changes. :func:`rea.book.bench.staleness` compares them with the files as they are now.
    Non-finite floats are written as null (JSON has no nan/inf).
    """
    if path is None:
        return
    import torch

    from rea.book.bench import measured_sources, source_digests, source_hash
    from rea.storage import git_commit

    commit, dirty = git_commit(Path(__file__).resolve().parent)
    sources = source_digests(measured_sources(__file__))
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
               platform.processor() or platform.machine())
    root, exe = Path(__file__).resolve().parents[1], Path(sys.executable)
    exe = exe.relative_to(root) if exe.is_relative_to(root) else exe
    provenance = dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        command=" ".join([str(exe), *sys.argv]), niceness=os.nice(0), cpu=cpu, cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(), rea_threads=os.environ.get("REA_THREADS"),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"), torch=torch.__version__, git_commit=commit,
        git_dirty=dirty, python=platform.python_version(), wall_s=wall_s, source_hash=source_hash(sources),
        sources_dirty=_dirty(list(sources)), sources=sources)
    clean = _finite(results)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(dict(provenance=provenance, problem=problem, results=clean), indent=1,
                                     ensure_ascii=False) + "\n")
    print(f"  wrote {path}")


def _finite(value):
    """``value`` with every non-finite float, at any depth of its lists and dicts, replaced by None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _dirty(paths: list[str]) -> list[str] | None:
    """Those of the repository-relative ``paths`` with uncommitted changes (``git status``), None without git."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=root, capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted(line[3:].strip() for line in out.splitlines() if line.strip())


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--scale", type=float, default=1.0, help="moves per bias = 6000 × scale (annealed)")
    ap.add_argument("--methods", default="annealed,replica,smc,smc-ladder,direct")
    ap.add_argument("--smollm", action="store_true", help="only the SmolLM2 agreement check")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write every result, with provenance, here")
    args = ap.parse_args(argv)
    if args.smollm:
        t0 = time.perf_counter()
        rows = smollm_agreement()
        write_json(args.json, rows, wall_s=time.perf_counter() - t0, model="smollm2-135m", observable="logprob",
                   side="lower", length=24, prompt=SMOLLM_PROMPT)
        return
    dist = exact.count_distribution(toy_model(), PROMPT, L, "count", tokens=ADV_TOKENS)
    p_exact = np.array([np.exp(dist.log_tail(a)) for a in THRESHOLDS])
    budget, rows, start = None, [], time.perf_counter()
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        if method in ("annealed", "replica"):
            runs = tps_repeats(method, args.repeats, args.scale)
            budget = budget or float(np.mean([r[3] for r in runs]))
        elif method == "direct":
            runs = direct_repeats(args.repeats, budget or 2e7)
        elif method == "smc":
            runs = smc_repeats(args.repeats)
        elif method == "smc-ladder":
            runs = smc_ladder_repeats(args.repeats, args.scale)
        elif method == "smc-ladder-shoot":
            runs = smc_ladder_repeats(args.repeats, args.scale, move_proposal="model")
        elif method == "smc-ladder-head":
            runs = smc_ladder_repeats(args.repeats, args.scale, HEAD_FRACTION, move_proposal="model")
        else:
            raise SystemExit(f"--methods: unknown method {method!r} (annealed, replica, smc, smc-ladder, "
                             "smc-ladder-shoot, smc-ladder-head, direct)")
        new = report(method, runs, p_exact, args.scale)
        wall = time.perf_counter() - t0
        rows += [dict(r, wall_s=wall) for r in new]
        print(f"  ({wall:.0f} s)")
    write_json(args.json, rows, wall_s=time.perf_counter() - start, model="toy",
               observable="count of " + "/".join(repr(t) for t in ADV_TOKENS),
               prompt=PROMPT, length=L, thresholds=list(THRESHOLDS), p_exact=p_exact.tolist(), repeats=args.repeats,
               scale=args.scale, threads=1)


def smollm_agreement() -> list[dict]:
    """Replica-exchange TPS + MBAR and SMC on SmolLM2 estimate one deep lower tail of Log-Prob, then
    :func:`deep_agreement`; see the module docstring -> one row per pair of methods, as printed."""
    from rea.lm import load_model
    from rea.observables import log_prob
    from rea.smc import smc_tail

    lm, length, prompt = load_model(), 24, SMOLLM_PROMPT
    t0 = time.perf_counter()
    cfg = TPSConfig(prompt=prompt, length=length, lambdas_pos=list(SMOLLM_LAMBDAS), lambdas_neg=[], n_steps=120,
                    n_chains=6, seed=0, observable="logprob", checkpoint_every=10**6, exchange_every=4)
    with tempfile.TemporaryDirectory() as tmp:
        res = run_tps_many(lm, [cfg], [tmp], progress=False)[0]
    direct = log_prob(sample(lm, prompt, 256, length, seed=1, progress=False))
    kept = res.post_burn_in(0.1)
    gr = stats.gelman_rubin_by_bias(kept["phi"].to_numpy(), kept["chain"].to_numpy(), kept["lam"].to_numpy())
    print("  Gelman–Rubin per bias: " + ", ".join(f"{r.lam:g}: {r.gr:.2f}" for r in gr.itertuples()))
    if not gr["passed"].any():
        print("smollm_methods_agree method=replica,smc p=nan: no (no bias passed Gelman–Rubin at this budget)")
        return [dict(methods=["replica", "smc"], agree=False, note="no bias passed Gelman–Rubin at this budget",
                     wall_s=time.perf_counter() - t0)] + [deep_agreement(lm, prompt, length)]
    lam = float(gr.loc[gr["passed"], "lam"].max())
    a = threshold_between(kept.loc[kept["lam"] == lam, "phi"].to_numpy(), 0.5)  # the strongest kept bias's median
    tps = tps_mbar(res, direct, [a], side="lower", n_boot=100)
    smc = smc_tail(lm, prompt, length, "logprob", lam, [a], n_particles=256, n_replicates=8, seed=0, side="lower",
                   batch_size=512, confidence=0.96, progress=False)
    tokens = tps_tokens(res, length) + 256 * length + smc.tokens
    resolvable = length / tokens  # 1/N with N = tokens / L direct samples
    p_tps, lo_tps, hi_tps = tps.p.iloc[0], tps.ci_low.iloc[0], tps.ci_high.iloc[0]
    agree = lo_tps <= smc.tail_hi[0] and smc.tail_lo[0] <= hi_tps
    print(f"  SmolLM2, L={length}, P(Log-Prob ≤ {a:.1f}) (the median at λ = {lam:g}): replica exchange + MBAR "
          f"{p_tps:.3g} [{lo_tps:.3g}, {hi_tps:.3g}] (dropped biases {tps.attrs['dropped']}), SMC at λ = {lam:g} "
          f"{smc.tail[0]:.3g} [{smc.tail_lo[0]:.3g}, {smc.tail_hi[0]:.3g}]; {tokens:.3g} tokens in all, direct "
          f"sampling with them resolves ~{resolvable:.1e}, {np.log10(resolvable / max(p_tps, smc.tail[0])):.1f} "
          f"decades above ({time.perf_counter() - t0:.0f} s)")
    print(f"smollm_methods_agree method=replica,smc p={smc.tail[0]:.1e}: {'yes' if agree else 'no'}")
    row = _pair_row(("replica", "smc"), a, lam, (p_tps, lo_tps, hi_tps), (smc.tail[0], smc.tail_lo[0], smc.tail_hi[0]),
                    tokens, resolvable, agree, time.perf_counter() - t0)
    row.update(gelman_rubin={f"{r.lam:g}": float(r.gr) for r in gr.itertuples()},
               dropped_biases=[float(x) for x in tps.attrs["dropped"]])
    return [row, deep_agreement(lm, prompt, length)]


def _pair_row(methods, a, lam, first, second, tokens, resolvable, agree, wall) -> dict:
    """One JSON row of a SmolLM2 agreement check: both estimates ``(p, ci_low, ci_high)``, p (the SMC estimate, as
    printed), the decades between direct sampling's floor 1/N and the larger estimate, and the verdict."""
    est = {m: dict(p=float(e[0]), ci_low=float(e[1]), ci_high=float(e[2])) for m, e in zip(methods, (first, second))}
    p = est["smc"]["p"]
    return dict(methods=list(methods), threshold=float(a), lam=float(lam), estimates=est, p=p, tokens=float(tokens),
                direct_resolves=float(resolvable),
                decades_below_direct=float(np.log10(resolvable / max(first[0], second[0]))), agree=bool(agree),
                confidence=0.96, wall_s=float(wall))


def deep_agreement(lm, prompt: str, length: int, lam: float = 0.3, n: int = 2048) -> dict:
    """SMC at bias ``lam`` against importance sampling from the model at temperature T = 1/(1 − λ) (exact weights,
    :func:`rea.stats.importance_estimate`) on the lower Log-Prob tail at SMC's tilted median: two independent
    unbiased estimators, ``n`` completions' tokens each -> the row of :func:`_pair_row`."""
    from rea.sampling import Temperature
    from rea.smc import smc_tail
    from rea.stats import importance_estimate

    t0 = time.perf_counter()
    pilot = smc_tail(lm, prompt, length, "logprob", lam, [0.0], n_particles=256, n_replicates=1, seed=99,
                     batch_size=512, side="lower", progress=False, keep_particles=True)
    rep = pilot.replicates[0]
    w = np.exp(rep.log_w - np.max(rep.log_w))
    order = np.argsort(rep.phi)
    a = float(rep.phi[order][np.searchsorted(np.cumsum(w[order]) / w.sum(), 0.5)])  # the tilted median of φ
    smc = smc_tail(lm, prompt, length, "logprob", lam, [a], n_particles=256, n_replicates=n // 256, seed=0,
                   side="lower", batch_size=512, confidence=0.96, progress=False)
    drawn = sample(lm, prompt, n, length, seed=3, proposal=Temperature(1.0 / (1.0 - lam)), progress=False)
    hits = (drawn.logp.sum(1) <= a).astype(float)
    est = importance_estimate(hits, drawn.log_weights, confidence=0.96)
    wf = hits * np.exp(drawn.log_weights - drawn.log_weights.max())
    is_hits = float(wf.sum() ** 2 / np.sum(wf ** 2)) if wf.any() else 0.0  # Kish count of the weighted hits
    tokens = smc.tokens + n * length + pilot.tokens
    resolvable = length / tokens
    agree = est.ci_low <= smc.tail_hi[0] and smc.tail_lo[0] <= est.ci_high
    print(f"  SmolLM2, L={length}, P(Log-Prob ≤ {a:.1f}): SMC (λ = {lam:g}) {smc.tail[0]:.3g} [{smc.tail_lo[0]:.3g}, "
          f"{smc.tail_hi[0]:.3g}], importance sampling at T = {1 / (1 - lam):.3g} {est.value:.3g} [{est.ci_low:.3g}, "
          f"{est.ci_high:.3g}]; {tokens:.3g} tokens in all, direct sampling with them resolves ~{resolvable:.1e}, "
          f"{np.log10(resolvable / max(est.value, smc.tail[0])):.1f} decades above ({time.perf_counter() - t0:.0f} s)")
    print(f"smollm_methods_agree method=smc,importance p={smc.tail[0]:.1e}: {'yes' if agree else 'no'}")
    row = _pair_row(("smc", "importance"), a, lam, (smc.tail[0], smc.tail_lo[0], smc.tail_hi[0]),
                    (est.value, est.ci_low, est.ci_high), tokens, resolvable, agree, time.perf_counter() - t0)
    row["temperature"] = 1.0 / (1.0 - lam)
    row["estimates"]["importance"].update(n_hits=int(hits.sum()), effective_hits=is_hits)
    return row


if __name__ == "__main__":
    main()
