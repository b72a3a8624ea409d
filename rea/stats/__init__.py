"""Statistics: intervals, direct and importance-sampling estimators, MCMC diagnostics, the bootstrap and MBAR."""

from rea.stats.diagnostics import *  # noqa: F401,F403
from rea.stats.estimators import *  # noqa: F401,F403
from rea.stats.estimators import import_pymbar  # noqa: F401
