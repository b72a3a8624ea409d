"""The book's side of the package: profiles, glue and records, plots, the chapter runner and the golden checks."""

from rea.book.glue import *  # noqa: F401,F403
from rea.book.glue import PROFILES, book_budget, budget, cached_samples, cached_tps, max_run, real_tps_configs, \
    record, record_figure, score_proposal, threshold_between, toy_tps_config  # noqa: F401
from rea.book.plots import COLORS, band, direct_hist, figure, floor_line, use_book_style, wilson_points  # noqa: F401
