r"""Annealed forward-shooting transition path sampling (TPS) of completions [REA §3.4, Alg. 2].

Target
------
For a bias λ the tilted distribution over completions x of fixed length L is

    p_λ(x) = Z(λ)^{-1} e^{-λ φ(x)} p_M(x),        Z(λ) = E_{p_M}[e^{-λ φ}],

so λ > 0 favours low φ and λ < 0 favours high φ.

Move ("forward shooting")
-------------------------
From the current completion x draw a cut c uniformly in {0, …, L−1}, keep x_{<c} and regenerate x'_{≥c} from the
model at temperature 1. ``c = 0`` is allowed: it redraws the whole completion (an independence proposal from p_M);
every move regenerates at least one token. For a fixed cut the proposal density is

    q_c(x → x') = 1[x'_{<c} = x_{<c}] · p_M(x'_{≥c} | prompt, x_{<c}),

and since the kept prefix is shared, p_M(x) = p_M(x_{<c}) p_M(x_{≥c} | x_{<c}) and likewise for x'. Hence

    q_c(x → x') / q_c(x' → x) = p_M(x'_{≥c} | x_{<c}) / p_M(x_{≥c} | x_{<c}) = p_M(x') / p_M(x),

and the Metropolis–Hastings ratio for p_λ collapses to

    [p_λ(x') q_c(x' → x)] / [p_λ(x) q_c(x → x')] = e^{-λ φ(x')} p_M(x') p_M(x) / (e^{-λ φ(x)} p_M(x) p_M(x'))
                                                = e^{-λ (φ(x') − φ(x))}.

The move is accepted with probability α = min(1, e^{−λ(φ' − φ)}): all model terms cancel (the completions have a
fixed length, so no length term appears either), and no log-probabilities are needed unless φ is Log-Prob -- in
which case :func:`rea.sampling.regenerate` already returns the per-token log p_M of the proposal. At λ = 0 every
move is accepted and the chain is a sequence of (correlated) exact draws from p_M.

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
records identical to an uninterrupted run with the same seed.

Output directory
----------------
``checkpoint.pkl``      current tokens, log-probs, φ, RNG state, position in the schedule, end-of-bias states
                        (written atomically every ``checkpoint_every`` steps, on stop and at the end);
``parts/``              per-step records (and token snapshots) since the start, one Parquet part per checkpoint;
``records.parquet``     all per-step records (tidy, one row per chain and step) with provenance, when done;
``final.parquet``       the state of every chain at the end of every bias (a Samples file, φ as a column);
``snapshots.parquet``   token snapshots every ``record_tokens_every`` steps, when asked for.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rea import storage
from rea.arguments import check_positive_int
from rea.observables import evaluate, get_observable
from rea.sampling import Samples, encode_prompt, regenerate, sample

CHECKPOINT = "checkpoint.pkl"
CHECKPOINT_FORMAT = "rea.tps.checkpoint/1"
RECORD_COLUMNS = (
    "t", "chain", "direction", "bias_index", "lambda", "step", "cut", "phi", "phi_proposed", "accepted", "logp",
)
"""Per-step record columns: global step t (0-based, across biases), chain id (0..J−1 positive, J..2J−1 negative),
direction (+1/−1), bias index k (0-based, per direction), λ, step within the bias segment, cut point, φ of the state
after the step, φ of the proposal, whether it was accepted, and Σ log p_M of the state after the step."""

_RNG_TAG = 0x545053  # "TPS": keeps the move RNG's stream apart from the per-sequence sampling streams


# --------------------------------------------------------------------------------------------- configuration




def _schedule(name: str, values, sign: int) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise ValueError(f"{name} must be a list of numbers, got {values!r}")
    try:
        lams = tuple(float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a list of numbers, got {values!r}") from err
    if not all(math.isfinite(v) for v in lams):
        raise ValueError(f"{name} must hold finite numbers, got {list(lams)}")
    if any(sign * v < 0 for v in lams):
        raise ValueError(f"{name} must hold {'non-negative' if sign > 0 else 'non-positive'} biases, got {list(lams)}")
    mags = [abs(v) for v in lams]
    if any(b <= a for a, b in zip(mags, mags[1:])):
        raise ValueError(f"{name} must have strictly increasing |λ| (an annealing schedule), got {list(lams)}")
    return lams


@dataclass
class TPSConfig:
    """Parameters of one annealed TPS run.

    Parameters
    ----------
    prompt : the prompt (non-empty).
    length : L, the fixed completion length in tokens.
    lambdas_pos : biases λ_1 < … < λ_K ≥ 0 of the positive direction (favour low φ); may be empty.
    lambdas_neg : biases 0 ≥ λ_1 > … > λ_K of the negative direction (favour high φ); ``None`` mirrors
        ``lambdas_pos`` (−λ); ``[]`` runs the positive direction only.
    n_steps : N, steps per bias (per chain).
    n_chains : J, independent chains per direction.
    seed : seeds the initial direct samples and the move RNG.
    observable : ``'ari'``, ``'logprob'``, ``'repeats'`` or a callable of a :class:`~rea.sampling.Samples` batch
        (recorded by name; resuming checks the name only).
    model : name of the model (``lm.name``); ``None`` takes it from the model passed to :func:`run_tps`.
    checkpoint_every : write a checkpoint every this many steps (changing it does not change the results).
    record_tokens_every : if set, store the tokens of every chain after every this-many-th step of each bias
        segment (steps s with (s+1) % record_tokens_every == 0).
    """

    prompt: str
    length: int
    lambdas_pos: Sequence[float]
    lambdas_neg: Sequence[float] | None = None
    n_steps: int = 1000
    n_chains: int = 10
    seed: int = 0
    observable: str | Callable = "ari"
    model: str | None = None
    checkpoint_every: int = 500
    record_tokens_every: int | None = None

    def __post_init__(self):
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {self.prompt!r}")
        self.length = check_positive_int("length", self.length)
        self.lambdas_pos = _schedule("lambdas_pos", self.lambdas_pos, +1)
        if self.lambdas_neg is None:
            self.lambdas_neg = tuple(-v for v in self.lambdas_pos)
        self.lambdas_neg = _schedule("lambdas_neg", self.lambdas_neg, -1)
        if not self.lambdas_pos and not self.lambdas_neg:
            raise ValueError("lambdas_pos and lambdas_neg are both empty; give at least one bias")
        self.n_steps = check_positive_int("n_steps", self.n_steps)
        self.n_chains = check_positive_int("n_chains", self.n_chains)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        self.seed = int(self.seed)
        get_observable(self.observable)  # raises a clear ValueError for unknown names
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ValueError(f"model must be a model name or None, got {self.model!r}")
        self.checkpoint_every = check_positive_int("checkpoint_every", self.checkpoint_every)
        if self.record_tokens_every is not None:
            self.record_tokens_every = check_positive_int("record_tokens_every", self.record_tokens_every)

    # -- derived quantities
    @property
    def observable_name(self) -> str:
        obs = self.observable
        return obs if isinstance(obs, str) else f"callable:{getattr(obs, '__name__', type(obs).__name__)}"

    @property
    def n_biases(self) -> int:
        """Number of bias segments (the longer of the two schedules)."""
        return max(len(self.lambdas_pos), len(self.lambdas_neg))

    @property
    def total_steps(self) -> int:
        """Global steps of the whole run: n_biases × n_steps (every active chain moves once per step)."""
        return self.n_biases * self.n_steps

    @property
    def directions(self) -> list[int]:
        """The directions that run: +1 if ``lambdas_pos`` is non-empty, −1 if ``lambdas_neg`` is."""
        return [d for d, lams in ((1, self.lambdas_pos), (-1, self.lambdas_neg)) if lams]

    def to_dict(self) -> dict:
        """JSON-friendly dict (the observable by name)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["observable"] = self.observable_name
        out["lambdas_pos"], out["lambdas_neg"] = list(self.lambdas_pos), list(self.lambdas_neg)
        return out


# --------------------------------------------------------------------------------------------- result


@dataclass
class TPSResult:
    """Outcome of :func:`run_tps` (complete or stopped early).

    records : tidy DataFrame, one row per chain and step (columns :data:`RECORD_COLUMNS`), in step-major order.
    final : :class:`~rea.sampling.Samples`, the state of every chain at the end of every completed bias segment;
        ``final.meta`` holds per-row lists ``chain``, ``direction``, ``bias_index``, ``lambda`` and ``phi``.
    snapshots : DataFrame of token snapshots (``record_tokens_every``) or None.
    complete : whether the whole schedule ran.
    """

    config: TPSConfig
    records: pd.DataFrame
    final: Samples
    provenance: dict
    snapshots: pd.DataFrame | None = None
    complete: bool = True
    out_dir: Path | None = None

    def post_burn_in(self, fraction: float = 0.1) -> pd.DataFrame:
        """Records with the first ``fraction`` of every bias segment dropped: step ≥ ⌊fraction·N⌋, the package's one
        burn-in rule (:func:`rea.stats.diagnostics.n_burn_in`, also used by :func:`rea.tps.mbar.tps_mbar`)."""
        from rea.stats import n_burn_in

        return self.records[self.records["step"] >= n_burn_in(self.config.n_steps, fraction)]

    def acceptance(self) -> pd.DataFrame:
        """Acceptance rate per direction and bias: columns direction, bias_index, lambda, acceptance, n."""
        g = self.records.groupby(["direction", "bias_index", "lambda"], sort=True)["accepted"]
        return g.agg(acceptance="mean", n="size").reset_index()


# --------------------------------------------------------------------------------------------- helpers



def read_checkpoint(out_dir) -> dict:
    """Load ``out_dir/checkpoint.pkl`` (a pickle this module wrote: load only checkpoints you trust)."""
    path = Path(out_dir) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no TPS checkpoint in {out_dir} (expected {CHECKPOINT})")
    with open(path, "rb") as fh:
        try:
            ckpt = pickle.load(fh)
        except Exception as err:  # UnpicklingError, EOFError, ...: whatever a damaged pickle raises
            why = f"{type(err).__name__}: {err}".splitlines()[0]
            raise ValueError(
                f"TPS checkpoint {path} is truncated or corrupt ({why}); delete it (or run with overwrite=True) "
                f"to start the run over"
            ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a TPS checkpoint of format {CHECKPOINT_FORMAT}")
    return ckpt


def _comparable(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "checkpoint_every"}


def _samples_of(lm, prompt, prompt_ids, tokens, logp) -> Samples:
    lengths = np.full(len(tokens), tokens.shape[1], dtype=np.int64)
    texts = [lm.decode(row) for row in tokens]
    return Samples(prompt, list(prompt_ids), tokens, logp, logp.copy(), lengths, texts)


def _records_frame(chunks: list[dict]) -> pd.DataFrame:
    if not chunks:
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in _RECORD_DTYPES.items()})
    return pd.DataFrame({c: np.concatenate([ch[c] for ch in chunks]).astype(d) for c, d in _RECORD_DTYPES.items()})


_RECORD_DTYPES = {
    "t": np.int64, "chain": np.int32, "direction": np.int8, "bias_index": np.int16, "lambda": np.float64,
    "step": np.int32, "cut": np.int32, "phi": np.float64, "phi_proposed": np.float64, "accepted": bool,
    "logp": np.float64,
}


def _snapshots_frame(chunks: list[dict]) -> pd.DataFrame | None:
    if not chunks:
        return None
    cols = ("t", "chain", "direction", "bias_index", "lambda", "step", "phi", "logp", "text")
    df = pd.DataFrame({c: np.concatenate([np.asarray(ch[c], dtype=object if c == "text" else None) for ch in chunks])
                       for c in cols})
    df["tokens"] = [row for ch in chunks for row in ch["tokens"]]
    return df


def _read_parts(out_dir: Path, kind: str, n_parts: int) -> pd.DataFrame | None:
    frames = []
    for i in range(n_parts):
        path = out_dir / "parts" / f"{kind}-{i:06d}.parquet"
        if path.exists():
            frames.append(storage.load_table(path)[0])
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)


def _final_samples(lm, config, prompt_ids, finals: list[dict]) -> Samples:
    length = config.length
    if finals:
        tokens = np.concatenate([f["tokens"] for f in finals])
        logp = np.concatenate([f["logp"] for f in finals])
    else:
        tokens, logp = np.zeros((0, length), np.int64), np.zeros((0, length))
    out = _samples_of(lm, config.prompt, prompt_ids, tokens, logp) if lm is not None else None
    meta = {
        key: [x for f in finals for x in np.asarray(f[key]).tolist()]
        for key in ("chain", "direction", "bias_index", "lambda", "phi")
    }
    meta.update(model=config.model, observable=config.observable_name, length=length, kind="tps_final")
    if out is None:  # texts are filled by the caller
        out = Samples(config.prompt, list(prompt_ids), tokens, logp, logp.copy(),
                      np.full(len(tokens), length, dtype=np.int64), [""] * len(tokens))
    out.meta = meta
    return out


# --------------------------------------------------------------------------------------------- the run


def run_tps(
    lm,
    config: TPSConfig,
    out_dir,
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
    overwrite: bool = False,
) -> TPSResult:
    """Run (or resume) annealed forward-shooting TPS; see the module docstring for the algorithm.

    Parameters
    ----------
    lm : a :class:`rea.lm.models.LanguageModel`.
    config : :class:`TPSConfig`; ``config.model`` None is filled with ``lm.name`` (a different name is an error).
    out_dir : directory for the checkpoint, record parts and final Parquet files.
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
    ckpt_path = out_dir / CHECKPOINT
    prompt_ids = encode_prompt(lm, config.prompt, config.length)
    observable = config.observable
    J, L, N = config.n_chains, config.length, config.n_steps
    dirs = config.directions
    # rows of the batch: chain ids of each running direction (positive 0..J-1, negative J..2J-1)
    chain_ids = np.concatenate([np.arange(J) + (0 if d > 0 else J) for d in dirs])
    row_dir = np.concatenate([np.full(J, d) for d in dirs]).astype(np.int8)
    schedules = {1: config.lambdas_pos, -1: config.lambdas_neg}

    # ---------------------------------------------------------------- start or resume
    if resume:
        ckpt = read_checkpoint(out_dir)
        if _comparable(ckpt["config"]) != _comparable(config.to_dict()):
            old, new = _comparable(ckpt["config"]), _comparable(config.to_dict())
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(
                f"cannot resume {out_dir}: the config differs from the checkpoint's in {diff} "
                f"(checkpoint: {[old.get(k) for k in diff]}, given: {[new.get(k) for k in diff]})"
            )
        prov = ckpt["provenance"]
        tokens, logp, phi = ckpt["tokens"], ckpt["logp"], ckpt["phi"]
        t0, n_parts, finals = ckpt["t"], ckpt["n_parts"], ckpt["finals"]
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = ckpt["rng_state"]
        if ckpt.get("done"):
            return load_tps(out_dir, lm=lm, config=config)
        # a crash after a part was written but before the checkpoint: those parts are stale
        for stale in (out_dir / "parts").glob("*.parquet"):
            if int(stale.stem.split("-")[-1]) >= n_parts:
                stale.unlink()
    else:
        if ckpt_path.exists() or (out_dir / "records.parquet").exists():
            if not overwrite:
                raise FileExistsError(
                    f"{out_dir} already holds a TPS run; pass resume=True to continue it, overwrite=True to "
                    f"replace it, or choose another out_dir"
                )
            for name in (CHECKPOINT, "records.parquet", "final.parquet", "snapshots.parquet"):
                (out_dir / name).unlink(missing_ok=True)
            shutil.rmtree(out_dir / "parts", ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        prov = storage.provenance(**config.to_dict(), kind="tps", prompt_ids=prompt_ids)
        init = sample(lm, config.prompt, len(dirs) * J, L, seed=config.seed, progress=False)
        tokens, logp = init.tokens, init.logp
        phi = evaluate(observable, init)
        t0, n_parts, finals = 0, 0, []
        rng = np.random.Generator(np.random.PCG64([config.seed, _RNG_TAG]))

    # the committed state: replaced as a whole after each step, so an interrupt never leaves it half-updated
    state = {"tokens": tokens, "logp": logp, "phi": phi, "t": t0, "rng": rng.bit_generator.state,
             "finals": list(finals)}
    buffer: list[dict] = []  # record chunks since the last checkpoint (each tagged with its t)
    snaps: list[dict] = []

    def checkpoint(done: bool = False) -> None:
        nonlocal n_parts, buffer, snaps
        st = state
        chunks = [c for c in buffer if c["t"][0] < st["t"]]
        snap_chunks = [c for c in snaps if c["t"][0] < st["t"]]
        if chunks:
            parts = out_dir / "parts"
            parts.mkdir(exist_ok=True)
            storage.save_table(_records_frame(chunks), parts / f"records-{n_parts:06d}.parquet")
            if snap_chunks:
                storage.save_table(_snapshots_frame(snap_chunks), parts / f"snapshots-{n_parts:06d}.parquet")
            n_parts += 1
        storage.atomic_pickle(
            {
                "format": CHECKPOINT_FORMAT, "config": config.to_dict(), "provenance": prov,
                "prompt_ids": prompt_ids, "t": st["t"], "tokens": st["tokens"], "logp": st["logp"],
                "phi": st["phi"], "rng_state": st["rng"], "n_parts": n_parts, "finals": st["finals"],
                "done": done,
            },
            ckpt_path,
        )
        buffer, snaps = [], []

    total = config.total_steps
    stop_at = total if max_steps is None else min(total, t0 + max_steps)
    acc = {d: [0, 0] for d in dirs}  # accepted, proposed at the current bias (progress postfix)
    bar = tqdm(total=total, initial=t0, desc="TPS", unit="step", disable=not progress)
    try:
        while state["t"] < stop_at:
            t = state["t"]
            k, s = divmod(t, N)
            active = np.array([k < len(schedules[int(d)]) for d in row_dir])
            rows = np.flatnonzero(active)
            lam = np.array([schedules[int(row_dir[r])][k] for r in rows])
            if s == 0:
                acc = {d: [0, 0] for d in dirs}
            # random numbers of this step, in a fixed order
            B = len(rows)
            cut = rng.integers(0, L, size=B)
            uniforms = rng.random((B, L))
            u_acc = rng.random(B)
            cur_tokens, cur_logp, cur_phi = state["tokens"], state["logp"], state["phi"]
            new_tokens, new_logp, _ = regenerate(lm, prompt_ids, cur_tokens[rows], cut, uniforms, cur_logp[rows])
            proposal = _samples_of(lm, config.prompt, prompt_ids, new_tokens, new_logp)
            phi_prop = evaluate(observable, proposal)
            log_alpha = np.minimum(0.0, -lam * (phi_prop - cur_phi[rows]))
            accepted = u_acc < np.exp(log_alpha)
            tokens_next, logp_next, phi_next = cur_tokens.copy(), cur_logp.copy(), cur_phi.copy()
            take = rows[accepted]
            tokens_next[take], logp_next[take], phi_next[take] = (
                new_tokens[accepted], new_logp[accepted], phi_prop[accepted],
            )
            chunk = {
                "t": np.full(B, t), "chain": chain_ids[rows], "direction": row_dir[rows], "bias_index": np.full(B, k),
                "lambda": lam, "step": np.full(B, s), "cut": cut, "phi": phi_next[rows], "phi_proposed": phi_prop,
                "accepted": accepted, "logp": logp_next[rows].sum(1),
            }
            finals_next = state["finals"]
            if s == N - 1:
                finals_next = finals_next + [{
                    "tokens": tokens_next[rows], "logp": logp_next[rows], "chain": chain_ids[rows],
                    "direction": row_dir[rows], "bias_index": np.full(B, k), "lambda": lam, "phi": phi_next[rows],
                }]
            snap = None
            if config.record_tokens_every and (s + 1) % config.record_tokens_every == 0:
                snap = {**{c: chunk[c] for c in ("t", "chain", "direction", "bias_index", "lambda", "step", "phi",
                                                  "logp")},
                        "tokens": [row.tolist() for row in tokens_next[rows]],
                        "text": [lm.decode(row) for row in tokens_next[rows]]}
            # commit: chunks first (filtered by t at checkpoint time), then the state in one assignment
            buffer.append(chunk)
            if snap is not None:
                snaps.append(snap)
            state = {"tokens": tokens_next, "logp": logp_next, "phi": phi_next, "t": t + 1,
                     "rng": rng.bit_generator.state, "finals": finals_next}
            for d in dirs:
                mask = row_dir[rows] == d
                acc[d][0] += int(accepted[mask].sum())
                acc[d][1] += int(mask.sum())
            bar.update(1)
            if progress:
                post = {"bias": k}
                for d in dirs:
                    post["acc+" if d > 0 else "acc-"] = f"{acc[d][0] / max(1, acc[d][1]):.2f}"
                bar.set_postfix(post, refresh=False)
            if state["t"] % config.checkpoint_every == 0 and state["t"] < stop_at:
                checkpoint()
    except KeyboardInterrupt:
        bar.close()
        checkpoint()
        raise
    bar.close()

    complete = state["t"] >= total
    checkpoint(done=False)
    if not complete:
        return _assemble(lm, config, out_dir, prompt_ids, prov, n_parts, state["finals"], complete=False)
    result = _assemble(lm, config, out_dir, prompt_ids, prov, n_parts, state["finals"], complete=True)
    storage.save_table(result.records, out_dir / "records.parquet", prov)
    storage.save_samples(result.final, out_dir / "final.parquet", prov, {"phi": result.final.meta["phi"]})
    if result.snapshots is not None:
        storage.save_table(result.snapshots, out_dir / "snapshots.parquet", prov)
    checkpoint(done=True)
    shutil.rmtree(out_dir / "parts", ignore_errors=True)
    return result


def _assemble(lm, config, out_dir, prompt_ids, prov, n_parts, finals, complete) -> TPSResult:
    records = _read_parts(out_dir, "records", n_parts)
    if records is None:
        records = _records_frame([])
    snapshots = _read_parts(out_dir, "snapshots", n_parts)
    final = _final_samples(lm, config, prompt_ids, finals)
    return TPSResult(config, records, final, prov, snapshots, complete, out_dir)


def load_tps(out_dir, lm=None, config: TPSConfig | None = None) -> TPSResult:
    """Load a run from ``out_dir``: finished (``records.parquet`` etc.) or, from its checkpoint, partial.

    No model is needed; ``lm`` (optional) is only used to decode texts of a partial run's final states.
    """
    out_dir = Path(out_dir)
    ckpt = read_checkpoint(out_dir)
    if config is None:
        cfg = dict(ckpt["config"])
        if cfg["observable"].startswith("callable:"):
            cfg["observable"] = "repeats"  # placeholder: the callable itself is not stored
            config = TPSConfig(**cfg)
            config.observable = ckpt["config"]["observable"]
        else:
            config = TPSConfig(**cfg)
    if ckpt.get("done") and (out_dir / "records.parquet").exists():
        records, prov = storage.load_table(out_dir / "records.parquet")
        records = records.astype(_RECORD_DTYPES)
        final = storage.load_samples(out_dir / "final.parquet")
        snap_path = out_dir / "snapshots.parquet"
        snapshots = storage.load_table(snap_path)[0] if snap_path.exists() else None
        return TPSResult(config, records, final, prov, snapshots, True, out_dir)
    result = _assemble(lm, config, out_dir, ckpt["prompt_ids"], ckpt["provenance"], ckpt["n_parts"],
                       ckpt["finals"], complete=False)
    return result
