r"""Forward and head shooting as a Markov kernel on a set of completions: m moves of each of B rows at the row's bias.

The annealed run (:mod:`rea.tps.run`) owns its chains, records and checkpoints; an SMC sampler across a bias ladder
(:mod:`rea.smc.ladder`) needs only the kernel: given B completions x^b, biases λ_b and the random numbers of m moves
per row, apply the moves and return the new states. Each move is the one of :mod:`rea.tps.move` -- a cut c, the
suffix x_{≥c} regenerated from p_M by the Gumbel-max draws of its uniforms, accepted with probability

    α = min(1, e^{−λ_b (φ(x') − φ(x))}),

which leaves p_{λ_b}(x) ∝ e^{−λ_b φ(x)} p_M(x) invariant -- and the regenerations share one decoder through the
shooters of :mod:`rea.tps.shooting` (continuous batching where the decoder supports it: every row runs its m moves
at its own pace; otherwise lockstep).

A *head move* (:func:`head_moves`, the move of kind ``head``) refreshes the start instead: a cut c ∈ {1..L}, a new
head x'_{<c} drawn from p_M (the same Gumbel-max draws of the move's uniforms ``u[:c]``), the old suffix s = x_{≥c}
kept and teacher-forced (:func:`rea.sampling.score`) after the new head, accepted with

    α = min(1, [p_M(s | x'_{<c}) / p_M(s | x_{<c})] · e^{−λ_b (φ(x') − φ(x))}).

It is Metropolis–Hastings with the independent proposal q(x'_{<c}) = p_M(x'_{<c}) for the head of
π(x) ∝ p_M(x_{<c}) p_M(s | x_{<c}) e^{−λφ(x)}, so it too leaves p_{λ_b} invariant; c = L proposes a whole new
completion (α = min(1, e^{−λΔφ})). Forward shooting accepts only late cuts at strong bias, head shooting only heads
whose suffix stays likely; a fixed mixture (each move's kind drawn independently of the state) keeps p_λ invariant.

A *proposal move* (:func:`proposal_moves`; ``shoot(..., proposal=q)``) is forward shooting whose suffix is drawn
from a proposal q (:class:`rea.sampling.Proposal`, e.g. a local tilt: :func:`local_tilt`) instead of p_M, accepted
with the Metropolis–Hastings ratio of the suffixes s = x_{≥c}, s' = x'_{≥c}:

    α = min(1, [p_M(s' | x_{<c}) q(s | x_{<c})] / [p_M(s | x_{<c}) q(s' | x_{<c})] · e^{−λ_b (φ(x') − φ(x))}).

For an additive observable φ = Σ_t φ_t(x_t) (a token count, Log-Prob) the local tilt q(v | x_{<t}) ∝
p_M(v | x_{<t}) e^{−λ φ_t(v)} gives α = min(1, Π_{t≥c} C_t(x'_{<t}) / Π_{t≥c} C_t(x_{<t})), C_t the per-step
normaliser: the proposal already carries the bias, so early cuts are accepted at strong bias too and the whole
completion is refreshed, where forward shooting from p_M accepts only late cuts and leaves the start frozen.

The random numbers are inputs (:func:`draw_moves`), so a row's moves depend on its state and its numbers only, not
on the batch it shares or the order in which its moves complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rea.lm.threads import decode_threads, torch_threads
from rea.sampling import LogitBias, Proposal, Temperature, regenerate, regenerate_from, score
from rea.tps.move import metropolis_accept, select_shooting_points
from rea.tps.shooting import make_shooter


@dataclass
class Moves:
    """The random numbers of m moves of B rows: ``cut`` int ``[B, m]`` (c ~ Uniform{0..L−1}), ``uniforms``
    ``[B, m, L]`` (uniform j keys the Gumbel-max draw of token j), ``accept`` ``[B, m]`` (the Metropolis uniform),
    ``head`` bool ``[B, m]`` (the move's kind: a head move of cut c + 1 ∈ {1..L}; default all forward)."""

    cut: np.ndarray
    uniforms: np.ndarray
    accept: np.ndarray
    head: np.ndarray | None = field(default=None)

    def __post_init__(self):
        if self.head is None:
            self.head = np.zeros(np.shape(self.cut), dtype=bool)

    @property
    def n_moves(self) -> int:
        return self.cut.shape[1]

    def rows(self, index) -> Moves:
        """The moves at ``index`` of the leading axes ``[B, m]``: rows (an index or mask ``[B]``), or (rows, moves),
        e.g. ``(rows, slice(j, j + 1))`` for move j of those rows."""
        return Moves(self.cut[index], self.uniforms[index], self.accept[index], self.head[index])

    @staticmethod
    def concat(parts: list[Moves]) -> Moves:
        """The rows of several :class:`Moves` (same m and L) stacked in order."""
        return Moves(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("cut", "uniforms", "accept", "head")))


def draw_moves(rng: np.random.Generator, n_rows: int, n_moves: int, length: int, head_fraction: float = 0.0) -> Moves:
    """The random numbers of ``n_moves`` moves of ``n_rows`` rows, drawn from ``rng`` in this order: all cuts
    (:func:`rea.tps.move.select_shooting_points`, row-major ``[B, m]``), all regeneration uniforms ``[B, m, L]``,
    all acceptance uniforms ``[B, m]``, and -- only when ``head_fraction`` > 0 -- the kinds, head iff a uniform
    ``[B, m]`` < ``head_fraction`` (so ``head_fraction = 0`` draws exactly what it drew before head moves existed)."""
    cut = select_shooting_points(rng, n_rows * n_moves, length).reshape(n_rows, n_moves)
    moves = Moves(cut, rng.random((n_rows, n_moves, length)), rng.random((n_rows, n_moves)))
    if head_fraction > 0:
        moves.head = rng.random((n_rows, n_moves)) < head_fraction
    return moves


@dataclass
class Shot:
    """Rows after their moves: ``tokens`` int64 ``[B, L]``, ``logp`` ``[B, L]`` (per-token log p_M), ``phi`` ``[B]``;
    ``accepted`` int ``[B]`` (moves accepted per row), ``generated`` int ``[B]`` (tokens regenerated per row,
    Σ over forward moves of L − c plus over head moves of c, rejected proposals included), ``min_cut`` int ``[B]``
    (the smallest cut of an accepted forward move: the positions before it were not changed by one; L where none was
    accepted), ``head_cut`` int ``[B]`` (the largest cut of an accepted head move: positions from it on were not
    changed by one; 0 where none), ``scored`` int ``[B]`` (suffix tokens teacher-forced by head moves, Σ L − c)."""

    tokens: np.ndarray
    logp: np.ndarray
    phi: np.ndarray
    accepted: np.ndarray
    generated: np.ndarray
    min_cut: np.ndarray
    head_cut: np.ndarray = None
    scored: np.ndarray = None

    def __post_init__(self):
        n = len(self.phi)
        self.head_cut = np.zeros(n, np.int64) if self.head_cut is None else self.head_cut
        self.scored = np.zeros(n, np.int64) if self.scored is None else self.scored

    @property
    def frozen(self) -> np.ndarray:
        """Share of positions ``[B]`` no accepted move changed: those in [head_cut, min_cut), / L."""
        return np.maximum(self.min_cut - self.head_cut, 0) / self.tokens.shape[1]


def head_log_alpha(logp, new_logp, cut, lam, phi, new_phi) -> np.ndarray:
    r"""log α ``[B]`` of head moves: min(0, Σ_{t ≥ c_b} [new_logp[b, t] − logp[b, t]] − λ_b (φ'_b − φ_b)), the log of
    the suffix's likelihood ratio p_M(s | x'_{<c}) / p_M(s | x_{<c}) times the tilt e^{−λΔφ}, for per-token log p_M
    ``logp``, ``new_logp`` ``[B, L]`` of the current and proposed completions, cuts ``cut [B]`` (positions ≥ c are
    the kept suffix), biases ``lam``, ``phi``, ``new_phi`` ``[B]`` (``lam`` may be a scalar)."""
    logp, new_logp = np.asarray(logp, dtype=np.float64), np.asarray(new_logp, dtype=np.float64)
    after = np.arange(logp.shape[1])[None, :] >= np.asarray(cut)[:, None]  # the suffix positions t ≥ c
    log_ratio = np.sum(np.where(after, new_logp - logp, 0.0), axis=1)
    return np.minimum(0.0, log_ratio - np.asarray(lam) * (np.asarray(new_phi) - np.asarray(phi)))


def head_moves(lm, prompt_ids, tokens, logp, phi, lam, cut, uniforms, accept, observable):
    r"""One head move of each of B rows -> (tokens ``[B, L]``, logp ``[B, L]``, φ ``[B]``, accepted bool ``[B]``).

    Row b with cut c = ``cut[b]`` ∈ {1..L} draws x'_{<c} from p_M with ``uniforms[b, :c]`` (:func:`rea.sampling.
    regenerate` from cut 0 on the first c positions; rows grouped by c), keeps s = x_{≥c}, scores x' = (x'_{<c}, s)
    by teacher forcing (:func:`rea.sampling.score`) and accepts iff ``accept[b]`` < α with (:func:`head_log_alpha`)

        log α = min(0, Σ_{t ≥ c} [log p_M(x_t | x'_{<t}) − log p_M(x_t | x_{<t})] − λ_b (φ(x') − φ(x))).

    ``tokens``, ``logp`` ``[B, L]`` (the rows' per-token log p_M), ``phi``, ``lam``, ``cut``, ``accept`` ``[B]``,
    ``uniforms`` ``[B, L]``; the returned states are the proposals where accepted, the old states elsewhere.
    """
    tokens, logp = np.array(tokens, dtype=np.int64), np.array(logp, dtype=np.float64)
    new_tokens = tokens.copy()
    for c in np.unique(cut):
        rows = np.flatnonzero(cut == c)
        head, _, _ = regenerate(lm, prompt_ids, tokens[rows, :c], np.zeros(len(rows), np.int64), uniforms[rows, :c])
        new_tokens[rows, :c] = head
    new_logp = score(lm, prompt_ids, new_tokens)
    new_phi = observable(new_tokens, new_logp)
    ok = np.asarray(accept) < np.exp(head_log_alpha(logp, new_logp, cut, lam, phi, new_phi))
    return (np.where(ok[:, None], new_tokens, tokens), np.where(ok[:, None], new_logp, logp),
            np.where(ok, new_phi, phi), ok)


def local_tilt(observable, lam: float) -> Proposal | None:
    """The local tilt q(v | x_{<t}) ∝ p_M(v | x_{<t}) e^{−λ φ_t(v)} of an additive observable at bias ``lam``, or None.

    ``observable`` a :class:`rea.smc.PrefixObservable`: ``"count"`` (φ_t = 1[v ∈ S]) gives
    :class:`rea.sampling.LogitBias` (S, −λ); ``"logprob"`` (φ_t = log p_M(v | ·), so q ∝ p_M^{1−λ}) gives
    :class:`rea.sampling.Temperature` (1/(1 − λ)), for λ < 1; any other observable (not additive per token, or its
    tilt not a fixed logit map: Repeats depends on the previous token, ARI on the text) gives None (forward shooting
    from p_M).
    """
    name, lam = getattr(observable, "name", None), float(lam)
    if lam == 0:
        return None
    if name == "count":
        return LogitBias(observable.token_ids, -lam)
    if name == "logprob":
        if lam >= 1:
            raise ValueError(f"the local tilt of logprob needs λ < 1 (q ∝ p_M^(1−λ)), got λ = {lam:g}")
        return Temperature(1.0 / (1.0 - lam))
    return None


def proposal_log_alpha(logp, logq, new_logp, new_logq, cut, lam, phi, new_phi) -> np.ndarray:
    r"""log α ``[B]`` of proposal moves: min(0, Σ_{t ≥ c_b} [(new_logp − new_logq) − (logp − logq)][b, t] −
    λ_b (φ'_b − φ_b)), for per-token log p_M and log q ``[B, L]`` of the current and proposed completions (log q of
    the current one under the same q), cuts ``cut [B]``, biases ``lam`` (scalar or ``[B]``), ``phi``, ``new_phi``
    ``[B]``."""
    after = np.arange(np.shape(logp)[1])[None, :] >= np.asarray(cut)[:, None]
    gain = (np.asarray(new_logp) - np.asarray(new_logq)) - (np.asarray(logp) - np.asarray(logq))
    log_ratio = np.sum(np.where(after, gain, 0.0), axis=1)
    return np.minimum(0.0, log_ratio - np.asarray(lam) * (np.asarray(new_phi) - np.asarray(phi)))


def proposal_moves(lm, prompt_ids, tokens, logp, logq, phi, lam, cut, uniforms, accept, observable,
                   proposal: Proposal):
    r"""One proposal move of each of B rows -> (tokens ``[B, L]``, logp, logq ``[B, L]``, φ ``[B]``, accepted ``[B]``).

    Row b keeps x_{<c} (c = ``cut[b]``), draws the suffix from ``proposal`` q by the Gumbel-max of
    ``uniforms[b]`` (:func:`rea.sampling.regenerate_from`, all rows in lockstep) and accepts iff ``accept[b]`` < α
    (:func:`proposal_log_alpha`). ``logq`` ``[B, L]`` is the rows' per-token log q under ``proposal`` (e.g.
    :func:`rea.sampling.score` with ``proposal=``); a new state's log q keeps the old prefix's values.
    """
    new_tokens, new_logp, new_logq = regenerate_from(lm, prompt_ids, tokens, cut, uniforms, proposal, logp)
    after = np.arange(np.shape(tokens)[1])[None, :] >= np.asarray(cut)[:, None]
    new_logq = np.where(after, new_logq, logq)
    new_phi = observable(new_tokens, new_logp)
    ok = np.asarray(accept) < np.exp(proposal_log_alpha(logp, logq, new_logp, new_logq, cut, lam, phi, new_phi))
    pick = ok[:, None]
    return (np.where(pick, new_tokens, tokens), np.where(pick, new_logp, logp), np.where(pick, new_logq, logq),
            np.where(ok, new_phi, phi), ok)


def _shoot_proposal(lm, prompt_ids, tokens, logp, phi, lam, moves: Moves, observable, proposal, on_moves) -> Shot:
    """:func:`shoot` with the suffixes drawn from ``proposal``: m rounds of :func:`proposal_moves` (lockstep)."""
    tokens, logp = np.array(tokens, dtype=np.int64), np.array(logp, dtype=np.float64)
    phi = np.array(phi, dtype=np.float64)
    n_rows, length = tokens.shape
    out = Shot(tokens, logp, phi, np.zeros(n_rows, np.int64), np.zeros(n_rows, np.int64),
               np.full(n_rows, length, np.int64))
    if n_rows == 0 or moves.n_moves == 0:
        return out
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), (n_rows,))
    logq = score(lm, prompt_ids, tokens, proposal=proposal)
    for j in range(moves.n_moves):
        cut = moves.cut[:, j]
        tokens, logp, logq, phi, ok = proposal_moves(lm, prompt_ids, tokens, logp, logq, phi, lam, cut,
                                                     moves.uniforms[:, j], moves.accept[:, j], observable, proposal)
        out.accepted += ok
        out.generated += length - cut
        out.min_cut[ok] = np.minimum(out.min_cut[ok], cut[ok])
        if on_moves is not None:
            on_moves(n_rows)
    out.tokens, out.logp, out.phi = tokens, logp, phi
    return out


def shoot(lm, prompt_ids, tokens, logp, phi, lam, moves: Moves, observable, batching: str = "auto",
          on_moves=None, proposal: Proposal | None = None) -> Shot:
    """Apply the m moves of ``moves`` to each row (in order), at biases ``lam`` (scalar or ``[B]``).

    ``tokens``, ``logp`` ``[B, L]`` and ``phi`` ``[B]`` are the rows' states (not modified); ``observable`` maps
    completions ``(tokens[n, L], logp[n, L]) -> φ[n]`` (e.g. a :class:`rea.smc.PrefixObservable`); ``on_moves(n)``
    is called as n moves complete (progress). Returns the :class:`Shot`.

    Head moves (``moves.head``, :func:`head_moves`) break a row's run of forward moves: with any of them, the moves
    go in rounds j = 1..m, the forward moves of round j through a shooter of their own (one move per row), then its
    head moves. Without any, every row runs its m forward moves at its own pace through one shooter. With a
    ``proposal`` q (one λ for all rows; no head moves) every move is a proposal move (:func:`proposal_moves`), in
    lockstep rounds.
    """
    if proposal is not None:
        if np.any(moves.head):
            raise ValueError("head moves and a proposal cannot be combined: use head_fraction=0 with a proposal")
        if np.ndim(lam) and np.ptp(lam) != 0:
            raise ValueError("a proposal move needs one bias for all rows (its q is tilted at that λ)")
        return _shoot_proposal(lm, prompt_ids, tokens, logp, phi, lam, moves, observable, proposal, on_moves)
    if np.any(moves.head):
        return _shoot_mixed(lm, prompt_ids, tokens, logp, phi, lam, moves, observable, batching, on_moves)
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


def _shoot_mixed(lm, prompt_ids, tokens, logp, phi, lam, moves: Moves, observable, batching, on_moves) -> Shot:
    """:func:`shoot` with head moves among the moves: round by round (see there)."""
    tokens, logp = np.array(tokens, dtype=np.int64), np.array(logp, dtype=np.float64)
    phi = np.array(phi, dtype=np.float64)
    n_rows, length = tokens.shape
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), (n_rows,))
    out = Shot(tokens, logp, phi, np.zeros(n_rows, np.int64), np.zeros(n_rows, np.int64),
               np.full(n_rows, length, np.int64))
    for j in range(moves.n_moves):
        fwd, head = np.flatnonzero(~moves.head[:, j]), np.flatnonzero(moves.head[:, j])
        if len(fwd):
            one = moves.rows((fwd, slice(j, j + 1)))
            shot = shoot(lm, prompt_ids, tokens[fwd], logp[fwd], phi[fwd], lam[fwd], one, observable, batching,
                         on_moves)
            tokens[fwd], logp[fwd], phi[fwd] = shot.tokens, shot.logp, shot.phi
            out.accepted[fwd] += shot.accepted
            out.generated[fwd] += shot.generated
            out.min_cut[fwd] = np.minimum(out.min_cut[fwd], shot.min_cut)
        if len(head):
            c = moves.cut[head, j] + 1
            new = head_moves(lm, prompt_ids, tokens[head], logp[head], phi[head], lam[head], c,
                             moves.uniforms[head, j], moves.accept[head, j], observable)
            tokens[head], logp[head], phi[head], ok = new
            out.accepted[head] += ok
            out.generated[head] += c
            out.scored[head] += length - c
            out.head_cut[head[ok]] = np.maximum(out.head_cut[head[ok]], c[ok])
            if on_moves is not None:
                on_moves(len(head))
    return out


def _idle(shooter) -> bool:
    """Whether no move is in flight in ``shooter`` (continuous: no active row; lockstep: nothing queued)."""
    active = getattr(shooter, "active", None)
    if active is not None:
        return not bool(active.any())
    return not shooter.pending
