r"""The forward-shooting move of TPS [REA §3.4, Alg. 2], in three parts as in OpenPathSampling: the shooting-point
selection (:func:`select_shooting_points`), the regeneration of the suffix (:mod:`rea.tps.shooting`, which serves
the moves of many chains through one decoder) and the Metropolis acceptance (:func:`metropolis_accept`).
:func:`draw_move` draws the random numbers of one chain's move from that chain's own RNG.

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
which case the regeneration already returns the per-token log p_M of the proposal. At λ = 0 every
move is accepted.
"""

from __future__ import annotations

import numpy as np


def select_shooting_points(rng: np.random.Generator, n_chains: int, length: int) -> np.ndarray:
    """The cut of every chain, c ~ Uniform{0, …, L−1} -> int ``[B]``: positions ≥ c are regenerated."""
    return rng.integers(0, length, size=n_chains)


def expected_move_tokens(length: int) -> float:
    """Tokens one move regenerates on average: E[L − c] = (L + 1)/2 for the cut c ~ Uniform{0, …, L−1} of
    :func:`select_shooting_points` (a move with cut c decodes L − c tokens, :mod:`rea.tps.shooting`)."""
    if int(length) != length or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    return (int(length) + 1) / 2


def metropolis_accept(lam, phi, phi_proposed, u) -> np.ndarray:
    """Accept iff u < α = min(1, e^{−λ(φ' − φ)}) for uniforms ``u [B]``, biases ``lam [B]``, φ and φ' ``[B]``
    -> bool ``[B]``."""
    log_alpha = np.minimum(0.0, -lam * (np.asarray(phi_proposed) - np.asarray(phi)))
    return np.asarray(u) < np.exp(log_alpha)


def draw_move(rng: np.random.Generator, length: int) -> tuple[int, np.ndarray, float]:
    """The random numbers of one move of one chain, drawn from the chain's own ``rng`` in this order: the cut
    (:func:`select_shooting_points`), the regeneration uniforms ``[L]`` (uniform j keys the Gumbel-max draw of
    token j, :func:`rea.sampling.gumbel_draw`) and the acceptance uniform. A chain's moves therefore depend on its
    own RNG only, not on which other chains share the batch or when its moves are scheduled."""
    cut = int(select_shooting_points(rng, 1, length)[0])
    return cut, rng.random(length), float(rng.random())
