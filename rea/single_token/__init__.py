"""Single-token rare outputs: estimating ``p_t = P_{x~D}[argmax M(x) = t]`` (Wu & Hilton, ICLR 2025, [WH]).

Inputs ``x = (x_1 .. x_k)`` are drawn from a product distribution ``D = Π_i D_i`` over the model's vocabulary, a
``[k, V]`` float64 matrix; the behaviour is "the temperature-0 next token is t", ``argmax_v ℓ_v(x) = t`` with
``ℓ(x) = M(x)[-1]`` the last-position logits. One module per role:

* :mod:`~rea.single_token.scorer` -- :class:`Scorer`, :func:`truncated`: last-position logits of the first layers.
* :mod:`~rea.single_token.inputs` -- input distributions (uniform, hex, camel, english, story), sampling.
* :mod:`~rea.single_token.truth` -- brute-force and exact ground truth, target selection.
* :mod:`~rea.single_token.target_estimate` -- :class:`TargetEstimate`, what every estimator returns.
* :mod:`~rea.single_token.importance` -- ``naive`` and ``itgis``; :mod:`~rea.single_token.mhis` -- ``mhis``.
* :mod:`~rea.single_token.extrapolation` -- ``qld`` (and ``qld_published``), ``gld``.
* :mod:`~rea.single_token.registry` -- :data:`METHODS`, :func:`estimate` (run any of them by name, under a budget) and
  :func:`estimate_many` (many targets and seeds at once; ITGIS and MHIS in lockstep, one model call per step).
* :mod:`~rea.single_token.evaluation` -- losses, the log-affine fit, :func:`compare_methods`, :func:`results_table`.

Intervals use :func:`rea.stats.wilson_interval` and :func:`rea.stats.z_value`; the estimators' ``confidence``
defaults to 0.95, Wu & Hilton's level (the rest of the package uses 0.96).
"""

from rea.single_token.evaluation import (
    compare_methods,
    fit_log_affine,
    fitted_is_loss,
    is_loss,
    optimal_constant,
    results_table,
    sq_log_error,
)
from rea.single_token.extrapolation import gaussian_tail_fit, gld, qld, qld_from_activations
from rea.single_token.importance import BiasCorrectedEMA, itgis, naive, temperature_grid
from rea.single_token.inputs import (
    STORY_PROMPT,
    STORY_WORDS,
    camel_distribution,
    check_distribution,
    english_distribution,
    hex_distribution,
    log_prob_inputs,
    sample_inputs,
    story_distribution,
    uniform_distribution,
)
from rea.single_token.mhis import mhis
from rea.single_token.registry import METHODS, estimate, estimate_many
from rea.single_token.scorer import Scorer, truncated
from rea.single_token.target_estimate import TargetEstimate
from rea.single_token.truth import argmax_counts, exact_probabilities, ground_truth, select_targets
from rea.stats import wilson_interval

__all__ = [
    "STORY_PROMPT",
    "STORY_WORDS",
    "METHODS",
    "TargetEstimate",
    "Scorer",
    "truncated",
    "check_distribution",
    "uniform_distribution",
    "hex_distribution",
    "camel_distribution",
    "english_distribution",
    "story_distribution",
    "sample_inputs",
    "log_prob_inputs",
    "argmax_counts",
    "ground_truth",
    "exact_probabilities",
    "select_targets",
    "wilson_interval",
    "temperature_grid",
    "estimate",
    "estimate_many",
    "naive",
    "BiasCorrectedEMA",
    "itgis",
    "mhis",
    "qld",
    "qld_from_activations",
    "gld",
    "gaussian_tail_fit",
    "is_loss",
    "sq_log_error",
    "fit_log_affine",
    "fitted_is_loss",
    "optimal_constant",
    "compare_methods",
    "results_table",
]
