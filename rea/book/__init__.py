"""The book's side of the package.

* :mod:`rea.book.chapters` -- the registry of executable chapters (short name -> ``book/`` file);
* :mod:`rea.book.profiles` -- every chapter's knobs per profile (``"ci"``, ``"quick"``, ``"paper"``);
* :mod:`rea.book.runs` -- the TPS runs and direct samples chapters share, cached by config;
* :mod:`rea.book.records` -- numbers and figures glued into the prose and logged for the golden checks;
* :mod:`rea.book.findings` -- findings decided from a chapter's numbers, glued as phrases and tabled;
* :mod:`rea.book.rules` -- the decision rules every finding names (reproduced, not reproduced, inconclusive);
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
from rea.book.plots import COLORS, band, direct_hist, figure, floor_line, use_book_style, wilson_points
from rea.book.profiles import PROFILES, chapter_settings
from rea.book.records import TOLERANCES, record, record_figure, threshold_between
from rea.book.rules import (
    RULES,
    allowed_misses,
    decide_agreement,
    decide_coverage,
    decide_effect,
    effect_interval,
    informative,
)
from rea.book.runs import (
    book_runs_dir,
    cached_samples,
    cached_tps,
    direct_seed,
    exchange_tps_configs,
    real_tps_configs,
    toy_tps_config,
)
from rea.book.typeset import sci

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
