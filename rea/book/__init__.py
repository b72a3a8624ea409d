"""The book's side of the package.

* :mod:`rea.book.chapters` -- the registry of executable chapters (short name -> ``book/`` file);
* :mod:`rea.book.profiles` -- every chapter's knobs per profile (``"ci"``, ``"quick"``, ``"paper"``);
* :mod:`rea.book.runs` -- the TPS runs and direct samples chapters share, cached by config;
* :mod:`rea.book.records` -- numbers and figures glued into the prose and logged for the golden checks;
* :mod:`rea.book.plots` -- the book's figure style;
* :mod:`rea.book.runner` (``rea run CHAPTER``), :mod:`rea.book.golden` (``python -m rea.book.golden``) and
  :mod:`rea.book.cache` (``python -m rea.book.cache``) -- command-line tools.
"""

from rea.book.chapters import CHAPTERS
from rea.book.plots import COLORS, band, direct_hist, figure, floor_line, use_book_style, wilson_points
from rea.book.profiles import PROFILES, chapter_settings
from rea.book.records import TOLERANCES, record, record_figure, threshold_between
from rea.book.runs import (book_runs_dir, cached_samples, cached_tps, direct_seed, exchange_tps_configs, real_tps_configs,
                           toy_tps_config)

__all__ = [
    "CHAPTERS",
    "PROFILES",
    "chapter_settings",
    "record",
    "record_figure",
    "threshold_between",
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
