"""Ground truth for single-token rare outputs: ``p_t = P_{x~D}[argmax ℓ(x) = t]`` for every target at once.

:func:`argmax_counts` / :func:`ground_truth` sample D by brute force (all targets from the same samples, Wilson
intervals), :func:`exact_probabilities` enumerates a small support, and :func:`select_targets` picks targets in a
probability window, spread evenly in ``log p``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from rea.single_token.inputs import check_distribution, log_prob_inputs, sample_inputs
from rea.single_token.scorer import Scorer
from rea.stats import wilson_interval


def argmax_counts(scorer: Scorer, D, n_samples: int, batch_size: int = 512, seed: int = 0,
                  progress: bool = True) -> np.ndarray:
    """Brute force: ``counts[v] = #{x_1..x_n ~ D : argmax ℓ(x) = v}`` -> int64 ``[V]`` (one forward per sample)."""
    from tqdm.auto import tqdm

    D = check_distribution(D, scorer.vocab_size)
    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    g = torch.Generator().manual_seed(seed)
    counts = np.zeros(scorer.vocab_size, dtype=np.int64)
    with tqdm(total=n_samples, desc=f"ground truth ({scorer.n_layers} layers)", disable=not progress) as bar:
        done = 0
        while done < n_samples:
            b = min(batch_size, n_samples - done)
            top = scorer(sample_inputs(D, b, g)).argmax(-1).cpu().numpy()
            counts += np.bincount(top, minlength=scorer.vocab_size)
            done += b
            bar.update(b)
    return counts


def ground_truth(scorer: Scorer, D, targets: Sequence[int] | None = None, n_samples: int = 2 ** 16,
                 batch_size: int = 512, seed: int = 0, confidence: float = 0.95, counts: np.ndarray | None = None):
    """Hit rates of many targets from the same ``n_samples`` brute-force samples, with Wilson intervals.

    Returns a DataFrame ``target, hits, n, p, ci_low, ci_high`` (all targets with a hit when ``targets`` is
    None). Pass ``counts`` from :func:`argmax_counts` to skip the sampling.
    ``confidence`` defaults to 0.95, Wu & Hilton's level (the rest of the package uses 0.96).
    """
    import pandas as pd

    if counts is None:
        counts = argmax_counts(scorer, D, n_samples, batch_size, seed)
    n = int(counts.sum())
    targets = np.flatnonzero(counts) if targets is None else np.asarray(list(targets), dtype=int)
    lo, hi = wilson_interval(counts[targets], n, confidence)
    return pd.DataFrame({"target": targets, "hits": counts[targets], "n": n, "p": counts[targets] / n,
                         "ci_low": lo, "ci_high": hi})


def exact_probabilities(scorer: Scorer, D, batch_size: int = 1024, max_inputs: int = 2_000_000) -> np.ndarray:
    """Exact ``p[v] = Σ_x D(x) 1[argmax ℓ(x) = v]`` by enumerating the support of ``D`` -> float64 ``[V]``."""
    D = check_distribution(D, scorer.vocab_size)
    supports = [torch.nonzero(D[i]).flatten() for i in range(D.shape[0])]
    total = math.prod(len(s) for s in supports)
    if total > max_inputs:
        raise ValueError(f"D has {total} inputs in its support; exact enumeration allows at most "
                         f"max_inputs={max_inputs}")
    grids = torch.cartesian_prod(*supports) if len(supports) > 1 else supports[0][:, None]
    grids = grids.reshape(total, len(supports))
    logD = D.log()
    p = np.zeros(scorer.vocab_size)
    for s in range(0, total, batch_size):
        x = grids[s:s + batch_size]
        top = scorer(x).argmax(-1).cpu().numpy()
        w = log_prob_inputs(logD, x).exp().numpy()
        np.add.at(p, top, w)
    return p


def select_targets(p: np.ndarray, n: int, p_min: float = 1e-3, p_max: float = 3e-2, seed: int = 0,
                   exclude: Iterable[int] = ()) -> np.ndarray:
    """Up to ``n`` targets with ``p_min ≤ p[v] ≤ p_max``, spread evenly in ``log p`` (deterministic given seed)."""
    ok = np.flatnonzero((p >= p_min) & (p <= p_max))
    ok = np.array([v for v in ok if v not in set(exclude)], dtype=int)
    if len(ok) <= n:
        return ok[np.argsort(p[ok])]
    order = ok[np.argsort(p[ok])]
    idx = np.unique(np.linspace(0, len(order) - 1, n).round().astype(int))
    return order[idx]
