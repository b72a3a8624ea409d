"""Every single-token estimator by name, and :func:`estimate`, which runs one under a budget of model calls.

Budget convention: **one model call = one input sequence pushed through the model once**, with or without a
backward pass (ITGIS and MHIS get the gradient of the target logit from the same forward that scores the input, as in
[WH]). QLD and GLD spend their budget on plain forwards of samples from D; solving for QLD's direction touches only
the unembedding and is not counted. ``constant`` (the best single constant) is not an estimator: it lives in the
evaluation (:func:`rea.single_token.evaluation.optimal_constant`).
"""

from __future__ import annotations

import time
from typing import Callable

from rea.single_token.extrapolation import gld, qld
from rea.single_token.importance import itgis, naive
from rea.single_token.mhis import mhis
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
    est.method = method
    est.info["seconds"] = time.perf_counter() - t0
    if est.n_calls > budget:  # pragma: no cover - guarded by construction
        raise RuntimeError(f"{method} spent {est.n_calls} calls with budget {budget}")
    return est
