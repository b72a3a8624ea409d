"""The book's side of the package.

* :mod:`rea.book.chapters` -- the registry of executable chapters (short name -> ``book/`` file);
* :mod:`rea.book.profiles` -- every chapter's knobs per profile (``"ci"``, ``"quick"``, ``"paper"``);
* :mod:`rea.book.runs` -- the TPS runs and direct samples chapters share, cached by config;
* :mod:`rea.book.records` -- numbers and figures glued into the prose and logged for the golden checks;
* :mod:`rea.book.findings` -- findings decided from a chapter's numbers, glued as phrases and tabled;
* :mod:`rea.book.rules` -- the decision rules every finding names (reproduced, not reproduced, inconclusive), and
  their applications chapters share: :mod:`rea.book.judging` (depths below a floor, claims of a stated size, bins
  that agree) and :mod:`rea.book.paired` (paired comparisons over targets);
* :mod:`rea.book.summary` -- every chapter's findings read back from the executed chapters (the introduction);
* :mod:`rea.book.typeset` -- numbers typeset for prose (2.9 × 10⁻⁷);
* :mod:`rea.book.papers` -- the papers' setups against the book's profiles (the tables of the introduction and
  chapter 7);
* :mod:`rea.book.plots` -- the book's figure style;
* :mod:`rea.book.sphinx_ext` -- the Sphinx extension of the HTML book (MathJax served locally, tables numbered as
  tables), and :mod:`rea.book.browser_check` -- ``make book-check``, every built page checked in headless Chromium;
* :mod:`rea.book.runner` (``rea run CHAPTER``), :mod:`rea.book.golden` (``python -m rea.book.golden``) and
  :mod:`rea.book.cache` (``python -m rea.book.cache``) -- command-line tools.
"""

from rea.book.chapters import CHAPTERS
from rea.book.findings import chapter_findings, findings_table, record_finding
from rea.book.judging import (
    cluster_ratio_interval,
    decide_at_least,
    decide_bins_agree,
    decide_within,
    deepest_reach,
    depth_below,
    difference_interval,
    kish,
    median_interval,
    separation,
    t_inflation,
)
from rea.book.paired import decide_paired, paired_bootstrap
from rea.book.plots import COLORS, band, direct_hist, figure, floor_line, use_book_style, wilson_points
from rea.book.profiles import PROFILES, chapter_settings
from rea.book.records import TOLERANCES, record, record_figure, threshold_between
from rea.book.rules import (
    MAX_DECADES,
    MIN_COUNTED,
    MIN_HITS,
    RULES,
    allowed_misses,
    decide_agreement,
    decide_all,
    decide_coverage,
    decide_effect,
    decide_exact,
    effect_interval,
    gross_bound,
    informative,
)
from rea.book.runs import (
    book_runs_dir,
    cached_samples,
    cached_tps,
    chain_bootstrap,
    direct_seed,
    exchange_tps_configs,
    real_tps_configs,
    toy_exchange_config,
    toy_tps_config,
)
from rea.book.typeset import sci
from rea.single_token.evaluation import held_out_is_losses as held_out_losses  # chapter 7's per-target losses

__all__ = [
    "CHAPTERS",
    "PROFILES",
    "chapter_settings",
    "record",
    "record_figure",
    "threshold_between",
    "record_finding",
    "findings_table",
    "chapter_findings",
    "RULES",
    "allowed_misses",
    "decide_agreement",
    "decide_coverage",
    "decide_effect",
    "effect_interval",
    "informative",
    "MAX_DECADES",
    "MIN_COUNTED",
    "MIN_HITS",
    "decide_all",
    "decide_exact",
    "gross_bound",
    "cluster_ratio_interval",
    "decide_at_least",
    "decide_bins_agree",
    "decide_within",
    "deepest_reach",
    "depth_below",
    "difference_interval",
    "kish",
    "median_interval",
    "separation",
    "t_inflation",
    "decide_paired",
    "held_out_losses",
    "paired_bootstrap",
    "chain_bootstrap",
    "toy_exchange_config",
    "sci",
    "TOLERANCES",
    "cached_tps",
    "cached_samples",
    "real_tps_configs",
    "exchange_tps_configs",
    "toy_tps_config",
    "direct_seed",
    "book_runs_dir",
    "COLORS",
    "band",
    "direct_hist",
    "figure",
    "floor_line",
    "use_book_style",
    "wilson_points",
]
