r"""Annealed forward-shooting transition path sampling (TPS) of completions [REA §3.4, Alg. 2]: :func:`run_tps`.

Target
------
For a bias λ the tilted distribution over completions x of fixed length L is

    p_λ(x) = Z(λ)^{-1} e^{-λ φ(x)} p_M(x),        Z(λ) = E_{p_M}[e^{-λ φ}],

so λ > 0 favours low φ and λ < 0 favours high φ. Every step moves every chain once by forward shooting
(:mod:`rea.tps.move`: a uniform cut, the suffix regenerated from p_M, accepted with probability
min(1, e^{−λ(φ' − φ)})). At λ = 0 every move is accepted and the chain is a sequence of (correlated) exact draws
from p_M.

Annealing and batching
----------------------
Each direction (positive and negative biases) has its own schedule λ_1, …, λ_K of strictly increasing |λ|; J chains
per direction start from J direct samples of p_M and spend N steps at each bias, carrying their state from one bias
to the next. All active chains of both directions advance together as one batch of B = 2J rows through
:func:`rea.sampling.regenerate`, so one lockstep decode serves every chain. When the two schedules differ in length,
the shorter direction's chains stop (and drop out of the batch) once their schedule is done.

Reproducibility and resumption
------------------------------
Initial chains are ``rea.sampling.sample(lm, prompt, 2J, L, seed)`` (rows 0..J−1 the positive direction, J..2J−1
the negative one). Every later random number -- cuts, the regeneration uniforms ``[B, L]`` and the acceptance
uniforms -- comes, in that order per step, from one ``numpy.random.Generator(PCG64)`` seeded from ``seed``, whose
``bit_generator.state`` is stored in every checkpoint. A run stopped (``max_steps`` or Ctrl-C) and resumed gives
records identical to an uninterrupted run with the same seed. The files of a run are described in
:mod:`rea.tps.store`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rea import storage
from rea.arguments import check_positive_int
from rea.observables import evaluate
from rea.sampling import encode_prompt, sample
from rea.tps.config import TPSConfig
from rea.tps.move import Move, forward_shooting_move
from rea.tps.records import SNAPSHOT_COLUMNS, TPSResult
from rea.tps.store import (
    ChainState, RunFiles, check_resumable, clear_run_dir, drop_stale_parts, load_tps, read_checkpoint,
    state_of_checkpoint,
)

_RNG_TAG = 0x545053  # "TPS": keeps the move RNG's stream apart from the per-sequence sampling streams


@dataclass(frozen=True)
class ChainRows:
    """The rows of the batch: ``chain_ids [B]`` (positive direction 0..J−1, negative J..2J−1) and ``directions [B]``
    (+1/−1) of every chain that runs, and each direction's bias schedule."""

    chain_ids: np.ndarray
    directions: np.ndarray
    schedules: dict

    @classmethod
    def of(cls, config: TPSConfig) -> "ChainRows":
        """J rows per running direction, positive first."""
        J, dirs = config.n_chains, config.directions
        chain_ids = np.concatenate([np.arange(J) + (0 if d > 0 else J) for d in dirs])
        directions = np.concatenate([np.full(J, d) for d in dirs]).astype(np.int8)
        return cls(chain_ids, directions, {1: config.lambdas_pos, -1: config.lambdas_neg})

    def at_bias(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows whose schedule has a bias k, and that bias λ_k of each -> (rows ``[B_k]``, lam ``[B_k]``)."""
        active = np.array([k < len(self.schedules[int(d)]) for d in self.directions])
        rows = np.flatnonzero(active)
        lam = np.array([self.schedules[int(self.directions[r])][k] for r in rows])
        return rows, lam


def _initial_state(lm, config: TPSConfig) -> tuple[ChainState, np.random.Generator]:
    """2J direct samples of p_M (``sample(..., seed)``) as the chains' start, and the move RNG seeded from ``seed``."""
    init = sample(lm, config.prompt, len(config.directions) * config.n_chains, config.length, seed=config.seed,
                  progress=False)
    phi = evaluate(config.observable, init)
    rng = np.random.Generator(np.random.PCG64([config.seed, _RNG_TAG]))
    return ChainState(init.tokens, init.logp, phi, 0, rng.bit_generator.state, []), rng


def _accept(state: ChainState, rows: np.ndarray, move: Move) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chains' tokens ``[B, L]``, logp ``[B, L]`` and φ ``[B]`` after the move: the proposal where accepted."""
    tokens, logp, phi = state.tokens.copy(), state.logp.copy(), state.phi.copy()
    ok = move.accepted
    take = rows[ok]
    tokens[take], logp[take], phi[take] = move.tokens[ok], move.logp[ok], move.phi_proposed[ok]
    return tokens, logp, phi


def _step(lm, config, chains, state, rows, lam, move, rng) -> tuple[ChainState, dict, dict | None]:
    """Commit one move of the rows ``rows`` at step t = ``state.t`` -> (the next state, the step's record chunk
    ``[B]``, its token snapshot or None); the end of a bias segment appends the chains' states to ``finals``."""
    t = state.t
    k, s = divmod(t, config.n_steps)
    tokens, logp, phi = _accept(state, rows, move)
    n = len(rows)
    chain, direction = chains.chain_ids[rows], chains.directions[rows]
    chunk = {
        "t": np.full(n, t), "chain": chain, "direction": direction, "bias_index": np.full(n, k), "lam": lam,
        "step": np.full(n, s), "cut": move.cut, "phi": phi[rows], "phi_proposed": move.phi_proposed,
        "accepted": move.accepted, "logp": logp[rows].sum(1),
    }
    finals = state.finals
    if s == config.n_steps - 1:
        finals = finals + [{"tokens": tokens[rows], "logp": logp[rows], "chain": chain, "direction": direction,
                            "bias_index": np.full(n, k), "lam": lam, "phi": phi[rows]}]
    snapshot = None
    if config.record_tokens_every and (s + 1) % config.record_tokens_every == 0:
        snapshot = {**{c: chunk[c] for c in SNAPSHOT_COLUMNS if c != "text"},
                    "tokens": [row.tolist() for row in tokens[rows]], "text": [lm.decode(row) for row in tokens[rows]]}
    return ChainState(tokens, logp, phi, t + 1, rng.bit_generator.state, finals), chunk, snapshot


class _Progress:
    """The tqdm bar over global steps; postfix: the bias index and each direction's acceptance at this bias."""

    def __init__(self, config: TPSConfig, t0: int, show: bool):
        self.show, self.dirs = show, config.directions
        self.bar = tqdm(total=config.total_steps, initial=t0, desc="TPS", unit="step", disable=not show)
        self.acc = {d: [0, 0] for d in self.dirs}  # accepted, proposed at the current bias

    def update(self, k: int, s: int, directions: np.ndarray, accepted: np.ndarray) -> None:
        """Count the step's acceptances per direction (from 0 at the start of a bias) and advance the bar."""
        if s == 0:
            self.acc = {d: [0, 0] for d in self.dirs}
        for d in self.dirs:
            mask = directions == d
            self.acc[d][0] += int(accepted[mask].sum())
            self.acc[d][1] += int(mask.sum())
        self.bar.update(1)
        if self.show:
            post = {"bias": k}
            for d in self.dirs:
                post["acc+" if d > 0 else "acc-"] = f"{self.acc[d][0] / max(1, self.acc[d][1]):.2f}"
            self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        """Close the bar (its last line keeps the final postfix)."""
        self.bar.close()


def _run_steps(lm, config, prompt_ids, state, rng, files: RunFiles, stop_at: int, progress: bool) -> ChainState:
    """Advance all chains step by step up to global step ``stop_at``, checkpointing every ``checkpoint_every``
    steps and on KeyboardInterrupt (then re-raised) -> the state reached."""
    chains = ChainRows.of(config)
    bar = _Progress(config, state.t, progress)
    try:
        while state.t < stop_at:
            k, s = divmod(state.t, config.n_steps)
            rows, lam = chains.at_bias(k)
            move = forward_shooting_move(lm, config.prompt, prompt_ids, config.observable, state.tokens[rows],
                                         state.logp[rows], state.phi[rows], lam, rng)
            next_state, chunk, snapshot = _step(lm, config, chains, state, rows, lam, move, rng)
            files.add(chunk, snapshot)  # chunks first (filtered by t at checkpoint time), then the state at once
            state = next_state
            bar.update(k, s, chains.directions[rows], move.accepted)
            if state.t % config.checkpoint_every == 0 and state.t < stop_at:
                files.checkpoint(state)
    except KeyboardInterrupt:
        bar.close()
        files.checkpoint(state)
        raise
    bar.close()
    return state


def run_tps(lm, config: TPSConfig, out_dir, resume: bool = False, progress: bool = True, max_steps: int | None = None,
            overwrite: bool = False) -> TPSResult:
    """Run (or resume) annealed forward-shooting TPS; see the module docstring for the algorithm.

    Parameters
    ----------
    lm : a :class:`rea.lm.models.LanguageModel`.
    config : :class:`TPSConfig`; ``config.model`` None is filled with ``lm.name`` (a different name is an error).
    out_dir : directory for the checkpoint, record parts and final Parquet files (:mod:`rea.tps.store`).
    resume : continue from ``out_dir/checkpoint.pkl``; the config must match the checkpoint's (up to
        ``checkpoint_every``). A finished run is loaded without computing anything.
    progress : show a tqdm bar over global steps (postfix: bias index, acceptance per direction at this bias).
    max_steps : stop after this many global steps of this call (checkpointing first) and return a partial result
        (``complete=False``); resume later with ``resume=True``. A KeyboardInterrupt also checkpoints, then
        re-raises.
    overwrite : start afresh even if ``out_dir`` already holds a run (its files are replaced).

    Returns
    -------
    :class:`TPSResult`. Per step and chain: ``records`` has one row (total rows when complete:
    Σ_k n_steps × (chains active at bias k), i.e. n_biases × n_steps × 2J for equal-length schedules).
    """
    if not isinstance(config, TPSConfig):
        raise ValueError(f"config must be a TPSConfig, got {type(config).__name__}")
    if config.model is None:
        config = dataclasses.replace(config, model=lm.name)
    elif config.model != lm.name:
        raise ValueError(f"config.model is {config.model!r} but the model passed is {lm.name!r}")
    if max_steps is not None:
        max_steps = check_positive_int("max_steps", max_steps)
    out_dir = Path(out_dir)
    prompt_ids = encode_prompt(lm, config.prompt, config.length)
    if resume:
        ckpt = read_checkpoint(out_dir)
        check_resumable(ckpt, config, out_dir)
        if ckpt.get("done"):
            return load_tps(out_dir, lm=lm, config=config)
        drop_stale_parts(out_dir, ckpt["n_parts"])
        files = RunFiles(out_dir, config, ckpt["provenance"], prompt_ids, ckpt["n_parts"])
        state, rng = state_of_checkpoint(ckpt)
    else:
        clear_run_dir(out_dir, overwrite)
        prov = storage.provenance(**config.to_dict(), kind="tps", prompt_ids=prompt_ids)
        files = RunFiles(out_dir, config, prov, prompt_ids, 0)
        state, rng = _initial_state(lm, config)
    stop_at = config.total_steps if max_steps is None else min(config.total_steps, state.t + max_steps)
    state = _run_steps(lm, config, prompt_ids, state, rng, files, stop_at, progress)
    return files.finish(lm, state)
