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
from rea.tps.move import Move, forward_shooting_moves
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


@dataclass
class _Run:
    """One run in progress: its config, files, committed state, move RNG, the global step it stops at, its rows and
    its progress bar."""

    config: TPSConfig
    files: RunFiles
    state: ChainState
    rng: np.random.Generator
    stop_at: int
    chains: ChainRows | None = None
    bar: _Progress | None = None

    @property
    def running(self) -> bool:
        return self.state.t < self.stop_at


def _advance(lm, prompt: str, prompt_ids, runs: list[_Run]) -> None:
    """One step of every running run: all their chains move as one batch of the model, then each run records its
    step and checkpoints every ``checkpoint_every`` steps."""
    picks = []
    for run in runs:
        if run.running:
            k, s = divmod(run.state.t, run.config.n_steps)
            picks.append((run, k, s, *run.chains.at_bias(k)))
    moves = forward_shooting_moves(lm, prompt, prompt_ids, [
        {"tokens": run.state.tokens[rows], "logp": run.state.logp[rows], "phi": run.state.phi[rows], "lam": lam,
         "observable": run.config.observable, "rng": run.rng} for run, _, _, rows, lam in picks])
    for (run, k, s, rows, lam), move in zip(picks, moves):
        next_state, chunk, snapshot = _step(lm, run.config, run.chains, run.state, rows, lam, move, run.rng)
        run.files.add(chunk, snapshot)  # chunks first (filtered by t at checkpoint time), then the state at once
        run.state = next_state
        run.bar.update(k, s, run.chains.directions[rows], move.accepted)
        if run.state.t % run.config.checkpoint_every == 0 and run.running:
            run.files.checkpoint(run.state)


def _run_steps(lm, prompt: str, prompt_ids, runs: list[_Run], progress: bool) -> None:
    """Advance the runs step by step until each reaches its ``stop_at``; on KeyboardInterrupt checkpoint every run,
    then re-raise."""
    for run in runs:
        run.chains, run.bar = ChainRows.of(run.config), _Progress(run.config, run.state.t, progress)
    try:
        while any(run.running for run in runs):
            _advance(lm, prompt, prompt_ids, runs)
    except KeyboardInterrupt:
        for run in runs:
            run.bar.close()
            run.files.checkpoint(run.state)
        raise
    for run in runs:
        run.bar.close()


def _open_run(lm, config: TPSConfig, out_dir, prompt_ids, resume: bool, overwrite: bool,
              max_steps: int | None) -> _Run | TPSResult:
    """The run of ``config`` in ``out_dir``, fresh or resumed from its checkpoint; a finished run is loaded and
    returned as its :class:`TPSResult`."""
    out_dir = Path(out_dir)
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
    return _Run(config, files, state, rng, stop_at)


def _checked_config(lm, config) -> TPSConfig:
    """``config`` with ``model`` filled with ``lm.name``; a config of another model is an error."""
    if not isinstance(config, TPSConfig):
        raise ValueError(f"config must be a TPSConfig, got {type(config).__name__}")
    if config.model is None:
        return dataclasses.replace(config, model=lm.name)
    if config.model != lm.name:
        raise ValueError(f"config.model is {config.model!r} but the model passed is {lm.name!r}")
    return config


def run_tps_many(lm, configs, out_dirs, resume=False, progress: bool = True, max_steps: int | None = None,
                 overwrite: bool = False) -> list[TPSResult]:
    """Run (or resume) several independent TPS runs of one prompt at once, their chains as one batch per move.

    ``configs[i]`` runs into ``out_dirs[i]``; the other arguments are those of :func:`run_tps` and apply to every
    run (``resume`` may also be one bool per run). All configs must share the prompt and the completion length. Each run draws from its own RNG and writes
    its own files, so each gives what it gives alone (up to the float rounding of a larger batch of the model);
    what is shared is the decode: a step of the model serves the rows of every run, which on a CPU costs little more
    than serving one run's rows (SmolLM2, 2 cores: 68 ms for 8 rows or 16, 87 ms for 32). Runs with shorter
    schedules finish first and leave the batch.
    """
    configs = [_checked_config(lm, c) for c in configs]
    out_dirs = [Path(d) for d in out_dirs]
    if not configs or len(configs) != len(out_dirs):
        raise ValueError(f"configs and out_dirs must be non-empty and of one length, got {len(configs)} and "
                         f"{len(out_dirs)}")
    if len({(c.prompt, c.length) for c in configs}) > 1:
        raise ValueError("configs must share prompt and length to run as one batch; run them one at a time")
    if len(set(out_dirs)) < len(out_dirs):
        raise ValueError("out_dirs must be distinct: every run writes its own files")
    if max_steps is not None:
        max_steps = check_positive_int("max_steps", max_steps)
    prompt_ids = encode_prompt(lm, configs[0].prompt, configs[0].length)
    resumes = [resume] * len(configs) if isinstance(resume, bool) else [bool(r) for r in resume]
    if len(resumes) != len(configs):
        raise ValueError(f"resume must be a bool or one bool per run ({len(configs)}), got {len(resumes)}")
    opened = [_open_run(lm, c, d, prompt_ids, r, overwrite, max_steps)
              for c, d, r in zip(configs, out_dirs, resumes)]
    runs = [r for r in opened if isinstance(r, _Run)]
    _run_steps(lm, configs[0].prompt, prompt_ids, runs, progress)
    return [r.files.finish(lm, r.state) if isinstance(r, _Run) else r for r in opened]


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
    return run_tps_many(lm, [config], [out_dir], resume=resume, progress=progress, max_steps=max_steps,
                        overwrite=overwrite)[0]
