"""One seaborn style for every figure of the book, and the plot helpers the chapters share.

* :func:`use_book_style` -- call once per chapter (seaborn ``whitegrid``, colour-blind palette, fixed sizes).
* :data:`COLORS` -- one colour per *method*, the same in every chapter: exact, direct, IS, MBAR, TPS, ...
* :func:`band` -- a curve with a confidence band on a log-scale y axis (estimates of densities or tails).
* :func:`wilson_points` -- direct-sampling estimates with Wilson error bars; estimates of 0 (empty bins, tails never
  reached) are drawn as upper-limit markers at the Wilson upper bound, never as points on a log axis.
* :func:`direct_hist` -- :func:`wilson_points` for a :func:`rea.stats.direct_density` (or ``direct_tail``) table.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

_PALETTE = sns.color_palette("colorblind")
COLORS = {
    "exact": "0.15",
    "direct": _PALETTE[0],
    "is": _PALETTE[1],
    "mixture": _PALETTE[2],
    "mbar": _PALETTE[2],
    "tps": _PALETTE[4],
    "floor": "0.55",
}
"""Colour of each method (``COLORS["direct"]``, ...), shared by all chapters."""

FIGSIZE = (6.4, 3.6)
WIDE = (8.0, 3.4)


def use_book_style() -> None:
    """Seaborn ``whitegrid``/``notebook`` theme with the colour-blind palette and the book's figure defaults.

    In a Jupyter kernel it also switches to the inline backend, so figures render (and glue) as PNG even when
    ``MPLBACKEND=Agg`` is set in the environment (as the Makefile does), at twice the pixel density they are shown
    at ("retina": crisp on high-resolution screens and when the page scales them). Fonts: 11 pt ticks and legends,
    12 pt labels on figures of :data:`FIGSIZE` or :data:`WIDE` inches, which the page scales to its text width
    (about 700 px: 11 pt is then 13–17 px); :func:`rea.book.record_figure` raises anything smaller than 9 pt.
    """
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None and getattr(shell, "kernel", None) is not None:
            shell.run_line_magic("matplotlib", "inline")
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("retina")
    except ImportError:
        pass
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=1.0, rc={
        "figure.figsize": FIGSIZE, "figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
        "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
        "axes.titlesize": "medium", "lines.linewidth": 1.6, "figure.constrained_layout.use": True,
    })


def band(ax, x, y, low, high, label=None, color=None, log=True, **kwargs):
    """Curve ``y(x)`` with a shaded band ``[low, high]``; non-positive values are masked on a log axis."""
    x, y, low, high = (np.asarray(v, dtype=float) for v in (x, y, low, high))
    if log:
        ax.set_yscale("log")
        y = np.where(y > 0, y, np.nan)
        low = np.where(low > 0, low, np.nan)
        high = np.where(high > 0, high, np.nan)
    (line,) = ax.plot(x, y, label=label, color=color, **kwargs)
    ax.fill_between(x, np.where(np.isnan(low), y, low), high, color=line.get_color(), alpha=0.25, lw=0)
    return line


def wilson_points(ax, x, p, low, high, k=None, label="direct", color=None, log=True, marker="o", **kwargs):
    """Estimates ``p`` with Wilson bars ``[low, high]``; where ``k == 0`` (or ``p == 0``) a downward caret marks
    the upper limit ``high`` (an empty bin is evidence of 'below this', not of zero)."""
    x, p, low, high = (np.asarray(v, dtype=float) for v in (x, p, low, high))
    empty = (np.asarray(k) == 0) if k is not None else (p <= 0)
    color = color or COLORS["direct"]
    seen = ~empty
    if log:
        ax.set_yscale("log")
    if seen.any():
        lo = np.where(log & (low[seen] <= 0), p[seen] * 1e-3, low[seen])
        ax.errorbar(x[seen], p[seen], yerr=[p[seen] - lo, high[seen] - p[seen]], fmt=marker, ms=3.5, lw=1,
                    capsize=2, color=color, label=label, **kwargs)
    if empty.any():
        ax.plot(x[empty], high[empty], linestyle="none", marker="v", ms=5, mfc="none", color=color,
                label=f"{label}: none seen (upper limit)" if label else None)
    return ax


def direct_hist(ax, table, label="direct", color=None, kind="density", log=True):
    """Plot a :func:`rea.stats.direct_density` table (``kind="density"`` or ``"p"``) or a
    :func:`rea.stats.direct_tail` table (``kind="tail"``) as Wilson points with upper-limit markers."""
    if kind == "tail":
        return wilson_points(ax, table["threshold"], table["p"], table["ci_low"], table["ci_high"], table["k"],
                             label=label, color=color, log=log)
    low, high = ("density_low", "density_high") if kind == "density" else ("ci_low", "ci_high")
    return wilson_points(ax, table["center"], table["density" if kind == "density" else "p"], table[low], table[high],
                         table["k"], label=label, color=color, log=log)


def floor_line(ax, n, label=True, color=None, confidence=None, orientation="h"):
    """Horizontal line at 1/n: the smallest probability n direct samples can resolve (one hit)."""
    color = color or COLORS["floor"]
    text = f"1/N (N = {n:,})" if label else None
    if orientation == "h":
        ax.axhline(1.0 / n, color=color, ls=":", lw=1.2, label=text)
    else:
        ax.axvline(1.0 / n, color=color, ls=":", lw=1.2, label=text)
    return ax


def figure(ncols: int = 1, nrows: int = 1, wide: bool | None = None, **kwargs):
    """``plt.subplots`` in the book's sizes (wide when more than one column)."""
    wide = ncols > 1 if wide is None else wide
    size = kwargs.pop("figsize", WIDE if wide else FIGSIZE)
    return plt.subplots(nrows, ncols, figsize=size, **kwargs)
