"""What a chapter states: numbers glued into the prose and logged for the golden checks, and figures.

* :func:`record` -- ``myst_nb.glue`` a number for the prose, with a typeset copy (2.9 × 10⁻⁷) under ``name_txt``,
  and append it to ``$REA_RECORDS`` (one JSON line) with the tolerance of its precision class (:data:`TOLERANCES`);
  :mod:`rea.book.golden` compares those lines.
* :func:`record_figure` -- glue a figure for a ``{glue:figure}`` directive (no text below :data:`MIN_FONT_PT`) and
  close it.
* :func:`threshold_between` -- a threshold between two sample values, so that a recorded count does not flip when
  rounding on another machine moves one sample.
"""

from __future__ import annotations

import numpy as np

from rea.book.typeset import typeset

TOLERANCES: dict[str, tuple[float, float]] = {
    "exact": (1e-9, 1e-12),   # exact answers of the toy (float64 arithmetic, no sampling): equal to the last digits
    "float": (1e-4, 1e-12),   # numbers through a float32 model: log-probs agree to ~1e-5 relative across kernels
    "volatile": (float("inf"), float("inf")),  # timings and round-off sizes: recorded, never compared
}
"""Golden tolerances ``(rtol, atol)`` by precision class: ``|x − x_golden| ≤ atol + rtol·|x_golden|``.

Integers, booleans and strings are compared exactly whatever the class. Measured (SmolLM2, 256 × 24 tokens, the same
tokens under other kernels and thread counts): per-token log-probs differ by ≤ 4.4e-5, 24-token sums by ≤ 2.7e-4 on
values of −30 to −60 (relative ≤ 1e-5), so ``"float"`` leaves a margin of ~10× on relative scale."""


TEXT_SUFFIX = "_txt"
"""A real number recorded as ``name`` is also glued, typeset, as ``name + TEXT_SUFFIX``."""


def record(name: str, value, fmt: str = ".3g", unit: str = "", tol: str = "float", text: str | None = None) -> None:
    """Glue ``value`` under ``name`` for the prose, and log it for the golden checks; nothing is printed.

    The prose quotes the raw value with a format spec, ``{glue:text}`name:.2f```, or -- for a real (float) number --
    its typeset copy ``{glue:text}`name_txt```: ``text`` if given, else :func:`rea.book.typeset.typeset` of the
    value by ``fmt``, followed by ``unit`` (``2.9 × 10⁻⁷``, ``12%``, never ``2.9e-07`` or ``0.000``). Quote the copy
    wherever the value can be below 10⁻³ or a format would write e-notation.

    ``tol`` names the precision class of the number (a key of :data:`TOLERANCES`): ``"exact"`` for exact toy-model
    answers, ``"float"`` (default) for anything computed through a model in float32, ``"volatile"`` for timings and
    sizes of round-off (checked by the chapter's own assertions, if at all). When the environment variable
    ``REA_RECORDS`` names a file, one JSON line ``{name, value, rtol, atol}`` is appended to it (the raw value, never
    the typeset text): the golden regression tests (:mod:`rea.book.golden`) compare those lines, and ``rea run``
    keeps them as ``records.jsonl`` beside the executed notebook.
    """
    import json
    import os

    from myst_nb import glue

    if tol not in TOLERANCES:
        raise ValueError(f"tol must be one of {sorted(TOLERANCES)}, got {tol!r}")
    if isinstance(value, np.generic):
        value = value.item()
    glue(name, value, display=False)
    if isinstance(value, float) or text is not None:
        glue(name + TEXT_SUFFIX, (typeset(value, fmt) if text is None else text) + unit, display=False)
    log = os.environ.get("REA_RECORDS")
    if log:
        rtol, atol = TOLERANCES[tol]
        stored = value if isinstance(value, (bool, int, float, str)) else str(value)
        with open(log, "a") as fh:
            fh.write(json.dumps({"name": name, "value": stored, "rtol": rtol, "atol": atol}) + "\n")


def threshold_between(values, q: float) -> float:
    """A threshold near the ``q``-quantile of ``values`` that sits halfway between two distinct sample values.

    Counts such as #{φ_n ≥ a} at a threshold placed *on* a sample value (``np.quantile`` can return one) flip when
    float rounding on another machine moves that sample by 1e-6; halfway between the neighbouring distinct order
    statistics x_(k) < x_(k+1), k = ⌊q(n−1)⌋, the count is stable unless a value moves by half the gap.
    """
    x = np.unique(np.asarray(values, dtype=np.float64))
    if x.size < 2:
        raise ValueError(f"values must hold at least two distinct numbers, got {x.size}")
    if not 0 <= q <= 1:
        raise ValueError(f"q must be a quantile level in [0, 1], got {q!r}")
    k = min(int(np.searchsorted(x, np.quantile(values, q), side="right")) - 1, x.size - 2)
    k = max(k, 0)
    return float((x[k] + x[k + 1]) / 2)


MIN_FONT_PT = 9.0
"""Smallest font size (points) of any text in a recorded figure: legends asked for as ``"x-small"`` are raised to it,
so that a figure scaled to the page's width keeps legible legends and labels."""


def record_figure(name: str, fig) -> None:
    """Glue a matplotlib figure under ``name`` for ``{glue:figure}`` and close it (so it shows only there).

    Every text of the figure (legends, labels, titles, annotations) smaller than :data:`MIN_FONT_PT` is enlarged to
    it first.
    """
    import matplotlib.pyplot as plt
    from matplotlib.text import Text
    from myst_nb import glue

    for text in fig.findobj(Text):
        if text.get_text() and text.get_fontsize() < MIN_FONT_PT:
            text.set_fontsize(MIN_FONT_PT)
    glue(name, fig, display=False)
    plt.close(fig)
