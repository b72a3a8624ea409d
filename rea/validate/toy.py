"""The toy setting every validation check shares: the prompt, the toy Markov LM, token-count observables with an
exact pmf (:mod:`rea.exact`), exact tail probabilities, and one-thread torch for the toy's tiny ops."""

from __future__ import annotations

import contextlib

import numpy as np

PROMPT = "Once upon a time, in a big forest, there lived a"


def toy_model():
    """The toy Markov LM (:mod:`rea.lm.toy`) on the CPU."""
    from rea.lm import load_model

    return load_model("toy", device="cpu")


def tail_exact(dist, thr):
    """Exact tail probabilities P(φ ≥ a) ``[S]`` of an exact pmf ``dist`` at thresholds ``thr [S]``."""
    return np.exp(dist.log_tail(np.asarray(thr, float)))


@contextlib.contextmanager
def single_thread():
    """Run torch on one intra-op thread (restored afterwards).

    The toy's ops are tiny ([B, 53]); with torch's default thread pool on a loaded machine each op waits for its
    worker threads to be scheduled, which made toy TPS ~100x slower (measured: 101 s -> 1.0 s for the same run).
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


DET_TOKENS = [" the", " a"]
"""The toy's determiners: the observable of the end-to-end TPS check and of TPS coverage."""
ADV_TOKENS = [" once", " there", " quickly", " extraordinarily"]
"""The adverbs of the toy except the self-looping " very": the observable of the 1e-8 TPS tail check/benchmark."""


def token_count(tokens):
    """φ = number of tokens of the set ``tokens`` in each completion (additive: rea.exact has its pmf and ln Z)."""
    ids = np.array([i for t in tokens for i in toy_model().encode(t)])

    def count(samples) -> np.ndarray:
        return np.isin(np.asarray(samples.tokens), ids).sum(axis=1).astype(np.float64)

    count.__name__ = "count_" + "_".join(t.strip() for t in tokens)
    return count
