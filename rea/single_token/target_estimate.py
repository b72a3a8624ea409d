"""What every single-token estimator returns, and the checks of the signature they share.

Every estimator is called as ``(scorer, D, target, budget, seed, **hyper)`` (:data:`rea.single_token.registry.METHODS`)
and returns a :class:`TargetEstimate`: an estimate of ``P_{x~D}[argmax ℓ(x) = t]`` with its interval and the model
calls it spent. (It is not :class:`rea.stats.Estimate`, the importance-sampling estimate some of these methods build
on.) :func:`check_estimator_arguments` validates the shared arguments before any model call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from rea.single_token.inputs import check_distribution


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
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget <= 0:
        raise ValueError(f"budget must be a positive integer number of model calls, got {budget!r}")
    if not isinstance(target, (int, np.integer)) or isinstance(target, bool) or not 0 <= int(target) < scorer.vocab_size:
        raise ValueError(f"target must be a token id in [0, {scorer.vocab_size}), got {target!r}")
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return check_distribution(D, scorer.vocab_size)
