"""Transition path sampling: annealed forward-shooting chains and their MBAR analysis.

:mod:`rea.tps.config` (:class:`TPSConfig`), :mod:`rea.tps.move` (the forward-shooting move),
:mod:`rea.tps.shooting` (the regenerations of many chains through one decoder: continuous batching),
:mod:`rea.tps.run` (:func:`run_tps`, and :func:`run_tps_many` for several runs as one batch), :mod:`rea.tps.records`
(the records, :class:`TPSResult`), :mod:`rea.tps.store` (checkpoint and files, :func:`load_tps`),
:mod:`rea.tps.mbar` (:func:`tps_mbar`: from records to tail probabilities), :mod:`rea.tps.equilibrium`
(:func:`equilibrium_check`: each bias's chain mean against an independent SMC estimate of E_λ[φ]).
"""

from rea.tps.config import TPSConfig
from rea.tps.equilibrium import EQUILIBRIUM_Z, chain_means, equilibrium_check, smc_tilted_means
from rea.tps.mbar import (
    MIN_CHAINS_T,
    ChainCountWarning,
    Prepared,
    analytic_mbar,
    effective_counts,
    prepare,
    tps_mbar,
    tps_samples,
)
from rea.tps.move import draw_move, expected_move_tokens, metropolis_accept, select_shooting_points
from rea.tps.records import RECORD_COLUMNS, TPSResult, tps_tokens
from rea.tps.run import run_tps, run_tps_many
from rea.tps.selection import KEEP, kept_biases
from rea.tps.store import CHECKPOINT, CHECKPOINT_FORMAT, load_tps, read_checkpoint

__all__ = [
    # running TPS
    "TPSConfig", "run_tps", "run_tps_many", "TPSResult", "load_tps", "read_checkpoint", "CHECKPOINT",
    "CHECKPOINT_FORMAT", "RECORD_COLUMNS",
    # the forward-shooting move
    "draw_move", "select_shooting_points", "metropolis_accept", "expected_move_tokens",
    # analysis (rea.tps.mbar)
    "tps_samples", "tps_mbar", "tps_tokens", "Prepared", "prepare", "effective_counts", "analytic_mbar",
    "ChainCountWarning", "MIN_CHAINS_T", "kept_biases", "KEEP",
    # equilibrium against an independent SMC estimate (rea.tps.equilibrium)
    "equilibrium_check", "smc_tilted_means", "chain_means", "EQUILIBRIUM_Z",
]
