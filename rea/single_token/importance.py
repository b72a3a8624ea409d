"""Direct sampling and independent token gradient importance sampling (ITGIS) [WH] for ``P_D[argmax ℓ(x) = t]``.

:func:`naive` samples D directly (Wilson interval). :func:`itgis` samples a product proposal tilted by the gradient
of the target logit w.r.t. one-hot inputs, a score kept as the bias-corrected moving average
:class:`BiasCorrectedEMA`, and weights the hits by ``D/q`` (:func:`rea.stats.importance_estimate`).
:func:`itgis_many` runs many jobs (target, seed, temperature) in lockstep, one model call per batch for all of them,
each job drawing the random numbers of its single run; :func:`itgis` is its one-job case. :func:`temperature_grid`
is the reference code's grid of proposal temperatures (ITGIS and MHIS).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from rea.single_token.inputs import log_distribution, log_prob_inputs, sample_inputs
from rea.single_token.scorer import Scorer
from rea.single_token.target_estimate import (
    TargetEstimate,
    check_estimator_arguments,
    check_jobs,
    record_warnings,
    reissue_warnings,
)
from rea.stats import importance_estimate, wilson_interval


def temperature_grid(k_min: int = -4, k_max: int = 8) -> np.ndarray:
    """The reference code's temperature grid ``T = 5^{k/4}``, ``k = k_min..k_max``."""
    return 5.0 ** (np.arange(k_min, k_max + 1) / 4)


def naive(scorer: Scorer, D, target: int, budget: int, seed: int = 0, batch_size: int = 512,
          confidence: float = 0.95) -> TargetEstimate:
    """Direct sampling: ``p̂ = (1/n) Σ_j 1[argmax ℓ(x_j) = t]``, ``x_j ~ D``, ``n = budget``; Wilson interval.

    ``confidence`` defaults to 0.95, Wu & Hilton's level (the rest of the package uses 0.96).
    """
    D = check_estimator_arguments(scorer, D, target, budget, seed)
    g = torch.Generator().manual_seed(int(seed))
    hits = 0
    for s in range(0, budget, batch_size):
        b = min(batch_size, budget - s)
        hits += int((scorer(sample_inputs(D, b, g)).argmax(-1) == target).sum())
    lo, hi = wilson_interval(hits, budget, confidence)
    return TargetEstimate(hits / budget, float(lo), float(hi), budget, "naive", {"hits": hits})


class BiasCorrectedEMA:
    """Bias-corrected exponential moving average (Adam-style), the reference ITGIS score update.

    ``m_0 = 0``, ``m_b = decay·m_{b−1} + (1 − decay)·ḡ_b``, ``s_b = m_b / (1 − decay^b)``, i.e.
    ``s_b = Σ_{j≤b} (1 − decay) decay^{b−j} ḡ_j / (1 − decay^b)``: the weights sum to one at every b (a constant ḡ
    gives s_b = ḡ from the first batch on) and the first batch's weight falls like decay^{b−1}. The reference code
    (``lpe/methods.py``) keeps ``S_b = decay·S_{b−1} + ḡ_b`` and divides it by the temperature
    ``T (1 − decay^b)/(1 − decay)``: the same ``s_b / T``. ``update(ḡ_b)`` returns ``s_b``.
    """

    def __init__(self, decay: float = 0.9):
        if not (isinstance(decay, (int, float)) and 0 <= decay < 1):
            raise ValueError(f"decay must be a number in [0, 1), got {decay!r}")
        self.decay, self.m, self.b = float(decay), None, 0

    def update(self, g):
        """Fold in the batch mean ``g`` (any shape, e.g. ``[k, V]``) and return the corrected average ``s_b``."""
        self.b += 1
        self.m = (1 - self.decay) * g if self.m is None else self.decay * self.m + (1 - self.decay) * g
        return self.m / (1 - self.decay**self.b)


def itgis(scorer: Scorer, D, target: int, budget: int, seed: int = 0, temperature: float = 1.0,
          batch_size: int | None = None, decay: float = 0.9, confidence: float = 0.95) -> TargetEstimate:
    """Independent token gradient importance sampling [WH].

    Proposal ``q(x) = Π_i q_i(x_i)``, ``q_i(v) ∝ D_i(v) exp(s_i(v)/T)``. The score ``s[k, V]`` is the bias-corrected
    exponential moving average (:class:`BiasCorrectedEMA`, as the reference code) of
    ``ḡ_b[i, v] = mean_{x in batch b} ∂ℓ_t(x)/∂onehot_i(v)`` over the batches drawn so far from the current proposal:
    ``s = 0`` for the first batch (naive), then ``m_b = decay·m_{b−1} + (1−decay)·ḡ_b`` (``m_0 = 0``) and
    ``s = m_b/(1 − decay^b)``. Estimate ``p̂ = (1/n) Σ_j w_j 1[argmax ℓ(x_j) = t]`` with ``w_j = D(x_j)/q_{b(j)}(x_j)``
    (unbiased: each batch uses the proposal fixed before it was drawn) and its interval from
    :func:`rea.stats.importance_estimate` (effective-count Wilson interval at ``confidence``, default 0.95, Wu &
    Hilton's level; an :class:`rea.stats.ISIntervalWarning` without hits or with few effective hits). One forward +
    backward per sample = one call; ``batch_size`` defaults to ``clip(budget/16, 16, 256)``.
    """
    (est,), caught = _itgis_jobs(scorer, D, [target], budget, seed, temperature, batch_size, decay, confidence)
    reissue_warnings(caught)
    return est


def itgis_many(scorer: Scorer, D, targets: Sequence[int], budget: int, seed: int | Sequence[int] = 0,
               temperature: float | Sequence[float] = 1.0, batch_size: int | None = None, decay: float = 0.9,
               confidence: float = 0.95) -> list[TargetEstimate]:
    """:func:`itgis` for J jobs at once, in lockstep: job j is ``(targets[j], seed_j, T_j)``, with ``seed`` and
    ``temperature`` one value for all jobs or one per target; D, budget, ``batch_size``, ``decay`` and ``confidence``
    are shared.

    Batch b of every job goes through one model call (forward + backward of ``[J·batch, k]`` inputs with per-row
    targets). Each job keeps its own score ``s_j[k, V]`` and draws from its own generator as its single run does, so
    estimate j equals ``itgis(scorer, D, targets[j], budget, seed_j, T_j, ...)`` up to the float rounding of the
    larger matmuls. Returns the estimates in job order; warnings as :func:`itgis`.
    """
    ests, caught = _itgis_jobs(scorer, D, targets, budget, seed, temperature, batch_size, decay, confidence)
    reissue_warnings(caught)
    return ests


def _itgis_jobs(scorer: Scorer, D, targets, budget: int, seed, temperature, batch_size: int | None, decay: float,
                confidence: float) -> tuple[list[TargetEstimate], list[warnings.WarningMessage]]:
    """Check the arguments (each job as its single run, then ``decay`` and ``batch_size``), draw every job's samples
    in lockstep and finish each one; returns the estimates and the warnings they raised (recorded, for the caller
    to issue)."""
    D, jobs = check_jobs(scorer, D, targets, budget, seed, temperature)
    ema = BiasCorrectedEMA(decay)
    if batch_size is None:
        batch_size = int(min(256, max(16, budget // 16)))
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    hit, logw, n_calls, n_batches = _itgis_samples(scorer, D, jobs, budget, batch_size, ema)
    return record_warnings(lambda: [_itgis_estimate(h, lw, n_calls, n_batches, T, confidence)
                                    for h, lw, (_, _, T) in zip(hit, logw, jobs)])


def _itgis_estimate(hit: np.ndarray, logw: np.ndarray, n_calls: int, n_batches: int, temperature: float,
                    confidence: float) -> TargetEstimate:
    """One job's estimate from its hits ``hit[n]`` and log-weights ``logw[n]``: :func:`rea.stats.importance_estimate`
    and the Kish count of the hits' weights, ``ess_hits = (Σ w·hit)² / Σ (w·hit)²``."""
    est = importance_estimate(hit, logw, confidence=confidence)
    wh = hit * np.exp(logw)
    ess = float(wh.sum() ** 2 / (wh ** 2).sum()) if wh.any() else 0.0
    return TargetEstimate(est.value, est.ci_low, est.ci_high, n_calls, "itgis",
                          {"se": est.stderr, "batches": n_batches, "hits": int((wh > 0).sum()), "ess_hits": ess,
                           "temperature": temperature})


def _itgis_samples(scorer: Scorer, D: torch.Tensor, jobs: list[tuple[int, int, float]], budget: int,
                   batch_size: int, ema: BiasCorrectedEMA) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Draw ``budget`` inputs per job batch by batch from the adapting ITGIS proposals of J jobs ``(t, seed, T)``.

    Job j's batch b comes from ``log q_j = log_softmax(log D + s_{j,b−1}/T_j)`` (``s_0 = 0``), drawn from the job's
    own generator (seeded with its seed); the J batches go through one model call with per-row targets. Then the
    mean one-hot gradient of ``ℓ_{t_j}`` over job j's batch, ``ḡ_{j,b} = mean(∂ℓ_t/∂e) @ W_Eᵀ`` ``[k, V]``, updates
    its score, ``s_b = ema.update(ḡ_b)`` on the stacked ``[J, k, V]`` (the update is elementwise).
    Returns ``(hit[J, n], log w[J, n], n, n_batches)`` with ``log w = log D(x) − log q_b(x)`` and ``n = budget``
    calls per job.
    """
    gens = [torch.Generator().manual_seed(int(s)) for _, s, _ in jobs]
    target = torch.tensor([int(t) for t, _, _ in jobs])
    temps = torch.tensor([float(T) for _, _, T in jobs], dtype=torch.float64)[:, None, None]
    logD = log_distribution(D)
    WE = scorer.W_E.detach()
    s = torch.zeros((len(jobs), *D.shape), dtype=D.dtype)
    hits: list[torch.Tensor] = []
    logws: list[torch.Tensor] = []
    done, n_batches = 0, 0
    while done < budget:
        b = min(batch_size, budget - done)
        logq = torch.log_softmax(logD + s / temps, dim=-1)  # [J, k, V]
        x = [sample_inputs(lq.exp(), b, g) for lq, g in zip(logq, gens)]  # J × [b, k]
        rows = target.repeat_interleave(b)
        logits, ge = scorer.target_grad(torch.cat(x), rows)
        hits.append((logits.argmax(-1).cpu() == rows).double().view(-1, b))
        logws.append(torch.stack([log_prob_inputs(logD, xj) - log_prob_inputs(lq, xj) for xj, lq in zip(x, logq)]))
        gbar = (ge.view(-1, b, *ge.shape[1:]).mean(1) @ WE.T).double().cpu()  # [J, k, V]: mean ∂ℓ_t/∂onehot
        done += b
        n_batches += 1
        s = ema.update(gbar)
    return torch.cat(hits, 1).numpy(), torch.cat(logws, 1).numpy(), done, n_batches
