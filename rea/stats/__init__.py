"""Statistics: intervals, direct and importance-sampling estimators, MCMC diagnostics, the bootstrap and MBAR.

* :mod:`rea.stats.intervals` -- z, Wilson and effective-count intervals;
* :mod:`rea.stats.direct` -- direct-sampling tails and histograms;
* :mod:`rea.stats.importance` -- importance-sampling estimates;
* :mod:`rea.stats.diagnostics` -- burn-in, Gelman–Rubin, statistical inefficiency, half-vs-full bias;
* :mod:`rea.stats.bootstrap` -- the bootstrap over chains;
* :mod:`rea.stats.mbar` -- :class:`TiltedMBAR`, with :mod:`rea.stats.mbar_solver` (the Newton solver),
  :mod:`rea.stats.mbar_errors` (asymptotic errors), :mod:`rea.stats.mbar_events` (tails, bins, intervals) and
  :mod:`rea.stats.pymbar_compat` (calling pymbar quietly).
"""

from rea.stats.bootstrap import BootstrapResult, bootstrap_over_chains, chain_resample_index, order_statistic_index
from rea.stats.diagnostics import (
    burn_in_mask,
    drop_burn_in,
    gelman_rubin,
    gelman_rubin_by_bias,
    gelman_rubin_from_moments,
    half_vs_full_bias,
    n_burn_in,
    statistical_inefficiency,
    statistical_inefficiency_multiple,
    subsample,
)
from rea.stats.direct import bin_columns, direct_density, direct_tail
from rea.stats.importance import (
    IS_FEW_HITS,
    Estimate,
    ISIntervalWarning,
    effective_sample_size,
    importance_estimate,
    mixture_log_weights,
    self_normalized_estimate,
)
from rea.stats.intervals import is_interval, variance_df, wilson_interval, z_value
from rea.stats.mbar import MBARConvergenceError, OverlapWarning, TiltedMBAR
from rea.stats.mbar_solver import solve_tilted_mbar
from rea.stats.pymbar_compat import import_pymbar

__all__ = [
    # intervals
    "z_value", "wilson_interval", "is_interval", "variance_df",
    # direct sampling
    "direct_tail", "direct_density", "bin_columns",
    # importance sampling
    "Estimate", "ISIntervalWarning", "IS_FEW_HITS", "importance_estimate", "self_normalized_estimate",
    "effective_sample_size", "mixture_log_weights",
    # diagnostics
    "n_burn_in", "burn_in_mask", "drop_burn_in", "gelman_rubin_from_moments", "gelman_rubin", "gelman_rubin_by_bias",
    "statistical_inefficiency", "statistical_inefficiency_multiple", "subsample", "half_vs_full_bias",
    # bootstrap
    "order_statistic_index", "chain_resample_index", "BootstrapResult", "bootstrap_over_chains",
    # MBAR
    "OverlapWarning", "MBARConvergenceError", "TiltedMBAR", "solve_tilted_mbar", "import_pymbar",
]
