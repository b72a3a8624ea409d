r"""Replica exchange between the biases of a ladder (parallel tempering; [REA §6] names it as future work).

The replicas of a ladder sample p_{λ_1}, …, p_{λ_K} at once (:mod:`rea.tps.chains`), each moved by forward shooting.
Every M moves a round tries to swap the states of neighbouring replicas a, b (at λ_a, λ_b, in states x_a, x_b).
The joint target Π_k p_{λ_k} with p_λ(x) ∝ e^{−λφ(x)} p_M(x) gives the Metropolis ratio

    p_{λ_a}(x_b) p_{λ_b}(x_a) / (p_{λ_a}(x_a) p_{λ_b}(x_b)) = e^{(λ_a − λ_b)(φ(x_a) − φ(x_b))},

so a swap is accepted with probability α = min(1, e^{(λ_a − λ_b)(φ_a − φ_b)}) -- no model call: p_M cancels. A
replica at a strong bias thereby inherits states that weaker biases decorrelated, which forward shooting alone
refreshes only through rare early cuts.

Round r (after every replica's move (r+1)·M) tries the pairs (m_0, m_1), (m_2, m_3), … of the λ-ordered ladder
m_0, m_1, … when r is even and (m_1, m_2), (m_3, m_4), … when r is odd (deterministic even–odd alternation), each
with a uniform from the move RNG of the pair's lower replica (the row kept in ``m``), so a run's swaps are as
reproducible as its moves.
"""

from __future__ import annotations

import numpy as np

SWAP_COLUMNS = ("round", "t", "ladder", "row_low", "row_high", "lam_low", "lam_high", "phi_low", "phi_high",
                "accepted")
"""Swap-attempt records: round r, the move count t = (r+1)·M it follows, ladder j, the two rows (lower λ first),
their biases, their φ before the attempt, and whether they swapped."""


def swap_accept(lam_a, lam_b, phi_a, phi_b, u) -> np.ndarray:
    """Accept iff u < α = min(1, e^{(λ_a − λ_b)(φ_a − φ_b)}), elementwise over pairs ``[n]`` -> bool ``[n]``."""
    log_alpha = np.minimum(0.0, (np.asarray(lam_a) - np.asarray(lam_b)) * (np.asarray(phi_a) - np.asarray(phi_b)))
    return np.asarray(u) < np.exp(log_alpha)


def round_pairs(ladder: np.ndarray, round_index: int) -> list[tuple[int, int]]:
    """The neighbour pairs a round tries: even rounds (m_0, m_1), (m_2, m_3), …; odd rounds (m_1, m_2), …"""
    return [(int(ladder[p]), int(ladder[p + 1])) for p in range(round_index % 2, len(ladder) - 1, 2)]


def exchange_round(ladder: np.ndarray, lams: np.ndarray, phis: np.ndarray, round_index: int, rngs) -> dict:
    """One round of swap attempts in ``ladder`` (rows ordered by λ) given every row's λ ``lams`` and φ ``phis``
    and the rows' move RNGs ``rngs`` -> the round's records (:data:`SWAP_COLUMNS` but ``t`` and ``ladder``), one
    entry per pair."""
    pairs = round_pairs(ladder, round_index)
    low = np.array([a for a, _ in pairs], dtype=np.int64)
    high = np.array([b for _, b in pairs], dtype=np.int64)
    u = np.array([rngs[a].random() for a in low])
    accepted = swap_accept(lams[low], lams[high], phis[low], phis[high], u)
    return {"round": np.full(len(pairs), round_index), "row_low": low, "row_high": high, "lam_low": lams[low],
            "lam_high": lams[high], "phi_low": phis[low], "phi_high": phis[high], "accepted": accepted}
