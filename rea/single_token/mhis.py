"""Metropolis–Hastings importance sampling (MHIS) [WH] for ``P_D[argmax ℓ(x) = t]``.

``n_chains`` parallel chains sample the tilted density ``π(x) ∝ D(x) exp(ℓ_t(x)/T)`` with single-position moves
proposed from the gradient of ``ℓ_t`` w.r.t. one-hot inputs; the self-normalised ratio of their post-burn-in states
estimates p, with an error bar from the spread across chains. Steps, in order: :func:`_proposal_support` (where moves
can go), :func:`_metropolis_step` (one move of every chain), :func:`_run_chains` (the chain loop and its record),
:func:`_self_normalised_ratio` (p̂ and its SE), :func:`_independent_draws` and :func:`_warn_on_chain_hits` (the
interval's effective count and its caveats); :func:`mhis` puts them together.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from rea.single_token.inputs import log_distribution, sample_inputs
from rea.single_token.scorer import Scorer
from rea.single_token.target_estimate import TargetEstimate, check_estimator_arguments
from rea.stats import ISIntervalWarning, is_interval, statistical_inefficiency_multiple, variance_df


class _Support(NamedTuple):
    """Where MHIS moves go: positions that can change and the union of the supports (proposals never need more)."""

    free: torch.Tensor  # [F] positions whose support has more than one token
    cols: torch.Tensor  # [U] token ids in the union of the supports
    col_of: torch.Tensor  # [V] column of each token id in ``cols`` (−1 outside)
    logD: torch.Tensor  # [k, U] log D on those columns
    W_E: torch.Tensor  # [U, H] their embeddings


class _Chains(NamedTuple):
    """The current states of C chains: inputs ``x[C, k]``, target logits ``M[C]`` (float64), hits ``hit[C]`` (bool)
    and embedding gradients ``ge[C, k, H] = ∂ℓ_t/∂e``."""

    x: torch.Tensor
    M: torch.Tensor
    hit: torch.Tensor
    ge: torch.Tensor


def _check_mhis_arguments(budget: int, temperature: float, n_chains: int, burn_in: float) -> None:
    """MHIS's own arguments: ``T > 0``, ``n_chains ≥ 2`` (integer), ``budget ≥ 2·n_chains``, ``0 ≤ burn_in < 1``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    if not isinstance(n_chains, (int, np.integer)) or n_chains < 2:
        raise ValueError(f"n_chains must be an integer ≥ 2 (the error bar is across chains), got {n_chains!r}")
    if budget < 2 * n_chains:
        raise ValueError(f"budget must be at least 2·n_chains = {2 * n_chains} for mhis, got {budget}")
    if not 0 <= burn_in < 1:
        raise ValueError(f"burn_in must be a fraction in [0, 1), got {burn_in!r}")


def _proposal_support(D: torch.Tensor, W_E: torch.Tensor) -> _Support:
    """The free positions of ``D[k, V]`` and its support's columns (with ``log D`` and ``W_E`` restricted to them)."""
    logD = log_distribution(D)
    free = torch.nonzero((D > 0).sum(1) > 1).flatten()
    if len(free) == 0:
        raise ValueError("D must have at least one position with more than one token for mhis")
    cols = torch.nonzero((D > 0).any(0)).flatten()  # proposals only ever need the union of the supports
    col_of = torch.full((D.shape[1],), -1, dtype=torch.long)
    col_of[cols] = torch.arange(len(cols))
    return _Support(free, cols, col_of, logD[:, cols], W_E[cols.to(W_E.device)])


def _evaluate(scorer: Scorer, x: torch.Tensor, target: int) -> _Chains:
    """One forward + backward of ``x[C, k]``: the chain states with their ``ℓ_t``, hits and gradients."""
    logits, ge = scorer.target_grad(x, target)
    return _Chains(x, logits[:, target].double().cpu(), (logits.argmax(-1) == target).cpu(), ge)


def _proposal_log_probs(ge: torch.Tensor, pos: torch.Tensor, support: _Support, temperature: float) -> torch.Tensor:
    """``log r(·|x) [C, U]`` at the chosen positions: ``log_softmax(log D_i + g_i/T)`` with ``g_i = ∂ℓ_t/∂onehot_i``
    from the embedding gradients ``ge[C, k, H]`` (``g_i = ge[:, i] @ W_Eᵀ``)."""
    rows = torch.arange(ge.shape[0])
    g = (ge[rows, pos] @ support.W_E.T).double().cpu()  # [C, |support|]: ∂ℓ_t/∂onehot at the chosen positions
    return torch.log_softmax(support.logD[pos] + g / temperature, dim=1)


def _metropolis_step(scorer: Scorer, target: int, chains: _Chains, support: _Support, temperature: float,
                     g: torch.Generator) -> tuple[_Chains, int]:
    """One Metropolis–Hastings move of every chain (C model calls); returns the new states and the accepted count.

    Position ``i`` uniform over the free positions, ``x'_i ~ r(·|x)``, accepted with probability
    ``min(1, π(x') r(x_i|x') / (π(x) r(x'_i|x)))``, ``log π = log D + ℓ_t/T`` (the reverse proposal uses the gradient
    at ``x'``).
    """
    C = chains.x.shape[0]
    rows = torch.arange(C)
    pos = support.free[torch.randint(len(support.free), (C,), generator=g)]
    logr_f = _proposal_log_probs(chains.ge, pos, support, temperature)
    newc = torch.multinomial(logr_f.exp(), 1, generator=g).flatten()
    oldc = support.col_of[chains.x[rows, pos]]
    x2 = chains.x.clone()
    x2[rows, pos] = support.cols[newc]
    new = _evaluate(scorer, x2, target)
    logr_r = _proposal_log_probs(new.ge, pos, support, temperature)
    log_alpha = ((new.M - chains.M) / temperature + support.logD[pos, newc] - support.logD[pos, oldc]
                 + logr_r[rows, oldc] - logr_f[rows, newc])
    acc = torch.rand(C, generator=g, dtype=torch.float64).log() < log_alpha
    kept = _Chains(torch.where(acc[:, None], x2, chains.x), torch.where(acc, new.M, chains.M),
                   torch.where(acc, new.hit, chains.hit),
                   torch.where(acc.to(chains.ge.device)[:, None, None], new.ge, chains.ge))
    return kept, int(acc.sum())


def _run_chains(scorer: Scorer, D: torch.Tensor, target: int, n_chains: int, n_steps: int, n_burn: int,
                temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Start ``n_chains`` chains from D and move them ``n_steps`` times; record the states after ``n_burn`` steps.

    Returns ``(M[C, L], hit[C, L], calls, accepted)``: the recorded target logits and hits (float), the model calls
    (``C·(1 + n_steps)``) and the accepted moves. Without a post-burn-in step the final states are recorded (L = 1).
    """
    g = torch.Generator().manual_seed(int(seed))
    support = _proposal_support(D, scorer.W_E.detach())
    chains = _evaluate(scorer, sample_inputs(D, n_chains, g), target)
    calls = n_chains
    rec_M, rec_hit = [], []
    accepted = 0
    for step in range(n_steps):
        chains, acc = _metropolis_step(scorer, target, chains, support, temperature, g)
        calls += n_chains
        accepted += acc
        if step >= n_burn:
            rec_M.append(chains.M.clone())
            rec_hit.append(chains.hit.clone())
    if not rec_M:  # no post-burn-in step: use the final states
        rec_M, rec_hit = [chains.M], [chains.hit]
    return torch.stack(rec_M, 1).numpy(), torch.stack(rec_hit, 1).numpy().astype(float), calls, accepted


def _self_normalised_ratio(Ms: np.ndarray, hs: np.ndarray, temperature: float) -> tuple[float, float, np.ndarray]:
    """``p̂ = Σ hit·e^{−ℓ_t/T} / Σ e^{−ℓ_t/T}`` over the states ``Ms[C, L]``, ``hs[C, L]``, and its SE across chains.

    Per chain ``num_c = Σ_l hit·e``, ``den_c = Σ_l e``; residuals ``r_c = num_c − p̂·den_c`` (delta method on the
    ratio), ``SE² = Σ_c r_c² / (C(C−1)) / mean(den)²``. Returns ``(p̂, SE, r[C])``.
    """
    C = Ms.shape[0]
    e = -Ms / temperature
    e = np.exp(e - e.max())
    num, den = (hs * e).sum(1), e.sum(1)  # per chain
    p = float(num.sum() / den.sum())
    r = num - p * den
    se = float(math.sqrt((r ** 2).sum() / (C * (C - 1))) / den.mean())
    return p, se, r


def _independent_draws(traces: np.ndarray) -> float:
    """≈ independent draws in chains ``traces[C, L]``: C·L/g with g the statistical inefficiency of the traces
    (:func:`rea.stats.statistical_inefficiency_multiple`), at least C (independent starts) and at most C·L."""
    C, L = traces.shape
    if L < 2:
        return float(C)
    g = statistical_inefficiency_multiple(list(traces))
    return float(min(C * L, max(C, C * L / g)))


def _warn_on_chain_hits(chains_hit: int, n_chains: int, n_states: int, n_indep: float, upper: float) -> None:
    """Warn (:class:`rea.stats.ISIntervalWarning`, attributed to the caller of :func:`mhis`) when no chain hit the
    target (the upper bound then rests on the tilt and on mixing) or when one chain holds every hit."""
    if chains_hit == 0:
        warnings.warn(
            f"mhis: no chain state hit the target ({n_chains} chains × {n_states} states, ≈ {n_indep:.0f} independent "
            f"by the autocorrelation of ℓ_t): the upper bound {upper:.3g} is the Wilson bound on the chains' own "
            f"frequency π(t); it bounds p only if the tilt does not make the target rarer (π(t) ≥ p) and the chains "
            f"have mixed",
            ISIntervalWarning,
            stacklevel=3,
        )
    elif chains_hit < 2:
        warnings.warn(
            f"mhis: only {chains_hit} of {n_chains} chains hit the target: the interval's spread across chains rests on "
            f"one chain; run more or longer chains, or raise the temperature",
            ISIntervalWarning,
            stacklevel=3,
        )


def mhis(scorer: Scorer, D, target: int, budget: int, seed: int = 0, temperature: float = 1.0,
         n_chains: int = 16, burn_in: float = 0.2, confidence: float = 0.95) -> TargetEstimate:
    """Metropolis–Hastings importance sampling [WH].

    Target density ``π(x) ∝ D(x) exp(ℓ_t(x)/T)``. Move: pick a position ``i`` uniformly among the positions whose
    support has more than one token, propose ``x'_i ~ r(·|x) ∝ D_i(v) exp(g_i(v; x)/T)`` with
    ``g_i(v; x) = ∂ℓ_t/∂onehot_i(v)`` at the current ``x``; accept with
    ``min(1, π(x') r(x_i|x') / (π(x) r(x'_i|x)))`` (the reverse proposal uses the gradient at ``x'``).
    Self-normalised estimate over the post-burn-in states of ``n_chains`` parallel chains:

        p̂ = Σ_n 1[argmax ℓ(x_n) = t] e^{−ℓ_t(x_n)/T} / Σ_n e^{−ℓ_t(x_n)/T}

    (consistent, not unbiased). SE from the spread across chains (delta method on the ratio of per-chain sums,
    ``r_c = num_c − p̂·den_c``, ``SE² = Σ_c r_c² / (C(C−1)) / mean(den)²``). Interval: the effective-count Wilson
    interval :func:`rea.stats.is_interval` of ``(p̂, SE)`` at ``confidence`` (default 0.95, Wu & Hilton's level) with
    ν = :func:`rea.stats.variance_df` of ``r_c²`` (the chains that carry the spread), which does not collapse to a
    point: with no hit in any chain it is ``[0, z²/(n + z²)]``, n ≈ C·L/g the independent draws (g: statistical
    inefficiency of the ℓ_t traces), a bound on the chains' own frequency π(t); it bounds p only if the tilt does not
    make t rarer (π(t) ≥ p, i.e. E_π[e^{−ℓ_t/T} | t] ≤ E_π[e^{−ℓ_t/T}], expected since the tilt favours high ℓ_t) and
    the chains have mixed. An :class:`rea.stats.ISIntervalWarning` says so, and warns when a single chain holds every
    hit. Calls: ``n_chains`` for the initial states (drawn from D) plus ``n_chains`` per step; each is a forward +
    backward. Needs ``budget ≥ 2·n_chains``.
    """
    D = check_estimator_arguments(scorer, D, target, budget, seed)
    _check_mhis_arguments(budget, temperature, n_chains, burn_in)
    C = int(n_chains)
    n_steps = budget // C - 1
    n_burn = int(round(burn_in * n_steps))
    Ms, hs, calls, accepted = _run_chains(scorer, D, target, C, n_steps, n_burn, temperature, seed)
    p, se, r = _self_normalised_ratio(Ms, hs, temperature)
    n_indep = _independent_draws(Ms)
    lo, hi, _, _ = is_interval(p, se, n_indep, variance_df(r ** 2), confidence)
    chains_hit = int((hs.sum(1) > 0).sum())
    _warn_on_chain_hits(chains_hit, C, Ms.shape[1], n_indep, hi)
    return TargetEstimate(p, lo, hi, calls, "mhis",
                          {"se": se, "acceptance": accepted / max(1, C * n_steps), "steps": n_steps, "chains": C,
                           "chains_hit": chains_hit, "n_independent": n_indep, "hit_fraction": float(hs.mean()),
                           "temperature": temperature})
