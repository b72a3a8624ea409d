r"""The files of a TPS run in its output directory: the checkpoint, the record parts, the finished tables, and
:func:`load_tps`.

Output directory
----------------
``checkpoint.pkl``      every chain's tokens, log-probs, φ, moves done, move-RNG state and end-of-bias states
                        (written atomically every ``checkpoint_every`` moves per chain, on stop and at the end);
``parts/``              per-step records (and token snapshots) since the start, one Parquet part per checkpoint;
``records.parquet``     all per-step records (tidy, one row per chain and step) with provenance, when done;
``final.parquet``       the state of every chain at the end of every bias (a Samples file, φ as a column);
``snapshots.parquet``   token snapshots every ``record_tokens_every`` steps, when asked for;
``swaps.parquet``       replica exchange: every swap attempt (:data:`rea.tps.exchange.SWAP_COLUMNS`).

A checkpoint of format :data:`CHECKPOINT_FORMAT` is a pickled dict: ``format``, ``config`` (:meth:`TPSConfig.to_dict`),
``provenance``, ``prompt_ids``, ``chains`` (one :class:`ChainState` per chain, as a dict, in chain-id order),
``n_parts`` (record parts written so far) and ``done``.
"""

from __future__ import annotations

import dataclasses
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rea import storage
from rea.tps.config import TPSConfig
from rea.tps.records import RECORD_DTYPES, TPSResult, final_samples, records_frame, snapshots_frame, swaps_frame

CHECKPOINT = "checkpoint.pkl"
CHECKPOINT_FORMAT = "rea.tps.checkpoint/3"
"""Format tag of the checkpoint; /3 keeps one state and one move RNG per chain (/2 had one RNG per run and chains
in lockstep; /1 called the λ column ``lambda``)."""
FINISHED_FILES = ("records.parquet", "final.parquet", "snapshots.parquet", "swaps.parquet")


@dataclass(frozen=True)
class ChainState:
    """The committed state of one chain after its first ``t`` moves (replaced as a whole after each move, so an
    interrupt never leaves it half-updated): ``tokens [L]``, per-token ``logp [L]``, ``phi``, its move RNG's
    ``bit_generator.state`` before its next move, and the end-of-bias states it has reached (``finals``: one dict
    of arrays ``[1, ...]`` per bias, see :mod:`rea.tps.records`)."""

    tokens: np.ndarray
    logp: np.ndarray
    phi: float
    t: int
    rng_state: dict
    finals: tuple = ()
    exchanges: int = 0  # replica exchange: swap rounds of its ladder done

    def rng(self) -> np.random.Generator:
        """The chain's move RNG, restored to :attr:`rng_state`."""
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = self.rng_state
        return rng


def all_finals(chains: list[ChainState]) -> list[dict]:
    """The end-of-bias states of all chains, ordered by bias index, then chain id."""
    finals = [f for c in chains for f in c.finals]
    return sorted(finals, key=lambda f: (int(f["bias_index"][0]), int(f["chain"][0])))


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


def check_resumable(ckpt: dict, config: TPSConfig, out_dir) -> None:
    """Raise a one-line ValueError naming the fields in which ``config`` differs from the checkpoint's (all fields
    but ``checkpoint_every`` must agree for a resumed run to continue the same chains)."""
    old, new = _comparable(ckpt["config"]), _comparable(config.to_dict())
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(
            f"cannot resume {out_dir}: the config differs from the checkpoint's in {diff} "
            f"(checkpoint: {[old.get(k) for k in diff]}, given: {[new.get(k) for k in diff]})"
        )


def chains_of_checkpoint(ckpt: dict) -> list[ChainState]:
    """The chains' states stored in a checkpoint, in chain-id order."""
    return [ChainState(**c) for c in ckpt["chains"]]


def drop_stale_parts(out_dir: Path, n_parts: int) -> None:
    """Delete record parts numbered ≥ ``n_parts``: written by a crash after a part but before its checkpoint."""
    for stale in (out_dir / "parts").glob("*.parquet"):
        if int(stale.stem.split("-")[-1]) >= n_parts:
            stale.unlink()


def clear_run_dir(out_dir: Path, overwrite: bool) -> None:
    """Make ``out_dir`` ready for a fresh run: refuse (FileExistsError) if it holds a run and not ``overwrite``,
    else delete that run's files; create the directory."""
    if (out_dir / CHECKPOINT).exists() or (out_dir / "records.parquet").exists():
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} already holds a TPS run; pass resume=True to continue it, overwrite=True to "
                f"replace it, or choose another out_dir"
            )
        for name in (CHECKPOINT, *FINISHED_FILES):
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / "parts", ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def read_parts(out_dir: Path, kind: str, n_parts: int):
    """Concatenate the first ``n_parts`` parts ``parts/<kind>-NNNNNN.parquet`` that exist -> DataFrame or None."""
    frames = []
    for i in range(n_parts):
        path = out_dir / "parts" / f"{kind}-{i:06d}.parquet"
        if path.exists():
            frames.append(storage.load_table(path)[0])
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)


class RunFiles:
    """The output directory of a run in progress: record and snapshot chunks buffered since the last checkpoint,
    the number of parts written, and what every checkpoint stores besides the chains' state."""

    def __init__(self, out_dir: Path, config: TPSConfig, provenance: dict, prompt_ids, n_parts: int):
        self.out_dir, self.config, self.provenance, self.prompt_ids = out_dir, config, provenance, prompt_ids
        self.n_parts = n_parts
        self.records: list[dict] = []  # record chunks since the last checkpoint (each row tagged with its row)
        self.snapshots: list[dict] = []
        self.swaps: list[dict] = []

    def add(self, chunk: dict, snapshot: dict | None) -> None:
        """Buffer the record chunk (and token snapshot) of some moves until the next checkpoint; both hold ``row``,
        the run's row of each move."""
        self.records.append(chunk)
        if snapshot is not None:
            self.snapshots.append(snapshot)

    def add_swaps(self, chunk: dict) -> None:
        """Buffer the records of a round of swap attempts (:data:`rea.tps.exchange.SWAP_COLUMNS`)."""
        self.swaps.append(chunk)

    def checkpoint(self, chains: list[ChainState], done: bool = False) -> None:
        """Write the buffered rows of committed moves and swap rounds as the next part, then the checkpoint
        (atomically).

        ``chains[i]`` is the state of the run's row i. Rows of a move or round not yet committed to its chains (an
        interrupt between the two) are dropped: the resumed run redoes it with the same random numbers.
        """
        moves = np.array([c.t for c in chains])
        rounds = np.array([c.exchanges for c in chains])
        tables = {
            "records": records_frame(_committed(self.records, "t", "row", moves)),
            "snapshots": snapshots_frame(_committed(self.snapshots, "t", "row", moves)),
            "swaps": swaps_frame(_committed(self.swaps, "round", "row_low", rounds)),
        }
        if any(table is not None and len(table) for table in tables.values()):
            parts = self.out_dir / "parts"
            parts.mkdir(exist_ok=True)
            for kind, table in tables.items():
                if table is not None and len(table):
                    storage.save_table(table, parts / f"{kind}-{self.n_parts:06d}.parquet")
            self.n_parts += 1
        storage.atomic_pickle(
            {
                "format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "provenance": self.provenance,
                "prompt_ids": self.prompt_ids, "chains": [dataclasses.asdict(c) for c in chains],
                "n_parts": self.n_parts, "done": done,
            },
            self.out_dir / CHECKPOINT,
        )
        self.records, self.snapshots, self.swaps = [], [], []

    def result(self, lm, finals: list, complete: bool) -> TPSResult:
        """The run so far, read back from its parts: records, snapshots and the final states ``finals``."""
        return assemble_result(lm, self.config, self.out_dir, self.prompt_ids, self.provenance, self.n_parts,
                               finals, complete)

    def finish(self, lm, chains: list[ChainState], complete: bool) -> TPSResult:
        """Checkpoint; for a ``complete`` run also write the finished tables, mark the checkpoint done and delete
        the parts. Returns the run's :class:`TPSResult`."""
        self.checkpoint(chains)
        result = self.result(lm, all_finals(chains), complete)
        if not complete:
            return result
        prov = self.provenance
        storage.save_table(result.records, self.out_dir / "records.parquet", prov)
        storage.save_samples(result.final, self.out_dir / "final.parquet", prov, {"phi": result.final.meta["phi"]})
        if result.snapshots is not None:
            storage.save_table(result.snapshots, self.out_dir / "snapshots.parquet", prov)
        if result.swaps is not None:
            storage.save_table(result.swaps, self.out_dir / "swaps.parquet", prov)
        self.checkpoint(chains, done=True)
        shutil.rmtree(self.out_dir / "parts", ignore_errors=True)
        return result


def _committed(chunks: list[dict], counter: str, row: str, done: np.ndarray) -> list[dict]:
    """The entries of ``chunks`` (dicts of equal-length arrays or lists) that their row has committed:
    ``chunk[counter] < done[chunk[row]]``, e.g. move t < the moves its row has done."""
    kept = []
    for chunk in chunks:
        keep = np.asarray(chunk[counter]) < done[np.asarray(chunk[row])]
        if keep.any():
            kept.append({k: [x for x, ok in zip(v, keep) if ok] if isinstance(v, list) else np.asarray(v)[keep]
                         for k, v in chunk.items()})
    return kept


def _in_order(frame: pd.DataFrame | None, keys=("t", "chain", "bias_index")) -> pd.DataFrame | None:
    """Rows in step-major order (t, then chain id, then bias), the order a lockstep run writes them in."""
    if frame is None:
        return None
    return frame.sort_values(list(keys), kind="stable").reset_index(drop=True)


def assemble_result(lm, config, out_dir, prompt_ids, provenance, n_parts, finals, complete) -> TPSResult:
    """A :class:`TPSResult` from the record and snapshot parts of ``out_dir`` and the final states ``finals``."""
    records = _in_order(read_parts(out_dir, "records", n_parts))
    if records is None:
        records = records_frame([])
    snapshots = _in_order(read_parts(out_dir, "snapshots", n_parts))
    swaps = _in_order(read_parts(out_dir, "swaps", n_parts), ("round", "ladder", "lam_low"))
    final = final_samples(lm, config, prompt_ids, finals)
    return TPSResult(config, records, final, provenance, snapshots, complete, out_dir, swaps)


def config_of_checkpoint(ckpt: dict) -> TPSConfig:
    """The run's :class:`TPSConfig` from a checkpoint; a callable observable (stored by name only) is kept as its
    name ``callable:<name>``."""
    cfg = dict(ckpt["config"])
    if not cfg["observable"].startswith("callable:"):
        return TPSConfig(**cfg)
    cfg["observable"] = "repeats"  # placeholder: the callable itself is not stored
    config = TPSConfig(**cfg)
    config.observable = ckpt["config"]["observable"]
    return config


def load_tps(out_dir, lm=None, config: TPSConfig | None = None) -> TPSResult:
    """Load a run from ``out_dir``: finished (``records.parquet`` etc.) or, from its checkpoint, partial.

    No model is needed; ``lm`` (optional) is only used to decode texts of a partial run's final states.
    """
    out_dir = Path(out_dir)
    ckpt = read_checkpoint(out_dir)
    if config is None:
        config = config_of_checkpoint(ckpt)
    if ckpt.get("done") and (out_dir / "records.parquet").exists():
        records, prov = storage.load_table(out_dir / "records.parquet")
        records = records.astype(RECORD_DTYPES)
        final = storage.load_samples(out_dir / "final.parquet")
        snap_path, swap_path = out_dir / "snapshots.parquet", out_dir / "swaps.parquet"
        snapshots = storage.load_table(snap_path)[0] if snap_path.exists() else None
        swaps = storage.load_table(swap_path)[0] if swap_path.exists() else None
        return TPSResult(config, records, final, prov, snapshots, True, out_dir, swaps)
    return assemble_result(lm, config, out_dir, ckpt["prompt_ids"], ckpt["provenance"], ckpt["n_parts"],
                           all_finals(chains_of_checkpoint(ckpt)), complete=False)
