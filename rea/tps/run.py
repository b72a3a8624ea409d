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
per direction start from J direct samples of p_M and spend N moves at each bias, carrying their state from one bias
to the next. Every chain of the run (and of the other runs of :func:`run_tps_many`) is a row of one batch through
the decoder. With continuous batching (:mod:`rea.tps.shooting`, the default where the decoder supports it) each row
is on its own move: a chain whose proposal is complete is accepted or rejected and starts its next move at once,
so chains advance at their own pace and each finishes its own schedule. Records are numbered per chain (move t of
chain b, step s = t mod N of bias k = ⌊t/N⌋) and kept in step-major order, as a lockstep run writes them.

Reproducibility and resumption
------------------------------
Initial chains are ``rea.sampling.sample(lm, prompt, 2J, L, seed)`` (rows 0..J−1 the positive direction, J..2J−1
the negative one). Every later random number of chain b -- per move its cut, the regeneration uniforms ``[L]`` and
the acceptance uniform -- comes from its own ``numpy.random.Generator(PCG64([seed, tag, b]))``, whose state is
stored with the chain in every checkpoint. A chain's moves therefore do not depend on the batching or on the other
chains, and a run stopped (``max_steps`` or Ctrl-C) and resumed gives records identical to an uninterrupted run with
the same seed (up to the float rounding of a different batch of the model). The files of a run are described in
:mod:`rea.tps.store`.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rea import storage
from rea.arguments import check_positive_int
from rea.lm.threads import decode_threads, torch_threads
from rea.observables import evaluate
from rea.sampling import encode_prompt, sample_streams
from rea.tps.chains import ChainRows, chain_rng
from rea.tps.config import TPSConfig
from rea.tps.exchange import exchange_round
from rea.tps.ladder import resolve_ladder
from rea.tps.move import draw_move, metropolis_accept
from rea.tps.records import SNAPSHOT_COLUMNS, TPSResult, as_samples
from rea.tps.shooting import BATCHING, make_shooter
from rea.tps.store import (
    ChainState,
    RunFiles,
    chains_of_checkpoint,
    check_resumable,
    clear_run_dir,
    drop_stale_parts,
    load_tps,
    read_checkpoint,
)


class _Progress:
    """The tqdm bar over the run's moves; postfix: each direction's acceptance over its chains' recent moves."""

    def __init__(self, config: TPSConfig, total: int, done: int, show: bool):
        self.show, self.dirs = show, config.directions
        self.bar = tqdm(total=total, initial=done, desc="TPS", unit="move", disable=not show)
        self.recent = {d: deque(maxlen=20 * config.n_chains) for d in self.dirs}

    def update(self, directions: np.ndarray, accepted: np.ndarray) -> None:
        """Count a batch of moves of the given directions and acceptances."""
        for d, a in zip(directions.tolist(), accepted.tolist()):
            self.recent[d].append(a)
        self.bar.update(len(accepted))
        if self.show:
            self.bar.set_postfix({("acc+" if d > 0 else "acc-"): f"{np.mean(self.recent[d] or [0]):.2f}"
                                  for d in self.dirs}, refresh=False)

    def close(self) -> None:
        """Close the bar (its last line keeps the final postfix)."""
        self.bar.close()


class _Run:
    """One run in progress: its config, files, chains (:class:`ChainRows`), each chain's committed state and move
    RNG, the move each chain stops at, its progress bar and the moves committed since the last checkpoint."""

    def __init__(self, config: TPSConfig, files: RunFiles, chains: list[ChainState] | None, max_steps: int | None):
        self.config, self.files, self.max_steps = config, files, max_steps
        self.rows = ChainRows.of(config)
        self.total = self.rows.total_moves()
        self.bar: _Progress | None = None
        self.since_checkpoint = 0
        self.offset = 0  # the batch row of the run's row 0
        self.ladders = self.rows.ladders()  # replica exchange: each ladder's rows, ordered by λ
        self.lams = np.array([self.rows.bias_of(i, 0)[2] for i in range(len(self.rows))])  # each row's λ (move 0)
        self.chains = None
        if chains is not None:
            self.start_from(chains)

    def start_from(self, chains: list[ChainState]) -> None:
        """Take the rows' committed states (initial or from a checkpoint) and set each row's RNG and stop."""
        self.chains = chains
        self.rngs = [c.rng() for c in chains]
        done = np.array([c.t for c in chains])
        self.stop_at = self.total if self.max_steps is None else np.minimum(self.total, done + self.max_steps)

    def running(self, i: int) -> bool:
        return self.chains[i].t < self.stop_at[i]

    def ready(self, i: int) -> bool:
        """Whether row ``i`` may start a move: it is running and, with replica exchange, not waiting for its
        ladder's next swap round (due after every ``exchange_every`` moves)."""
        chain, every = self.chains[i], self.config.exchange_every
        return chain.t < self.stop_at[i] and (every is None or chain.exchanges >= chain.t // every)

    def exchange(self) -> list[tuple[int, int]]:
        """Replica exchange: a swap round in every ladder whose replicas have all made their next ``exchange_every``
        moves (none at the end of the run) -> the pairs of rows that swapped states. The chains change in one
        assignment, so an interrupt leaves them all before or all after the rounds."""
        every = self.config.exchange_every
        due = [(j, ladder) for j, ladder in enumerate(self.ladders)
               if (self.chains[ladder[0]].exchanges + 1) * every < self.total[ladder[0]]
               and all(self.chains[i].t >= (self.chains[ladder[0]].exchanges + 1) * every for i in ladder)]
        if not due:  # the common case, checked after every decode step that completes a move
            return []
        chains, swapped = list(self.chains), []
        for j, ladder in due:
            r = chains[ladder[0]].exchanges
            rec = exchange_round(ladder, self.lams, np.array([c.phi for c in chains]), r, self.rngs)
            for a, b, ok in zip(rec["row_low"], rec["row_high"], rec["accepted"]):
                if ok:
                    swapped.append((int(a), int(b)))
                    chains[a], chains[b] = (dataclasses.replace(chains[a], tokens=chains[b].tokens,
                                                                logp=chains[b].logp, phi=chains[b].phi),
                                            dataclasses.replace(chains[b], tokens=chains[a].tokens,
                                                                logp=chains[a].logp, phi=chains[a].phi))
            for i in ladder:
                chains[i] = dataclasses.replace(chains[i], exchanges=r + 1, rng_state=self.rngs[i].bit_generator.state)
            self.files.add_swaps({**rec, "t": np.full(len(rec["round"]), (r + 1) * every),
                                  "ladder": np.full(len(rec["round"]), j)})
        self.chains = chains
        return swapped

    @property
    def complete(self) -> bool:
        return all(c.t >= n for c, n in zip(self.chains, self.total))

    def draw(self, i: int) -> tuple[int, np.ndarray, float]:
        """The next move of chain ``i`` from its RNG (:func:`rea.tps.move.draw_move`)."""
        return draw_move(self.rngs[i], self.config.length)

    def checkpoint(self) -> None:
        self.files.checkpoint(self.chains)
        self.since_checkpoint = 0

    def commit(self, lm, prompt_ids, members: np.ndarray, tokens, logp, moves: dict) -> np.ndarray:
        """Accept or reject the completed moves of chains ``members [n]`` (proposals ``tokens``, ``logp`` ``[n, L]``,
        their cut and acceptance uniform in ``moves``), record them and commit each chain -> accepted ``[n]``."""
        cfg = self.config
        phi_new = evaluate(cfg.observable, as_samples(lm, cfg.prompt, prompt_ids, tokens, logp))
        t = np.array([self.chains[i].t for i in members])
        k, s, lam = (np.array(v) for v in zip(*(self.rows.bias_of(i, tt) for i, tt in zip(members, t))))
        phi_old = np.array([self.chains[i].phi for i in members])
        accepted = metropolis_accept(lam, phi_old, phi_new, np.array([moves[i][1] for i in members]))
        new = [self._moved(i, tokens[j], logp[j], phi_new[j], accepted[j], kk, ss, lam[j], lm)
               for j, (i, kk, ss) in enumerate(zip(members, k, s))]
        chunk = {"row": members, "t": t, "chain": self.rows.chain_ids[members],
                 "direction": self.rows.directions[members],
                 "bias_index": k, "lam": lam, "step": s, "cut": np.array([moves[i][0] for i in members]),
                 "phi": np.array([c.phi for c in new]), "phi_proposed": phi_new, "accepted": accepted,
                 "logp": np.array([c.logp.sum() for c in new])}
        self.files.add(chunk, self._snapshot(lm, members, chunk, new))
        for i, state in zip(members, new):
            self.chains[i] = state  # one assignment per chain: an interrupt leaves each chain old or new
        self.since_checkpoint += len(members)
        self.bar.update(chunk["direction"], accepted)
        return accepted

    def _moved(self, i, tokens, logp, phi, accepted, k, s, lam, lm) -> ChainState:
        """Chain ``i``'s state after its move (the proposal if accepted); the end of a bias segment adds a final."""
        old = self.chains[i]
        if accepted:
            tokens, logp, phi = tokens, logp, float(phi)
        else:
            tokens, logp, phi = old.tokens, old.logp, old.phi
        finals = old.finals
        if s == self.config.n_steps - 1:
            finals = finals + ({"tokens": tokens[None], "logp": logp[None], "chain": self.rows.chain_ids[[i]],
                                "direction": self.rows.directions[[i]], "bias_index": np.array([k]),
                                "lam": np.array([lam]), "phi": np.array([phi])},)
        return ChainState(tokens, logp, phi, old.t + 1, self.rngs[i].bit_generator.state, finals, old.exchanges)

    def _snapshot(self, lm, members, chunk, new) -> dict | None:
        """The token snapshot of the moves that end a ``record_tokens_every`` block of their bias segment."""
        every = self.config.record_tokens_every
        if not every:
            return None
        pick = np.flatnonzero((chunk["step"] + 1) % every == 0)
        if not len(pick):
            return None
        return {**{c: chunk[c][pick] for c in ("row", *SNAPSHOT_COLUMNS) if c != "text"},
                "tokens": [new[j].tokens.tolist() for j in pick], "text": [lm.decode(new[j].tokens) for j in pick]}


def _initial_chains(lm, configs: list[TPSConfig], given: list) -> list[list[ChainState]]:
    """Each run's start: its ``given`` completions (a :class:`rea.sampling.Samples` of one per row) or one direct
    sample of p_M per row (``sample(..., seed)`` of the run's seed, all such runs' completions decoded as shared
    batches by :func:`rea.sampling.sample_streams`), each row with its fresh move RNG."""
    if not configs:
        return []
    n_rows = [len(ChainRows.of(c)) for c in configs]
    for config, n, init in zip(configs, n_rows, given):
        if init is not None and (len(init) != n or init.tokens.shape[1] != config.length):
            raise ValueError(f"initial must hold one completion of {config.length} tokens per chain ({n}), got "
                             f"{init.tokens.shape}")
    todo = [i for i, init in enumerate(given) if init is None]
    drawn = sample_streams(lm, configs[0].prompt, [(configs[i].seed, n_rows[i]) for i in todo], configs[0].length,
                           progress=False) if todo else []
    inits = list(given)
    for i, init in zip(todo, drawn):
        inits[i] = init
    out = []
    for config, init in zip(configs, inits):
        phi = evaluate(config.observable, init)
        out.append([ChainState(init.tokens[i], init.logp[i], float(phi[i]), 0,
                               chain_rng(config.seed, i).bit_generator.state) for i in range(len(init))])
    return out


def _start_moves(shooter, slots, runs, rows_to_start, pending: dict) -> None:
    """Draw the next move of the chains in the batch rows ``rows_to_start`` and start them in the shooter."""
    if not rows_to_start:
        return
    cuts, uniforms, tokens, logp = [], [], [], []
    for g in rows_to_start:
        run, i = slots[g]
        cut, u, u_accept = run.draw(i)
        pending[g] = (cut, u_accept)
        cuts.append(cut)
        uniforms.append(u)
        tokens.append(run.chains[i].tokens)
        logp.append(run.chains[i].logp)
    shooter.start(rows_to_start, np.stack(tokens), np.stack(logp), np.array(cuts), np.stack(uniforms))


def _exchange_and_pick(shooter, slots, runs, pending: dict) -> list[int]:
    """Swap rounds that are due (their swapped rows' kept keys and values swap too) -> the batch rows that may
    start a move now: ready (:meth:`_Run.ready`) and not moving."""
    for run in runs:
        shooter.swap([(run.offset + a, run.offset + b) for a, b in run.exchange()])
    return [g for g, (run, i) in enumerate(slots) if g not in pending and run.ready(i)]


def _run_moves(lm, prompt_ids, runs: list[_Run], batching: str) -> None:
    """Move every chain of every run until it reaches its ``stop_at``: one shooter serves all chains; each
    completed move is committed by its run, which checkpoints every ``checkpoint_every`` moves per chain."""
    slots = [(run, i) for run in runs for i in range(len(run.chains))]
    offset = 0
    for run in runs:
        run.offset, offset = offset, offset + len(run.chains)
    shooter = make_shooter(lm, prompt_ids, np.stack([r.chains[i].tokens for r, i in slots]),
                           np.stack([r.chains[i].logp for r, i in slots]), batching)
    pending: dict = {}
    _start_moves(shooter, slots, runs, _exchange_and_pick(shooter, slots, runs, pending), pending)
    while pending:
        done, tokens, logp = shooter.advance()
        for run in runs:
            take = np.array([j for j, g in enumerate(done) if slots[g][0] is run], dtype=np.int64)
            if not len(take):
                continue
            members = np.array([slots[done[j]][1] for j in take])
            moves = {slots[done[j]][1]: pending.pop(int(done[j])) for j in take}
            accepted = run.commit(lm, prompt_ids, members, tokens[take], logp[take], moves)
            shooter.accept(done[take][accepted])
            if run.since_checkpoint >= run.config.checkpoint_every * len(run.chains) and not run.complete:
                run.checkpoint()
        _start_moves(shooter, slots, runs, _exchange_and_pick(shooter, slots, runs, pending), pending)


def _run_all(lm, prompt_ids, runs: list[_Run], progress: bool, batching: str) -> None:
    """:func:`_run_moves` with progress bars; on KeyboardInterrupt checkpoint every run, then re-raise."""
    for run in runs:
        run.bar = _Progress(run.config, int(run.total.sum()), sum(c.t for c in run.chains), progress)
    try:
        with torch_threads(decode_threads(lm.device)):
            _run_moves(lm, prompt_ids, runs, batching)
    except KeyboardInterrupt:
        for run in runs:
            run.bar.close()
            run.checkpoint()
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
        chains = chains_of_checkpoint(ckpt)
    else:
        clear_run_dir(out_dir, overwrite)
        prov = storage.provenance(**config.to_dict(), kind="tps", prompt_ids=prompt_ids)
        files = RunFiles(out_dir, config, prov, prompt_ids, 0)
        chains = None  # drawn with the other fresh runs' (_initial_chains)
    return _Run(config, files, chains, max_steps)


def _checked_config(lm, config) -> TPSConfig:
    """``config`` with ``model`` filled with ``lm.name``; a config of another model is an error."""
    if not isinstance(config, TPSConfig):
        raise ValueError(f"config must be a TPSConfig, got {type(config).__name__}")
    if config.model is None:
        return dataclasses.replace(config, model=lm.name)
    if config.model != lm.name:
        raise ValueError(f"config.model is {config.model!r} but the model passed is {lm.name!r}")
    return config


def _pilot_runner(lm):
    """The pilot runs of an adaptive ladder: :func:`run_tps` from given states, quietly."""
    def run_pilot(config, out_dir, initial):
        return run_tps(lm, config, out_dir, progress=False, initial=initial)
    return run_pilot


def run_tps_many(lm, configs, out_dirs, resume=False, progress: bool = True, max_steps: int | None = None,
                 overwrite: bool = False, batching: str = "auto", initial=None) -> list[TPSResult]:
    """Run (or resume) several independent TPS runs of one prompt at once, their chains as one batch per move.

    ``configs[i]`` runs into ``out_dirs[i]``; the other arguments are those of :func:`run_tps` and apply to every
    run (``resume`` may also be one bool per run, ``initial`` is one Samples or None per run). All configs must share
    the prompt and the completion length.
    Each chain draws from its own RNG and each run writes its own files, so each run gives what it gives alone (up
    to the float rounding of a larger batch of the model); what is shared is the decode: a step of the model serves
    the rows of every run, which on a CPU costs little more than serving one run's rows (SmolLM2, 2 cores: 68 ms
    for 8 rows or 16, 87 ms for 32). Chains that finish their schedule leave the batch.
    """
    if batching not in BATCHING:
        raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
    out_dirs = [Path(d) for d in out_dirs]
    configs = [_checked_config(lm, c) for c in configs]
    configs = [resolve_ladder(lm, c, d, _pilot_runner(lm)) for c, d in zip(configs, out_dirs)]
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
    given = [None] * len(configs) if initial is None else list(initial)
    if len(given) != len(configs):
        raise ValueError(f"initial must be None or one Samples (or None) per run ({len(configs)}), got {len(given)}")
    fresh = [(r, g) for r, g in zip(opened, given) if isinstance(r, _Run) and r.chains is None]
    for (run, _), chains in zip(fresh, _initial_chains(lm, [r.config for r, _ in fresh], [g for _, g in fresh])):
        run.start_from(chains)
    if runs:
        _run_all(lm, prompt_ids, runs, progress, batching)
    return [r.files.finish(lm, r.chains, r.complete) if isinstance(r, _Run) else r for r in opened]


def run_tps(lm, config: TPSConfig, out_dir, resume: bool = False, progress: bool = True, max_steps: int | None = None,
            overwrite: bool = False, batching: str = "auto", initial=None) -> TPSResult:
    """Run (or resume) annealed forward-shooting TPS; see the module docstring for the algorithm.

    Parameters
    ----------
    lm : a :class:`rea.lm.models.LanguageModel`.
    config : :class:`TPSConfig`; ``config.model`` None is filled with ``lm.name`` (a different name is an error).
    out_dir : directory for the checkpoint, record parts and final Parquet files (:mod:`rea.tps.store`).
    resume : continue from ``out_dir/checkpoint.pkl``; the config must match the checkpoint's (up to
        ``checkpoint_every``). A finished run is loaded without computing anything.
    progress : show a tqdm bar over the moves of all chains (postfix: recent acceptance per direction).
    max_steps : stop each chain after this many moves of this call (checkpointing first) and return a partial
        result (``complete=False``); resume later with ``resume=True``. A KeyboardInterrupt also checkpoints, then
        re-raises.
    overwrite : start afresh even if ``out_dir`` already holds a run (its files are replaced).
    batching : ``"auto"`` (continuous batching where the model's decoder supports it, :mod:`rea.tps.shooting`),
        ``"continuous"`` or ``"lockstep"``; the chains' moves are the same in each, only the speed differs.
    initial : a fresh run's starting completions, a :class:`rea.sampling.Samples` with one completion per chain (row
        order of :class:`rea.tps.chains.ChainRows`) instead of direct samples -- e.g. the final states of a
        previous run, to continue its annealing (:mod:`rea.tps.ladder`). Ignored when resuming.

    Returns
    -------
    :class:`TPSResult`. Per move and chain: ``records`` has one row (total rows when complete:
    Σ_k n_steps × (chains active at bias k), i.e. n_biases × n_steps × 2J for equal-length schedules).
    """
    return run_tps_many(lm, [config], [out_dir], resume=resume, progress=progress, max_steps=max_steps,
                        overwrite=overwrite, batching=batching, initial=None if initial is None else [initial])[0]
