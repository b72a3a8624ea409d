r"""The forward-shooting move of TPS [REA §3.4, Alg. 2], in three parts as in OpenPathSampling: the shooting-point
selection (:func:`select_shooting_points`), the move itself (:func:`shoot_forward`) and the Metropolis acceptance
(:func:`metropolis_accept`); :func:`forward_shooting_moves` does all three for the chains of one or several runs
as one batch.

For a bias λ the target is p_λ(x) = Z(λ)^{-1} e^{-λ φ(x)} p_M(x) over completions x of fixed length L. From x draw a
cut c uniformly in {0, …, L−1}, keep x_{<c} and regenerate x'_{≥c} from the model at temperature 1 (``c = 0``
redraws the whole completion: an independence proposal from p_M; every move regenerates at least one token). For a
fixed cut the proposal density is

    q_c(x → x') = 1[x'_{<c} = x_{<c}] · p_M(x'_{≥c} | prompt, x_{<c}),

and since the kept prefix is shared, p_M(x) = p_M(x_{<c}) p_M(x_{≥c} | x_{<c}) and likewise for x'. Hence

    q_c(x → x') / q_c(x' → x) = p_M(x'_{≥c} | x_{<c}) / p_M(x_{≥c} | x_{<c}) = p_M(x') / p_M(x),

and the Metropolis–Hastings ratio for p_λ collapses to

    [p_λ(x') q_c(x' → x)] / [p_λ(x) q_c(x → x')] = e^{-λ (φ(x') − φ(x))}.

The move is accepted with probability α = min(1, e^{−λ(φ' − φ)}): all model terms cancel (the completions have a
fixed length, so no length term appears either), and no log-probabilities are needed unless φ is Log-Prob -- in
which case :func:`rea.sampling.regenerate` already returns the per-token log p_M of the proposal. At λ = 0 every
move is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rea.observables import evaluate
from rea.sampling import regenerate
from rea.tps.records import as_samples


def select_shooting_points(rng: np.random.Generator, n_chains: int, length: int) -> np.ndarray:
    """The cut of every chain, c ~ Uniform{0, …, L−1} -> int ``[B]``: positions ≥ c are regenerated."""
    return rng.integers(0, length, size=n_chains)


def shoot_forward(lm, prompt_ids, tokens, logp, cut, uniforms) -> tuple[np.ndarray, np.ndarray]:
    """The proposal x' = (x_{<c}, x'_{≥c}) with x'_{≥c} ~ p_M(· | prompt, x_{<c}), each token drawn by the sampler's
    Gumbel-max keyed by ``uniforms [B, L]``; ``tokens``, ``logp`` ``[B, L]`` are the current states
    -> (tokens', log p_M per token) ``[B, L]``."""
    new_tokens, new_logp, _ = regenerate(lm, prompt_ids, tokens, cut, uniforms, logp)
    return new_tokens, new_logp


def metropolis_accept(lam, phi, phi_proposed, u) -> np.ndarray:
    """Accept iff u < α = min(1, e^{−λ(φ' − φ)}) for uniforms ``u [B]``, biases ``lam [B]``, φ and φ' ``[B]``
    -> bool ``[B]``."""
    log_alpha = np.minimum(0.0, -lam * (phi_proposed - phi))
    return u < np.exp(log_alpha)


@dataclass
class Move:
    """One forward-shooting move of B chains: ``cut [B]``, the proposals' ``tokens``, ``logp`` ``[B, L]`` and
    ``phi_proposed [B]``, and ``accepted [B]``."""

    cut: np.ndarray
    tokens: np.ndarray
    logp: np.ndarray
    phi_proposed: np.ndarray
    accepted: np.ndarray


def draw_move(rng: np.random.Generator, n_chains: int, length: int):
    """The random numbers of one move of B chains, drawn from ``rng`` in this order: the cuts ``[B]``
    (:func:`select_shooting_points`), the regeneration uniforms ``[B, L]`` and the acceptance uniforms ``[B]``."""
    cut = select_shooting_points(rng, n_chains, length)
    return cut, rng.random((n_chains, length)), rng.random(n_chains)


def forward_shooting_moves(lm, prompt: str, prompt_ids, chains: list[dict]) -> list[Move]:
    """One move of every chain of several independent runs that share the prompt, as one batch of the model.

    Each entry of ``chains`` is one run's ``tokens``, ``logp`` ``[B_r, L]``, ``phi``, ``lam`` ``[B_r]``, its
    ``observable`` and its move ``rng``. Each run draws its random numbers from its own RNG (:func:`draw_move`), so a
    run's moves are the same whether it runs alone or beside others; the regenerations of all runs go through one
    :func:`shoot_forward` (rows concatenated), then each run evaluates its observable and accepts on its own.
    """
    draws = [draw_move(c["rng"], *c["tokens"].shape) for c in chains]
    tokens = np.concatenate([c["tokens"] for c in chains])
    logp = np.concatenate([c["logp"] for c in chains])
    cut = np.concatenate([d[0] for d in draws])
    new_tokens, new_logp = shoot_forward(lm, prompt_ids, tokens, logp, cut, np.concatenate([d[1] for d in draws]))
    moves, lo = [], 0
    for c, (cut_r, _, u_accept) in zip(chains, draws):
        hi = lo + len(cut_r)
        phi_proposed = evaluate(c["observable"], as_samples(lm, prompt, prompt_ids, new_tokens[lo:hi],
                                                            new_logp[lo:hi]))
        accepted = metropolis_accept(c["lam"], c["phi"], phi_proposed, u_accept)
        moves.append(Move(cut_r, new_tokens[lo:hi], new_logp[lo:hi], phi_proposed, accepted))
        lo = hi
    return moves
