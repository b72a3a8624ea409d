"""What every single-token estimator returns, and the checks of the signature they share.

Every estimator is called as ``(scorer, D, target, budget, seed, **hyper)`` (:data:`rea.single_token.registry.METHODS`)
and returns a :class:`TargetEstimate`: an estimate of ``P_{x~D}[argmax ℓ(x) = t]`` with its interval and the model
calls it spent. (It is not :class:`rea.stats.Estimate`, the importance-sampling estimate some of these methods build
on.) :func:`check_estimator_arguments` validates the shared arguments before any model call, :func:`check_jobs` the
jobs of a lockstep run (many targets, seeds and temperatures at once); :func:`record_warnings` and
:func:`reissue_warnings` let such a run attribute its warnings to its caller.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

from rea.single_token.inputs import check_distribution

T_ = TypeVar("T_")


@dataclass
class TargetEstimate:
    """An estimate ``p_hat`` of ``P_D[argmax = t]`` with an interval and the model calls spent.

    ``ci_low, ci_high``: the method's own interval (Wilson for naive; effective-count Wilson, finite without hits,
    for ITGIS/MHIS; statistical only for QLD/GLD, which ignore their model error). ``n_calls``: model calls spent
    (one input sequence through the model once, with or without a backward pass). ``info`` holds method-specific
    diagnostics.
    """

    p_hat: float
    ci_low: float
    ci_high: float
    n_calls: int
    method: str = ""
    info: dict = field(default_factory=dict)


def check_estimator_arguments(scorer, D, target, budget, seed) -> torch.Tensor:
    """Check the arguments every estimator shares and return ``D`` as a checked float64 ``[k, V]`` tensor.

    ``budget``: a positive integer number of model calls; ``target``: a token id in ``[0, V)``; ``seed``: an integer;
    ``D``: a distribution over the scorer's vocabulary (:func:`rea.single_token.inputs.check_distribution`).
    """
    _check_budget_target_seed(scorer, target, budget, seed)
    return check_distribution(D, scorer.vocab_size)


def _check_budget_target_seed(scorer, target, budget, seed) -> None:
    """The scalar arguments of :func:`check_estimator_arguments`, in its order: budget, target, seed."""
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget <= 0:
        raise ValueError(f"budget must be a positive integer number of model calls, got {budget!r}")
    if (not isinstance(target, (int, np.integer)) or isinstance(target, bool)
            or not 0 <= int(target) < scorer.vocab_size):
        raise ValueError(f"target must be a token id in [0, {scorer.vocab_size}), got {target!r}")
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")


def check_jobs(scorer, D, targets, budget, seed, temperature) -> tuple[torch.Tensor, list[tuple[int, int, float]]]:
    """The jobs of a lockstep run (:func:`~rea.single_token.importance.itgis_many`,
    :func:`~rea.single_token.mhis.mhis_many`), checked.

    ``targets``: a non-empty sequence of J token ids; ``seed`` and ``temperature``: one value for every job or a
    sequence of J. Each job ``(t_j, seed_j, T_j)`` is checked as its single run checks it
    (:func:`check_estimator_arguments`, then ``T_j > 0``). Returns ``D`` (checked, float64 ``[k, V]``) and the jobs.
    """
    if np.ndim(targets) != 1 or len(targets) == 0:
        raise ValueError(f"targets must be a non-empty sequence of token ids, got {targets!r}")
    J = len(targets)
    per_job = {}
    for name, value in (("seed", seed), ("temperature", temperature)):
        if np.ndim(value) == 0:
            per_job[name] = [value] * J
        elif np.ndim(value) == 1 and len(value) == J:
            per_job[name] = list(value)
        else:
            raise ValueError(f"{name} must be one value or one per target ({J}), got {value!r}")
    jobs = list(zip(targets, per_job["seed"], per_job["temperature"]))
    for j, (t, s, T) in enumerate(jobs):
        _check_budget_target_seed(scorer, t, budget, s)
        if j == 0:  # D once, where the single run checks it
            D = check_distribution(D, scorer.vocab_size)
        if not T > 0:
            raise ValueError(f"temperature must be positive, got {T!r}")
    return D, jobs


def record_warnings(compute: Callable[[], T_]) -> tuple[T_, list[warnings.WarningMessage]]:
    """``compute()`` with every warning it raises recorded instead of issued: ``(result, warnings)``.

    Lockstep estimators finish their jobs under it and let their public entry point :func:`reissue_warnings` them,
    so that a warning is attributed to the code that called the estimator, however deep it was raised.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compute()
    return result, caught


def reissue_warnings(caught: list[warnings.WarningMessage], stacklevel: int = 2) -> None:
    """Issue recorded warnings again (same category and text), attributed ``stacklevel`` frames up from the function
    that calls this one (2: its caller)."""
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=stacklevel + 1)
