"""Metropolis–Hastings importance sampling (MHIS) [WH] for ``P_D[argmax ℓ(x) = t]``.

``n_chains`` parallel chains sample the tilted density ``π(x) ∝ D(x) exp(ℓ_t(x)/T)`` with single-position moves
proposed from the gradient of ``ℓ_t`` w.r.t. one-hot inputs; the self-normalised ratio of their post-burn-in states
estimates p, with an error bar from the spread across chains. Steps, in order: :func:`_proposal_support` (where moves
can go), :func:`_metropolis_step` (one move of every chain), :func:`_run_chains` (the chain loop and its record),
:func:`_self_normalised_ratio` (p̂ and its SE), :func:`_independent_draws` and :func:`_warn_on_chain_hits` (the
interval's effective count and its caveats); :func:`mhis` puts them together. :func:`mhis_many` runs many jobs
(target, seed, temperature) in lockstep, one model call per step for all their chains (:class:`_Lockstep`), each job
drawing the random numbers of its single run; :func:`mhis` is its one-job case.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from rea.single_token.inputs import log_distribution, sample_inputs
from rea.single_token.scorer import Scorer
from rea.single_token.target_estimate import TargetEstimate, check_jobs, record_warnings, reissue_warnings
from rea.stats import ISIntervalWarning, is_interval, statistical_inefficiency_multiple, variance_df


class _Support(NamedTuple):
    """Where MHIS moves go: positions that can change and the union of the supports (proposals never need more)."""

    free: torch.Tensor  # [F] positions whose support has more than one token
    cols: torch.Tensor  # [U] token ids in the union of the supports
    col_of: torch.Tensor  # [V] column of each token id in ``cols`` (−1 outside)
    logD: torch.Tensor  # [k, U] log D on those columns
    W_E: torch.Tensor  # [U, H] their embeddings


class _Chains(NamedTuple):
    """The current states of B chains: inputs ``x[B, k]``, target logits ``M[B]`` (float64), hits ``hit[B]`` (bool)
    and embedding gradients ``ge[B, k, H] = ∂ℓ_t/∂e`` (each row with its own job's target t)."""

    x: torch.Tensor
    M: torch.Tensor
    hit: torch.Tensor
    ge: torch.Tensor


class _Lockstep(NamedTuple):
    """J jobs moved together, C chains each: row ``r`` of the stacked chains (``B = J·C`` rows) belongs to job
    ``r // C``, which draws every random number from its own generator, seeded as its single run seeds it."""

    gens: list[torch.Generator]  # [J]
    target: torch.Tensor  # [B] each row's target token
    T: torch.Tensor  # [B] float64, each row's temperature
    C: int

    def draw(self, sample: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
        """``cat_j sample(g_j)``: one draw per job from its own generator, in job order."""
        return torch.cat([sample(g) for g in self.gens])


def _lockstep(jobs: list[tuple[int, int, float]], C: int) -> _Lockstep:
    """The lockstep of ``jobs`` ``(target, seed, T)`` with ``C`` chains each."""
    return _Lockstep([torch.Generator().manual_seed(int(s)) for _, s, _ in jobs],
                     torch.tensor([int(t) for t, _, _ in jobs]).repeat_interleave(C),
                     torch.tensor([float(T) for _, _, T in jobs], dtype=torch.float64).repeat_interleave(C), C)


def _check_mhis_arguments(budget: int, n_chains: int, burn_in: float) -> None:
    """MHIS's own arguments: ``n_chains ≥ 2`` (integer), ``budget ≥ 2·n_chains``, ``0 ≤ burn_in < 1``."""
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


def _evaluate(scorer: Scorer, x: torch.Tensor, target: torch.Tensor) -> _Chains:
    """One forward + backward of ``x[B, k]`` with per-row targets ``target[B]``: the chain states with their
    ``ℓ_t``, hits and gradients."""
    logits, ge = scorer.target_grad(x, target)
    lt = logits.gather(1, target.to(logits.device)[:, None])[:, 0]
    return _Chains(x, lt.double().cpu(), logits.argmax(-1).cpu() == target, ge)


def _proposal_log_probs(ge: torch.Tensor, pos: torch.Tensor, support: _Support, T: torch.Tensor) -> torch.Tensor:
    """``log r(·|x) [B, U]`` at the chosen positions: ``log_softmax(log D_i + g_i/T)`` with ``g_i = ∂ℓ_t/∂onehot_i``
    from the embedding gradients ``ge[B, k, H]`` (``g_i = ge[:, i] @ W_Eᵀ``) and each row's temperature ``T[B]``."""
    rows = torch.arange(ge.shape[0])
    g = (ge[rows, pos] @ support.W_E.T).double().cpu()  # [B, |support|]: ∂ℓ_t/∂onehot at the chosen positions
    return torch.log_softmax(support.logD[pos] + g / T[:, None], dim=1)


def _metropolis_step(scorer: Scorer, chains: _Chains, support: _Support,
                     lock: _Lockstep) -> tuple[_Chains, torch.Tensor]:
    """One Metropolis–Hastings move of every chain of every job (one model call of B = J·C rows); returns the new
    states and the accepted count per job ``[J]``.

    Position ``i`` uniform over the free positions, ``x'_i ~ r(·|x)``, accepted with probability
    ``min(1, π(x') r(x_i|x') / (π(x) r(x'_i|x)))``, ``log π = log D + ℓ_t/T`` (the reverse proposal uses the gradient
    at ``x'``). Each job draws, in this order, its positions, its proposals and its acceptance uniforms from its own
    generator, exactly as its single run does.
    """
    C = lock.C
    rows = torch.arange(chains.x.shape[0])
    pos = support.free[lock.draw(lambda g: torch.randint(len(support.free), (C,), generator=g))]
    logr_f = _proposal_log_probs(chains.ge, pos, support, lock.T)
    newc = torch.cat([torch.multinomial(p, 1, generator=g).flatten()
                      for p, g in zip(logr_f.exp().split(C), lock.gens)])
    oldc = support.col_of[chains.x[rows, pos]]
    x2 = chains.x.clone()
    x2[rows, pos] = support.cols[newc]
    new = _evaluate(scorer, x2, lock.target)
    logr_r = _proposal_log_probs(new.ge, pos, support, lock.T)
    log_alpha = ((new.M - chains.M) / lock.T + support.logD[pos, newc] - support.logD[pos, oldc]
                 + logr_r[rows, oldc] - logr_f[rows, newc])
    acc = lock.draw(lambda g: torch.rand(C, generator=g, dtype=torch.float64)).log() < log_alpha
    kept = _Chains(torch.where(acc[:, None], x2, chains.x), torch.where(acc, new.M, chains.M),
                   torch.where(acc, new.hit, chains.hit),
                   torch.where(acc.to(chains.ge.device)[:, None, None], new.ge, chains.ge))
    return kept, acc.view(-1, C).sum(1)


def _run_chains(scorer: Scorer, D: torch.Tensor, lock: _Lockstep, n_steps: int,
                n_burn: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Start ``C`` chains per job from D and move them ``n_steps`` times; record the states after ``n_burn`` steps.

    Returns ``(M[J, C, L], hit[J, C, L], calls, accepted[J])``: the recorded target logits and hits (float), the model
    calls of each job (``C·(1 + n_steps)``) and its accepted moves. Without a post-burn-in step the final states are
    recorded (L = 1).
    """
    J, C = len(lock.gens), lock.C
    support = _proposal_support(D, scorer.W_E.detach())
    chains = _evaluate(scorer, lock.draw(lambda g: sample_inputs(D, C, g)), lock.target)
    rec_M, rec_hit = [], []
    accepted = torch.zeros(J, dtype=torch.long)
    for step in range(n_steps):
        chains, acc = _metropolis_step(scorer, chains, support, lock)
        accepted += acc
        if step >= n_burn:
            rec_M.append(chains.M.clone())
            rec_hit.append(chains.hit.clone())
    if not rec_M:  # no post-burn-in step: use the final states
        rec_M, rec_hit = [chains.M], [chains.hit]
    Ms = torch.stack(rec_M, 1).view(J, C, -1).numpy()
    hs = torch.stack(rec_hit, 1).view(J, C, -1).numpy().astype(float)
    return Ms, hs, C * (1 + n_steps), accepted.numpy()


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
    """Warn (:class:`rea.stats.ISIntervalWarning`; :func:`mhis` and :func:`mhis_many` record it and issue it again
    attributed to their caller) when no chain hit the target (the upper bound then rests on the tilt and on mixing)
    or when one chain holds every hit."""
    if chains_hit == 0:
        warnings.warn(
            f"mhis: no chain state hit the target ({n_chains} chains × {n_states} states, ≈ {n_indep:.0f} independent "
            f"by the autocorrelation of ℓ_t): the upper bound {upper:.3g} is the Wilson bound on the chains' own "
            f"frequency π(t); it bounds p only if the tilt does not make the target rarer (π(t) ≥ p) and the chains "
            f"have mixed",
            ISIntervalWarning,
            stacklevel=2,
        )
    elif chains_hit < 2:
        warnings.warn(
            f"mhis: only {chains_hit} of {n_chains} chains hit the target: the interval's spread across chains rests "
            f"on one chain; run more or longer chains, or raise the temperature",
            ISIntervalWarning,
            stacklevel=2,
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
    (est,), caught = _mhis_jobs(scorer, D, [target], budget, seed, temperature, n_chains, burn_in, confidence)
    reissue_warnings(caught)
    return est


def mhis_many(scorer: Scorer, D, targets: Sequence[int], budget: int, seed: int | Sequence[int] = 0,
              temperature: float | Sequence[float] = 1.0, n_chains: int = 16, burn_in: float = 0.2,
              confidence: float = 0.95) -> list[TargetEstimate]:
    """:func:`mhis` for J jobs at once, moved in lockstep: job j is ``(targets[j], seed_j, T_j)``, with ``seed`` and
    ``temperature`` one value for all jobs or one per target; D, budget, ``n_chains``, ``burn_in`` and
    ``confidence`` are shared.

    Every step pushes the ``J·n_chains`` chains of all jobs through one model call (forward + backward of
    ``[J·C, k]`` inputs with per-row targets): far cheaper than J calls of C rows where the call is memory bound
    (the unembedding of a few rows).
    Each job draws its random numbers from its own generator in the order its single run does, so estimate j equals
    ``mhis(scorer, D, targets[j], budget, seed_j, T_j, ...)`` up to the float rounding of the larger matmuls; each
    job's ``n_calls`` is its own ``C·(1 + steps)``. Returns the estimates in job order; warnings as :func:`mhis`.
    """
    ests, caught = _mhis_jobs(scorer, D, targets, budget, seed, temperature, n_chains, burn_in, confidence)
    reissue_warnings(caught)
    return ests


def _mhis_jobs(scorer: Scorer, D, targets, budget: int, seed, temperature, n_chains: int, burn_in: float,
               confidence: float) -> tuple[list[TargetEstimate], list[warnings.WarningMessage]]:
    """Check the arguments (each job as its single run, then MHIS's own), run the jobs in lockstep and finish each
    one; returns the estimates and the warnings they raised (recorded, for the caller to issue)."""
    D, jobs = check_jobs(scorer, D, targets, budget, seed, temperature)
    _check_mhis_arguments(budget, n_chains, burn_in)
    C = int(n_chains)
    n_steps = budget // C - 1
    n_burn = int(round(burn_in * n_steps))
    Ms, hs, calls, accepted = _run_chains(scorer, D, _lockstep(jobs, C), n_steps, n_burn)
    return record_warnings(lambda: [_mhis_estimate(Ms[j], hs[j], calls, int(accepted[j]), n_steps, T, confidence)
                                    for j, (_, _, T) in enumerate(jobs)])


def _mhis_estimate(Ms: np.ndarray, hs: np.ndarray, calls: int, accepted: int, n_steps: int, temperature: float,
                   confidence: float) -> TargetEstimate:
    """One job's estimate from its recorded states ``Ms[C, L]``, ``hs[C, L]``: p̂ and SE
    (:func:`_self_normalised_ratio`), the effective-count interval, the chain-hit warnings and the diagnostics."""
    C = Ms.shape[0]
    p, se, r = _self_normalised_ratio(Ms, hs, temperature)
    n_indep = _independent_draws(Ms)
    lo, hi, _, _ = is_interval(p, se, n_indep, variance_df(r ** 2), confidence)
    chains_hit = int((hs.sum(1) > 0).sum())
    _warn_on_chain_hits(chains_hit, C, Ms.shape[1], n_indep, hi)
    return TargetEstimate(p, lo, hi, calls, "mhis",
                          {"se": se, "acceptance": accepted / max(1, C * n_steps), "steps": n_steps, "chains": C,
                           "chains_hit": chains_hit, "n_independent": n_indep, "hit_fraction": float(hs.mean()),
                           "temperature": temperature})
