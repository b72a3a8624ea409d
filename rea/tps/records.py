r"""What a TPS run produces: the per-step records, token snapshots, the chains' final states, :class:`TPSResult`, and
its token cost (:func:`tps_tokens`).

Records are tidy, one row per chain and step, in step-major order (columns :data:`RECORD_COLUMNS`). The run builds
them as *chunks*, one dict of arrays ``[B]`` per global step (B = the chains active at that step), and concatenates
them here (:func:`records_frame`, :func:`snapshots_frame`). A *final* is the state of the B chains at the end of a bias
segment: ``tokens [B, L]``, ``logp [B, L]`` and ``chain``, ``direction``, ``bias_index``, ``lam``, ``phi`` ``[B]``
(:func:`final_samples` turns the list of them into one :class:`~rea.sampling.Samples`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rea.sampling import Samples
from rea.tps.config import TPSConfig
from rea.tps.exchange import SWAP_COLUMNS

RECORD_COLUMNS = (
    "t", "chain", "direction", "bias_index", "lam", "step", "cut", "phi", "phi_proposed", "accepted", "logp",
)
"""Per-step record columns: global step t (0-based, across biases), chain id (0..J−1 positive, J..2J−1 negative),
direction (+1/−1), bias index k (0-based, per direction), λ, step within the bias segment, cut point, φ of the state
after the step, φ of the proposal, whether it was accepted, and Σ log p_M of the state after the step."""

RECORD_DTYPES = {
    "t": np.int64, "chain": np.int32, "direction": np.int8, "bias_index": np.int16, "lam": np.float64,
    "step": np.int32, "cut": np.int32, "phi": np.float64, "phi_proposed": np.float64, "accepted": bool,
    "logp": np.float64,
}
"""The dtype of every record column (records read back from Parquet are cast to these)."""

SNAPSHOT_COLUMNS = ("t", "chain", "direction", "bias_index", "lam", "step", "phi", "logp", "text")
"""Token-snapshot columns besides ``tokens`` (a list of token ids per row): the record's columns and the text."""

FINAL_KEYS = ("chain", "direction", "bias_index", "lam", "phi")
"""Per-row keys of a final state that become ``final.meta`` lists."""


def as_samples(lm, prompt: str, prompt_ids, tokens: np.ndarray, logp: np.ndarray) -> Samples:
    """Completions ``tokens [B, L]`` with per-token log p_M ``logp [B, L]`` as a :class:`~rea.sampling.Samples`
    batch (log q = log p_M, every length L, texts decoded by ``lm``) -- what an observable is evaluated on."""
    lengths = np.full(len(tokens), tokens.shape[1], dtype=np.int64)
    texts = [lm.decode(row) for row in tokens]
    return Samples(prompt, list(prompt_ids), tokens, logp, logp.copy(), lengths, texts)


def records_frame(chunks: list[dict]) -> pd.DataFrame:
    """Concatenate record chunks (dicts of arrays ``[B_t]``) into the records DataFrame, typed by
    :data:`RECORD_DTYPES` (an empty, typed frame for no chunks)."""
    if not chunks:
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in RECORD_DTYPES.items()})
    return pd.DataFrame({c: np.concatenate([ch[c] for ch in chunks]).astype(d) for c, d in RECORD_DTYPES.items()})


def swaps_frame(chunks: list[dict]) -> pd.DataFrame | None:
    """Concatenate swap-round chunks into a DataFrame (:data:`rea.tps.exchange.SWAP_COLUMNS`); None for none."""
    if not chunks:
        return None
    return pd.DataFrame({c: np.concatenate([np.asarray(ch[c]) for ch in chunks]) for c in SWAP_COLUMNS})


def snapshots_frame(chunks: list[dict]) -> pd.DataFrame | None:
    """Concatenate snapshot chunks into a DataFrame (:data:`SNAPSHOT_COLUMNS` and ``tokens``); None for none."""
    if not chunks:
        return None
    df = pd.DataFrame({c: np.concatenate([np.asarray(ch[c], dtype=object if c == "text" else None) for ch in chunks])
                       for c in SNAPSHOT_COLUMNS})
    df["tokens"] = [row for ch in chunks for row in ch["tokens"]]
    return df


def final_samples(lm, config: TPSConfig, prompt_ids, finals: list[dict]) -> Samples:
    """The end-of-bias states of every chain, in the order reached, as one :class:`~rea.sampling.Samples` ``[ΣB, L]``.

    ``meta`` holds the per-row lists :data:`FINAL_KEYS` and the run's model, observable, length and
    ``kind="tps_final"``. Without ``lm`` the texts are left empty (the caller fills them).
    """
    length = config.length
    if finals:
        tokens = np.concatenate([f["tokens"] for f in finals])
        logp = np.concatenate([f["logp"] for f in finals])
    else:
        tokens, logp = np.zeros((0, length), np.int64), np.zeros((0, length))
    out = as_samples(lm, config.prompt, prompt_ids, tokens, logp) if lm is not None else None
    meta = {key: [x for f in finals for x in np.asarray(f[key]).tolist()] for key in FINAL_KEYS}
    meta.update(model=config.model, observable=config.observable_name, length=length, kind="tps_final")
    if out is None:  # texts are filled by the caller
        out = Samples(config.prompt, list(prompt_ids), tokens, logp, logp.copy(),
                      np.full(len(tokens), length, dtype=np.int64), [""] * len(tokens))
    out.meta = meta
    return out


@dataclass
class TPSResult:
    """Outcome of :func:`rea.tps.run_tps` (complete or stopped early).

    records : tidy DataFrame, one row per chain and step (columns :data:`RECORD_COLUMNS`), in step-major order.
    final : :class:`~rea.sampling.Samples`, the state of every chain at the end of every completed bias segment;
        ``final.meta`` holds per-row lists ``chain``, ``direction``, ``bias_index``, ``lam`` and ``phi``.
    snapshots : DataFrame of token snapshots (``record_tokens_every``) or None.
    complete : whether the whole schedule ran.
    swaps : replica exchange: every swap attempt (:data:`rea.tps.exchange.SWAP_COLUMNS`); None when annealed.
    """

    config: TPSConfig
    records: pd.DataFrame
    final: Samples
    provenance: dict
    snapshots: pd.DataFrame | None = None
    complete: bool = True
    out_dir: Path | None = None
    swaps: pd.DataFrame | None = None

    def post_burn_in(self, fraction: float = 0.1) -> pd.DataFrame:
        """Records with the first ``fraction`` of every bias segment dropped: step ≥ ⌊fraction·N⌋, the package's one
        burn-in rule (:func:`rea.stats.diagnostics.n_burn_in`, also used by :func:`rea.tps.mbar.tps_mbar`)."""
        from rea.stats import n_burn_in

        return self.records[self.records["step"] >= n_burn_in(self.config.n_steps, fraction)]

    def swap_rates(self) -> pd.DataFrame:
        """Replica exchange: the swap acceptance per neighbouring pair of biases: columns lam_low, lam_high,
        swap_rate, n (attempts); empty when annealed."""
        if self.swaps is None or not len(self.swaps):
            return pd.DataFrame({"lam_low": [], "lam_high": [], "swap_rate": [], "n": []})
        g = self.swaps.groupby(["lam_low", "lam_high"], sort=True)["accepted"]
        return g.agg(swap_rate="mean", n="size").reset_index()

    def acceptance(self) -> pd.DataFrame:
        """Acceptance rate per direction and bias: columns direction, bias_index, lam, acceptance, n."""
        g = self.records.groupby(["direction", "bias_index", "lam"], sort=True)["accepted"]
        return g.agg(acceptance="mean", n="size").reset_index()


def tps_tokens(records, length: int, n_initial: int | None = None) -> int:
    """Tokens a TPS run generated: Σ over moves of (L − cut) (the regenerated suffix) plus L per initial sample.

    ``n_initial`` defaults to the number of rows of the batch (each starts from one direct sample of L tokens): the
    records of move t = 0 (one per chain annealed, one per replica with replica exchange).
    """
    if hasattr(records, "records"):
        records = records.records
    cut = records["cut"].to_numpy(dtype=np.int64)
    if n_initial is None:
        n_initial = int((records["t"] == 0).sum()) if "t" in records else records["chain"].nunique()
    return int(np.sum(length - cut) + n_initial * length)
