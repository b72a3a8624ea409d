"""Exact answers for the Markov toy LM: transfer matrices (ln Z(λ), means, SCGF), exact distributions of additive
observables (:mod:`rea.exact.markov`) and of ARI (:mod:`rea.exact.ari`)."""

from rea.exact.ari import ari_distribution, ari_token_features
from rea.exact.markov import (
    ExactDistribution,
    count_distribution,
    enumerate_completions,
    exact_mean,
    log_partition,
    logprob_distribution,
    merge_atoms,
    pair_observable,
    prompt_state,
    scgf,
    token_ids,
    transition_matrix,
)

__all__ = ["ExactDistribution", "ari_distribution", "ari_token_features", "count_distribution",
           "enumerate_completions", "exact_mean", "log_partition", "logprob_distribution", "merge_atoms",
           "pair_observable", "prompt_state", "scgf", "token_ids", "transition_matrix"]
