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

"Exact tilted samples" (:mod:`rea.validate.exact_records`): for an additive pair observable the tilted law p_λ of the
Markov toy is itself a Markov chain, sampled exactly by :func:`exact_tilted_phi` (used where TPS would be too slow).

Modules: :mod:`~rea.validate.toy` (the shared setting), :mod:`~rea.validate.verdicts` (pass rules),
:mod:`~rea.validate.exact_records`, :mod:`~rea.validate.toy_tps` (real TPS runs on the toy),
:mod:`~rea.validate.checks` (single-run checks), :mod:`~rea.validate.coverage` (coverage over repeats).
"""

from __future__ import annotations

import argparse
import inspect
import time
import warnings

from rea.validate.checks import (
    check_ari,
    check_deep_tail,
    check_importance_sampling,
    check_log_partition,
    check_tps_deep_tail,
    check_tps_end_to_end,
)
from rea.validate.coverage import check_coverage, check_coverage_tps, check_is_coverage, is_coverage_runs
from rea.validate.exact_records import exact_pipeline, exact_tilted_phi, records_from_exact
from rea.validate.toy import ADV_TOKENS, DET_TOKENS, PROMPT, single_thread, tail_exact, token_count, toy_model
from rea.validate.toy_tps import toy_coverage_runs, toy_tail_tps_run, toy_tps_run
from rea.validate.verdicts import LOG_Z_K, Check, coverage_verdict, log_z_within

__all__ = [
    "Check", "CHECKS", "main",
    "check_log_partition", "check_deep_tail", "check_importance_sampling", "check_ari", "check_coverage",
    "check_tps_end_to_end", "check_tps_deep_tail", "check_coverage_tps", "check_is_coverage",
    "PROMPT", "DET_TOKENS", "ADV_TOKENS", "toy_model", "single_thread", "token_count", "tail_exact",
    "exact_tilted_phi", "records_from_exact", "exact_pipeline", "toy_tps_run", "toy_tail_tps_run",
    "toy_coverage_runs", "is_coverage_runs", "LOG_Z_K", "log_z_within", "coverage_verdict",
]

CHECKS = [check_log_partition, check_deep_tail, check_importance_sampling, check_ari, check_coverage,
          check_tps_end_to_end, check_tps_deep_tail, check_coverage_tps, check_is_coverage]
"""The checks ``make validate`` runs, in order (:func:`main` reads this list when called)."""


def main(argv=None) -> int:
    """``python -m rea.validate [--scale S] [--repeats R]``: run :data:`CHECKS`, print the table, the coverage lines
    and the summary -> exit code 0 if every check passed, else 1 (a check that raises is a failed row)."""
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
