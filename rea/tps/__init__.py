"""Transition path sampling: annealed forward-shooting chains and their MBAR analysis."""

from rea.tps.mbar import *  # noqa: F401,F403
from rea.tps.run import *  # noqa: F401,F403
from rea.tps.run import CHECKPOINT, RECORD_COLUMNS, read_checkpoint  # noqa: F401
from rea.tps.mbar import MIN_CHAINS_T  # noqa: F401
