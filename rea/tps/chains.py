r"""The chains of a TPS run -- which rows of the batch exist, at which bias each row is at its t-th move -- and each
row's move RNG.

Annealed (the paper's method, ``exchange_every=None``): J chains per running direction, chain ids 0..J−1 (positive
biases) and J..2J−1 (negative). Chain b anneals through its direction's schedule λ_1, …, λ_K, N moves per bias: its
move t is step s = t mod N of bias k = ⌊t/N⌋, and it makes K·N moves.

Replica exchange (``exchange_every=M``): every bias of both schedules runs at once. Ladder j (j < J) has one replica
per bias, J·(K_+ + K_−) rows in all; the replica of ladder j at a bias of the positive direction has chain id j, at
a negative one J+j -- so the j-th chains of both directions form ladder j, the unit the bootstrap resamples
(:mod:`rea.tps.mbar`). A row stays at its bias: move t is step s = t of bias k (its own), N moves per row. Every M
moves the replicas of a ladder, ordered by λ, try to swap states (:mod:`rea.tps.exchange`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rea.tps.config import TPSConfig

_RNG_TAG = 0x545053  # "TPS": keeps the move RNGs' streams apart from the per-sequence sampling streams


def chain_rng(seed: int, row: int) -> np.random.Generator:
    """The move RNG of row ``row`` of a run seeded ``seed``: PCG64 seeded from (seed, tag, row)."""
    return np.random.Generator(np.random.PCG64([int(seed), _RNG_TAG, int(row)]))


@dataclass(frozen=True)
class ChainRows:
    """The rows of a run: ``chain_ids [B]``, ``directions [B]`` (+1/−1), ``bias_index [B]`` (each row's fixed bias
    in replica exchange; None when annealing), each direction's schedule, N (moves per bias) and J (chains per
    direction, or ladders)."""

    chain_ids: np.ndarray
    directions: np.ndarray
    bias_index: np.ndarray | None
    schedules: dict
    n_steps: int
    n_chains: int

    @classmethod
    def of(cls, config: TPSConfig) -> ChainRows:
        """Annealed: J rows per running direction, positive first. Replica exchange: per direction, per bias, the
        J ladders' replicas."""
        J, dirs = config.n_chains, config.directions
        schedules = {1: config.lambdas_pos, -1: config.lambdas_neg}
        if config.exchange_every is None:
            chain_ids = np.concatenate([np.arange(J) + (0 if d > 0 else J) for d in dirs])
            directions = np.concatenate([np.full(J, d) for d in dirs]).astype(np.int8)
            return cls(chain_ids, directions, None, schedules, config.n_steps, J)
        cells = [(d, k, j) for d in dirs for k in range(len(schedules[d])) for j in range(J)]
        chain_ids = np.array([j + (0 if d > 0 else J) for d, _, j in cells])
        directions = np.array([d for d, _, _ in cells], dtype=np.int8)
        bias_index = np.array([k for _, k, _ in cells])
        return cls(chain_ids, directions, bias_index, schedules, config.n_steps, J)

    def __len__(self) -> int:
        return len(self.chain_ids)

    @property
    def exchanging(self) -> bool:
        """Whether the rows are replica-exchange ladders."""
        return self.bias_index is not None

    def schedule(self, i: int) -> tuple:
        """The biases of row ``i``'s direction."""
        return self.schedules[int(self.directions[i])]

    def bias_of(self, i: int, t: int) -> tuple[int, int, float]:
        """(bias index k, step s within the bias, λ) of row ``i``'s move ``t``."""
        if self.exchanging:
            k, s = int(self.bias_index[i]), int(t)
        else:
            k, s = divmod(int(t), self.n_steps)
        return k, s, float(self.schedule(i)[k])

    def total_moves(self) -> np.ndarray:
        """Moves each row makes in a complete run ``[B]``: N per bias it visits."""
        if self.exchanging:
            return np.full(len(self), self.n_steps)
        return np.array([len(self.schedule(i)) * self.n_steps for i in range(len(self))])

    def ladders(self) -> list[np.ndarray]:
        """Replica exchange: the rows of each ladder j, ordered by λ (ties by row) -> list of int arrays."""
        if not self.exchanging:
            return []
        ladder = self.chain_ids % self.n_chains
        lams = np.array([self.bias_of(i, 0)[2] for i in range(len(self))])
        return [rows[np.lexsort((rows, lams[rows]))] for rows in (np.flatnonzero(ladder == j)
                                                                 for j in range(self.n_chains))]
