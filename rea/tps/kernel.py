r"""Forward shooting as a Markov kernel on a set of completions: m moves of each of B rows at the row's own bias.

The annealed run (:mod:`rea.tps.run`) owns its chains, records and checkpoints; an SMC sampler across a bias ladder
(:mod:`rea.smc.ladder`) needs only the kernel: given B completions x^b, biases λ_b and the random numbers of m moves
per row, apply the moves and return the new states. Each move is the one of :mod:`rea.tps.move` -- a cut c, the
suffix x_{≥c} regenerated from p_M by the Gumbel-max draws of its uniforms, accepted with probability

    α = min(1, e^{−λ_b (φ(x') − φ(x))}),

which leaves p_{λ_b}(x) ∝ e^{−λ_b φ(x)} p_M(x) invariant -- and the regenerations share one decoder through the
shooters of :mod:`rea.tps.shooting` (continuous batching where the decoder supports it: every row runs its m moves
at its own pace; otherwise lockstep).

The random numbers are inputs (:func:`draw_moves`), so a row's moves depend on its state and its numbers only, not
on the batch it shares or the order in which its moves complete.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rea.lm.threads import decode_threads, torch_threads
from rea.tps.move import metropolis_accept, select_shooting_points
from rea.tps.shooting import make_shooter


@dataclass
class Moves:
    """The random numbers of m moves of B rows: ``cut`` int ``[B, m]`` (c ~ Uniform{0..L−1}), ``uniforms``
    ``[B, m, L]`` (uniform j keys the Gumbel-max draw of token j), ``accept`` ``[B, m]`` (the Metropolis uniform)."""

    cut: np.ndarray
    uniforms: np.ndarray
    accept: np.ndarray

    @property
    def n_moves(self) -> int:
        return self.cut.shape[1]

    @staticmethod
    def concat(parts: list[Moves]) -> Moves:
        """The rows of several :class:`Moves` (same m and L) stacked in order."""
        return Moves(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("cut", "uniforms", "accept")))


def draw_moves(rng: np.random.Generator, n_rows: int, n_moves: int, length: int) -> Moves:
    """The random numbers of ``n_moves`` moves of ``n_rows`` rows, drawn from ``rng`` in this order: all cuts
    (:func:`rea.tps.move.select_shooting_points`, row-major ``[B, m]``), all regeneration uniforms ``[B, m, L]``,
    all acceptance uniforms ``[B, m]``."""
    cut = select_shooting_points(rng, n_rows * n_moves, length).reshape(n_rows, n_moves)
    return Moves(cut, rng.random((n_rows, n_moves, length)), rng.random((n_rows, n_moves)))


@dataclass
class Shot:
    """Rows after their moves: ``tokens`` int64 ``[B, L]``, ``logp`` ``[B, L]`` (per-token log p_M), ``phi`` ``[B]``;
    ``accepted`` int ``[B]`` (moves accepted per row), ``generated`` int ``[B]`` (tokens regenerated per row,
    Σ_moves L − c, rejected proposals included), ``min_cut`` int ``[B]`` (the smallest cut of an accepted move: the
    positions before it were not changed; L where no move was accepted)."""

    tokens: np.ndarray
    logp: np.ndarray
    phi: np.ndarray
    accepted: np.ndarray
    generated: np.ndarray
    min_cut: np.ndarray


def shoot(lm, prompt_ids, tokens, logp, phi, lam, moves: Moves, observable, batching: str = "auto",
          on_moves=None) -> Shot:
    """Apply the m moves of ``moves`` to each row (in order), at biases ``lam`` (scalar or ``[B]``).

    ``tokens``, ``logp`` ``[B, L]`` and ``phi`` ``[B]`` are the rows' states (not modified); ``observable`` maps
    completions ``(tokens[n, L], logp[n, L]) -> φ[n]`` (e.g. a :class:`rea.smc.PrefixObservable`); ``on_moves(n)``
    is called as n moves complete (progress). Returns the :class:`Shot`.
    """
    tokens, logp = np.array(tokens, dtype=np.int64), np.array(logp, dtype=np.float64)
    phi = np.array(phi, dtype=np.float64)
    n_rows, length = tokens.shape
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), (n_rows,))
    accepted, generated = np.zeros(n_rows, np.int64), np.zeros(n_rows, np.int64)
    min_cut = np.full(n_rows, length, np.int64)
    if n_rows == 0 or moves.n_moves == 0:
        return Shot(tokens, logp, phi, accepted, generated, min_cut)
    done = np.zeros(n_rows, np.int64)  # moves started per row (the one in flight included)
    with torch_threads(decode_threads(lm.device)):
        shooter = make_shooter(lm, prompt_ids, tokens, logp, batching)

        def start(rows):
            j = done[rows]
            shooter.start(rows, tokens[rows], logp[rows], moves.cut[rows, j], moves.uniforms[rows, j])
            done[rows] += 1

        start(np.arange(n_rows))
        while True:
            rows, new_tokens, new_logp = shooter.advance()
            j = done[rows] - 1
            new_phi = observable(new_tokens, new_logp)
            ok = metropolis_accept(lam[rows], phi[rows], new_phi, moves.accept[rows, j])
            generated[rows] += length - moves.cut[rows, j]
            take = rows[ok]
            tokens[take], logp[take], phi[take] = new_tokens[ok], new_logp[ok], new_phi[ok]
            accepted[take] += 1
            min_cut[take] = np.minimum(min_cut[take], moves.cut[rows, j][ok])
            shooter.accept(take)
            if on_moves is not None:
                on_moves(len(rows))
            again = rows[done[rows] < moves.n_moves]
            if len(again):
                start(again)
            elif not np.any(done < moves.n_moves) and _idle(shooter):
                break
    return Shot(tokens, logp, phi, accepted, generated, min_cut)


def _idle(shooter) -> bool:
    """Whether no move is in flight in ``shooter`` (continuous: no active row; lockstep: nothing queued)."""
    active = getattr(shooter, "active", None)
    if active is not None:
        return not bool(active.any())
    return not shooter.pending
