"""Sequential Monte Carlo (cloning, Feynman–Kac) on prefixes: an independent, unbiased estimator of tilted partition
functions Z(λ) and tail probabilities of completions.

* :mod:`rea.smc.prefix` -- observables on prefixes (repeats, Log-Prob, token counts, ARI, user callables);
* :mod:`rea.smc.filter` -- the particle filter: Gumbel-max draws, weights e^{−λΔφ}, ESS-triggered systematic
  resampling with the decoder's KV cache reordered, unbiased Ẑ;
* :mod:`rea.smc.estimate` -- pooling independent replicates: the mean and an interval (:class:`SMCResult`);
* :mod:`rea.smc.run` -- :func:`smc_tail`, with progress bars and a resumable run directory;
* :mod:`rea.smc.ladder` -- the SMC sampler across a bias ladder (annealed importance sampling with resampling,
  forward-shooting TPS moves as its kernel), :mod:`rea.smc.ladder_estimate` (:class:`LadderResult`: Ẑ(λ_k), tails,
  the stuck-chain diagnostic) and :mod:`rea.smc.ladder_run` (:func:`smc_ladder_tail`).
"""

from rea.smc.estimate import INTERVALS, SMCResult, replicate_interval
from rea.smc.filter import Replicate, effective_sizes, run_group, systematic_resample
from rea.smc.ladder import conditional_ess, next_lambda
from rea.smc.ladder_estimate import LadderResult
from rea.smc.ladder_run import smc_ladder_tail
from rea.smc.prefix import PrefixObservable, count_token_ids, prefix_observable
from rea.smc.run import load_replicate, save_replicate, smc_tail

__all__ = ["INTERVALS", "SMCResult", "replicate_interval", "Replicate", "effective_sizes", "run_group",
           "systematic_resample", "PrefixObservable", "count_token_ids", "prefix_observable", "load_replicate",
           "save_replicate", "smc_tail", "smc_ladder_tail", "LadderResult", "conditional_ess", "next_lambda"]
