"""Paired comparisons over targets, for the ``effect`` rule of :mod:`rea.book.rules`.

A claim "method A scores better than method B" is decided on the per-target differences of their scores, the
targets being the units both methods saw: :func:`paired_bootstrap` gives the mean difference and its percentile
interval, resampling targets (within strata, e.g. model depths, so each stratum keeps its size). Chapter 7 scores
single-token estimators per target with :func:`rea.single_token.evaluation.held_out_is_losses` (the per-target
terms of :func:`rea.single_token.fitted_is_loss`; ``rea.book.held_out_losses``); :func:`decide_paired` applies the
rule to the interval (at least :data:`rea.book.rules.MIN_COUNTED` targets); :func:`rea.book.rules.decide_all`
combines the three-valued decisions of a claim that is a conjunction ("beats every other method").
"""

from __future__ import annotations

import numpy as np

from rea.book.rules import MIN_COUNTED, decide_effect


def paired_bootstrap(diff, strata=None, level: float = 0.95, n_boot: int = 10_000,
                     seed: int = 0) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean of per-target differences ``diff`` and its percentile bootstrap interval.

    Targets are resampled with replacement within each stratum (``strata``: one label per target, e.g. the depth;
    None: one stratum), so the bootstrap mean weighs the strata as the data do. NaN differences give NaN ends.
    """
    diff = np.asarray(diff, float)
    if diff.ndim != 1 or len(diff) == 0:
        raise ValueError(f"diff must be a non-empty 1-d array, got shape {diff.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if not np.all(np.isfinite(diff)):
        return float(np.mean(diff)), float("nan"), float("nan")
    strata = np.zeros(len(diff), int) if strata is None else np.asarray(strata)
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for s in np.unique(strata):
        d = diff[strata == s]
        total += d[rng.integers(0, len(d), size=(n_boot, len(d)))].sum(axis=1)
    boot = total / len(diff)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(diff.mean()), float(lo), float(hi)


def decide_paired(diff, smallest: float, strata=None, level: float = 0.95, seed: int = 0,
                  min_n: int = MIN_COUNTED) -> tuple[float, float, float, bool | None]:
    """``(mean, lo, hi, holds)``: :func:`paired_bootstrap` of ``diff`` and the ``effect`` rule
    (:func:`rea.book.rules.decide_effect` with ``smallest``) on its interval; fewer than ``min_n`` targets (the
    bootstrap of one or two values says nothing about their spread): NaN ends and ``None``."""
    diff = np.asarray(diff, float)
    if len(diff) < min_n:
        return (float(diff.mean()) if len(diff) else float("nan")), float("nan"), float("nan"), None
    m, lo, hi = paired_bootstrap(diff, strata, level=level, seed=seed)
    return m, lo, hi, decide_effect(lo, hi, smallest)

