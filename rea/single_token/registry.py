"""Every single-token estimator by name, and :func:`estimate`, which runs one under a budget of model calls.

Budget convention: **one model call = one input sequence pushed through the model once**, with or without a
backward pass (ITGIS and MHIS get the gradient of the target logit from the same forward that scores the input, as in
[WH]). QLD and GLD spend their budget on plain forwards of samples from D; solving for QLD's direction touches only
the unembedding and is not counted. ``constant`` (the best single constant) is not an estimator: it lives in the
evaluation (:func:`rea.single_token.evaluation.optimal_constant`). :func:`estimate_many` runs one estimator on many
(target, seed) jobs, in lockstep where the estimator allows it (:data:`LOCKSTEP`).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence

from rea.single_token.extrapolation import gld, qld
from rea.single_token.importance import itgis, itgis_many, naive
from rea.single_token.mhis import mhis, mhis_many
from rea.single_token.scorer import Scorer
from rea.single_token.target_estimate import TargetEstimate


def _qld_published(*args, **hyper) -> TargetEstimate:
    """:func:`rea.single_token.extrapolation.qld` with ``variant="published"`` (the reference code's two bugs)."""
    return qld(*args, variant="published", **hyper)


METHODS: dict[str, Callable[..., TargetEstimate]] = {
    "naive": naive,
    "itgis": itgis,
    "mhis": mhis,
    "qld": qld,
    "qld_published": _qld_published,
    "gld": gld,
}
"""Estimators by name; all take ``(scorer, D, target, budget, seed, **hyper)`` and return a :class:`TargetEstimate`."""


LOCKSTEP: dict[str, Callable[..., list[TargetEstimate]]] = {"itgis": itgis_many, "mhis": mhis_many}
"""Estimators that run many jobs in lockstep, ``(scorer, D, targets, budget, seed, temperature, **hyper)`` with
``seed`` and ``temperature`` one per job; :func:`estimate_many` uses them."""


def estimate(method: str, scorer: Scorer, D, target: int, budget: int, seed: int = 0, **hyper) -> TargetEstimate:
    """Run one estimator: ``method`` in :data:`METHODS`, ``budget`` model calls at most (``n_calls ≤ budget``).

    Hyper-parameters by method: ``itgis``: ``temperature, batch_size, decay``; ``mhis``: ``temperature,
    n_chains, burn_in``; ``qld``/``qld_published``/``gld``/``naive``: ``batch_size``; all: ``confidence`` (default
    0.95, Wu & Hilton's level). The returned estimate's ``method`` is ``method`` and ``info["seconds"]`` its wall time.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    t0 = time.perf_counter()
    est = METHODS[method](scorer, D, target, budget, seed, **hyper)
    return _finished(est, method, time.perf_counter() - t0, budget)


def estimate_many(method: str, scorer: Scorer, D, jobs: Sequence[tuple], budget: int,
                  **hyper) -> list[TargetEstimate]:
    """Run one estimator on many jobs; returns their estimates in job order, each equal to :func:`estimate`'s.

    ``jobs``: ``(target, seed)`` or ``(target, seed, job_hyper)`` tuples, ``job_hyper`` a dict overriding ``hyper``
    for that job (e.g. ``{"temperature": T}``). For the methods of :data:`LOCKSTEP` (``itgis``, ``mhis``) the jobs
    whose hyper-parameters agree apart from ``temperature`` (a job without one gets the estimator's default) run in
    lockstep, one model call per step for all of them (each job drawing the random numbers of its single run, so its
    estimate equals ``estimate(method, scorer, D, target, budget, seed, **hyper | job_hyper)`` up to float
    rounding); the other methods run the jobs one by one. ``info["seconds"]``: the wall time of the job's lockstep
    group divided by its number of jobs (a job's own time for the other methods).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    parsed = [_job(j, hyper) for j in jobs]
    if method not in LOCKSTEP:
        return [estimate(method, scorer, D, t, budget, s, **h) for t, s, h in parsed]
    out: list[TargetEstimate | None] = [None] * len(parsed)
    run = LOCKSTEP[method]
    default_T = inspect.signature(run).parameters["temperature"].default
    for idx, shared in _lockstep_groups([h for _, _, h in parsed]):
        t0 = time.perf_counter()
        ests = run(scorer, D, [parsed[i][0] for i in idx], budget, [parsed[i][1] for i in idx],
                   [parsed[i][2].get("temperature", default_T) for i in idx], **shared)
        seconds = (time.perf_counter() - t0) / len(idx)
        for i, est in zip(idx, ests):
            out[i] = _finished(est, method, seconds, budget)
    return out


def _job(job, hyper: dict) -> tuple[int, int, dict]:
    """``(target, seed, hyper | job_hyper)`` of one job of :func:`estimate_many`."""
    if not isinstance(job, (tuple, list)) or len(job) not in (2, 3) or (len(job) == 3 and not isinstance(job[2], dict)):
        raise ValueError(f"jobs must hold (target, seed) or (target, seed, hyper dict) tuples, got {job!r}")
    return job[0], job[1], {**hyper, **(job[2] if len(job) == 3 else {})}


def _lockstep_groups(hypers: list[dict]) -> list[tuple[list[int], dict]]:
    """Jobs that can run in lockstep: ``(job indices, shared hyper)`` for each set of jobs whose hyper-parameters
    agree apart from ``temperature``, in order of their first job."""
    groups: list[tuple[list[int], dict]] = []
    for i, h in enumerate(hypers):
        shared = {k: v for k, v in h.items() if k != "temperature"}
        for idx, other in groups:
            if other == shared:
                idx.append(i)
                break
        else:
            groups.append(([i], shared))
    return groups


def _finished(est: TargetEstimate, method: str, seconds: float, budget: int) -> TargetEstimate:
    """``est`` named ``method`` with ``info["seconds"]``, after checking that it kept to the budget."""
    est.method = method
    est.info["seconds"] = seconds
    if est.n_calls > budget:  # pragma: no cover - guarded by construction
        raise RuntimeError(f"{method} spent {est.n_calls} calls with budget {budget}")
    return est
