r"""What a sweep computes in one job: the budget of a profile and the estimation methods, by name.

Budget (:func:`budget`)
-----------------------
The book's runs size every estimate: :data:`rea.book.profiles.SHARED_TPS` (chapters 3–6) and
:data:`rea.book.profiles.SHARED_MBAR`, per profile. A sweep cell at profile ``p`` spends what the book spends on one
observable at ``p``: on the toy LM the ``toy_*`` knobs (length, chains, steps, direct samples); on any other model
the real-model knobs (``length``, ``n_chains``, ``n_steps``, ``n_direct``). The |λ| grid depends on the observable's
scale, not on the model: ``lambdas_ari`` for ARI, ``lambdas_logprob`` for Log-Prob and the book's Repeats grid
``toy_lambdas`` for Repeats. Only the direction that favours the tail runs: for P(φ ≥ a) the negative biases −|λ|
(p_λ ∝ e^{−λφ} p_M favours high φ when λ < 0), for P(φ ≤ a) the positive ones.

Methods (:data:`METHODS`)
-------------------------
A method is a function ``method(lm, job, budget, run_dir, side) -> DataFrame`` with one row per threshold of the
job (:class:`rea.sweep.grid.Job`; ``side`` is ``"upper"`` or ``"lower"``) and at least the columns
``threshold, p, ci_low, ci_high`` (any further columns are kept in the cell's file and the summary). ``run_dir``
is the job's own working folder: what the method writes there survives an interrupted worker, which is how
``"tps"`` resumes.

* ``"tps"`` (default) -- annealed forward-shooting TPS (:func:`rea.tps.run_tps`, checkpointed in ``run_dir/tps``,
  resumed from its checkpoint) plus ``n_direct`` direct samples as the λ = 0 state, then MBAR with the bootstrap
  over chains (:func:`rea.tps.tps_mbar`): P̂(φ ≥ a) and its 96 % interval, as chapters 5–6 compute them.
* ``"direct"`` -- ``n_direct`` i.i.d. completions, P̂ = k/n with the 96 % Wilson interval
  (:func:`rea.stats.direct_tail`).

Both draw direct samples with :func:`rea.book.direct_seed` of the cell's seed, so they share completions.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from rea.arguments import check_positive_int

CONFIDENCE = 0.96
"""Level of every interval of a sweep (the paper's 96 %)."""

OVERRIDES = ("length", "n_chains", "n_steps", "lambdas", "n_direct", "n_boot")
"""Budget knobs a sweep may override (:func:`budget`)."""

LAMBDA_GRIDS = {"ari": "lambdas_ari", "logprob": "lambdas_logprob", "repeats": "toy_lambdas"}
"""Observable -> the knob of :data:`rea.book.profiles.SHARED_TPS` that holds its |λ| grid."""


def budget(profile: str, model: str, observable: str, overrides: dict | None = None) -> dict:
    """The budget of one cell: ``length, n_chains, n_steps, lambdas (|λ|, increasing), n_direct, checkpoint_every,
    n_boot, gr_threshold`` at ``profile`` for ``model`` and ``observable`` (see the module docstring), with
    ``overrides`` (keys of :data:`OVERRIDES`, None values ignored) applied. Bad input: a one-line ValueError."""
    from rea.book.profiles import chapter_settings

    knobs = chapter_settings("mbar", profile)
    toy = "toy_" if model == "toy" else ""
    out = {"length": knobs[f"{toy}length"], "n_chains": knobs[f"{toy}chains" if toy else "n_chains"],
           "n_steps": knobs[f"{toy}steps" if toy else "n_steps"],
           "n_direct": knobs["toy_samples" if toy else "n_direct"],
           "checkpoint_every": knobs[f"{toy}checkpoint_every"], "lambdas": list(knobs[LAMBDA_GRIDS[observable]]),
           "n_boot": knobs["n_boot"], "gr_threshold": knobs["gr_threshold"]}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ValueError(f"budget: unknown knob(s) {unknown}; allowed: {', '.join(OVERRIDES)}")
    for name, value in overrides.items():
        out[name] = _checked_lambdas(value) if name == "lambdas" else check_positive_int(name, value)
    return out


def _checked_lambdas(values) -> list[float]:
    from rea.tps.config import bias_schedule

    return list(bias_schedule("lambdas", [abs(float(v)) for v in values], +1))


def tps_config(job, b: dict, side: str):
    """The :class:`rea.tps.TPSConfig` of a job: biases −|λ| for ``side="upper"``, +|λ| for ``"lower"``."""
    from rea.tps import TPSConfig

    grid = list(b["lambdas"])
    pos, neg = (grid, []) if side == "lower" else ([], [-x for x in grid])
    return TPSConfig(prompt=job.prompt, length=b["length"], lambdas_pos=pos, lambdas_neg=neg, n_steps=b["n_steps"],
                     n_chains=b["n_chains"], seed=job.seed, observable=job.observable,
                     checkpoint_every=b["checkpoint_every"])


def direct_phi(lm, job, b: dict):
    """φ of ``b["n_direct"]`` direct samples of the job's prompt (seed :func:`rea.book.direct_seed`) -> ``[N]``."""
    from rea.book.runs import direct_seed
    from rea.observables import evaluate
    from rea.sampling import sample

    samples = sample(lm, job.prompt, n=b["n_direct"], length=b["length"], seed=direct_seed(job.seed), progress=False)
    return evaluate(job.observable, samples)


def tps_method(lm, job, b: dict, run_dir, side: str = "upper") -> pd.DataFrame:
    """TPS + MBAR tail probabilities of a job (see the module docstring); resumes ``run_dir/tps`` when it holds a
    checkpoint. Columns: ``threshold, p, ci_low, ci_high, log10_p, direct_p, direct_ci_low, direct_ci_high,
    tokens, biases_used, min_overlap``.

    A threshold beyond every sample MBAR pools (direct samples, post-burn-in states of the biases that pass
    Gelman–Rubin) has the MBAR estimate 0 and no interval; its row says P̂ = 0 with the Wilson interval of the
    direct samples (k = 0 of N₀), a valid if loose bound, and a warning says so.
    """
    from pathlib import Path

    from rea.tps import CHECKPOINT, run_tps, tps_tokens

    out = Path(run_dir) / "tps"
    config = tps_config(job, b, side)
    result = run_tps(lm, config, out, resume=(out / CHECKPOINT).exists(), progress=False)
    phi0 = direct_phi(lm, job, b)
    thr = np.asarray(job.thresholds, dtype=np.float64)
    kept = _kept_phi(result, phi0, b["gr_threshold"])
    far = thr > kept.max() if side == "upper" else thr < kept.min()
    parts = []
    if not far.all():
        parts.append(_mbar_rows(result, phi0, thr[~far], b, side, job.seed, config.n_biases))
    if far.any():
        warnings.warn(f"no sample kept after burn-in and the Gelman–Rubin filter reached threshold(s) "
                      f"{thr[far].tolist()}: P̂ = 0 with the Wilson interval of {len(phi0)} direct samples",
                      UnreachedThresholdWarning, stacklevel=2)
        parts.append(_direct_rows(phi0, thr[far], side, prefix=True))
    table = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return table.assign(tokens=tps_tokens(result, config.length) + len(phi0) * config.length)


def _kept_phi(result, phi0, gr_threshold: float) -> np.ndarray:
    """The distinct φ that MBAR pools (:func:`rea.tps.tps_mbar`): direct samples and the post-burn-in states of the
    biases that pass Gelman–Rubin."""
    from rea.tps import prepare

    prep = prepare(result, phi0)
    return prep.pool(np.arange(len(prep.segments)), prep.direct_counts, gr_threshold)[0]


class UnreachedThresholdWarning(UserWarning):
    """A threshold of a sweep cell lay beyond every sample: its estimate is P̂ = 0 with a direct-sampling bound."""


def _mbar_rows(result, phi0, thresholds, b: dict, side: str, seed: int, n_biases: int) -> pd.DataFrame:
    """MBAR over the TPS records and the direct samples at ``thresholds`` (:func:`rea.tps.tps_mbar`)."""
    from rea.tps import tps_mbar

    est = tps_mbar(result, phi0, thresholds=thresholds, side=side, n_boot=b["n_boot"],
                   gr_threshold=b["gr_threshold"], confidence=CONFIDENCE, seed=seed)
    table = est[["threshold", "p", "ci_low", "ci_high", "log10_p", "direct_p", "direct_ci_low", "direct_ci_high"]]
    used = [x for x in est.attrs["lambdas"] if x != 0]
    return table.assign(biases_used=f"{len(used)}/{n_biases}", min_overlap=est.attrs["min_overlap"])


def _direct_rows(phi, thresholds, side: str, prefix: bool = False) -> pd.DataFrame:
    """Direct tail estimates with Wilson intervals (``prefix``: also as the ``direct_*`` columns)."""
    from rea.stats import direct_tail

    table = direct_tail(phi, thresholds, confidence=CONFIDENCE, side=side)
    with np.errstate(divide="ignore"):
        table["log10_p"] = np.log10(table["p"].to_numpy())
    if prefix:
        for col in ("p", "ci_low", "ci_high"):
            table[f"direct_{col}"] = table[col]
        table = table.drop(columns=["k", "n"])
    return table


def direct_method(lm, job, b: dict, run_dir, side: str = "upper") -> pd.DataFrame:
    """Direct-sampling tail probabilities of a job with Wilson intervals. Columns: ``threshold, p, ci_low,
    ci_high, k, n, log10_p, tokens``."""
    phi = direct_phi(lm, job, b)
    return _direct_rows(phi, job.thresholds, side).assign(tokens=len(phi) * b["length"])


METHODS = {"tps": tps_method, "direct": direct_method}
"""Estimation methods by name: ``method(lm, job, budget, run_dir, side) -> DataFrame`` (see the module docstring)."""


def get_method(method):
    """A method of :data:`METHODS` by name, or a callable with that signature; else a one-line ValueError."""
    if callable(method):
        return method
    if isinstance(method, str) and method in METHODS:
        return METHODS[method]
    raise ValueError(f"method must be one of {', '.join(METHODS)} or a callable, got {method!r}")
