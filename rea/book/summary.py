"""What the book shows, as a whole: every chapter's findings read back from the executed chapters.

Each chapter glues its findings as JSON under ``findings-<chapter>`` (:func:`rea.book.findings.findings_table`).
``make book`` executes the chapters first and the introduction last (:mod:`rea.book.execute`), so the
introduction's summary reads the very notebooks the build renders, from jupyter-book's cache::

    notebooks = executed_chapters()                  # chapter -> executed notebook (None: not executed)
    rows = book_findings(notebooks)                  # one row per finding of every chapter
    counts = verdict_counts(rows)                    # verdict -> how many
    glued_text(notebooks["deeper"], "dt_smc_deepest")   # any number a chapter glued, as text

Nothing here is typed: a chapter that was not executed is reported as such, never filled in.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from rea.book.chapters import BOOK, CHAPTERS, ROOT

CACHE = ROOT / "_build" / ".jupyter_cache"
"""jupyter-book's execution cache, where :mod:`rea.book.execute` stores the executed chapters."""

VERDICT_ORDER = ("reproduced", "not reproduced", "inconclusive", "passes", "fails")
"""The verdicts, papers' findings first, then the book's own checks."""


def executed_chapters(cache_dir: Path = CACHE) -> dict[str, object]:
    """``chapter -> executed notebook`` for every registered chapter whose current source the cache holds (else None).

    A chapter whose code changed since it was cached is None too: its cached outputs are not what the build shows.
    """
    from jupyter_cache import get_cache

    from rea.book.execute import read_notebook

    out: dict[str, object] = {name: None for name in CHAPTERS}
    if not Path(cache_dir).exists():
        return out
    cache = get_cache(str(cache_dir))
    for name, file in CHAPTERS.items():
        try:
            record = cache.match_cache_notebook(read_notebook(BOOK / file))
        except KeyError:
            continue
        out[name] = cache.get_cache_bundle(record.pk).nb
    return out


def glued_text(nb, key: str) -> str | None:
    """The ``text/plain`` of the value glued under ``key`` in an executed notebook (None if not glued).

    Strings come back as they were glued (their ``repr`` is undone).
    """
    if nb is None:
        return None
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("metadata", {}).get("scrapbook", {}).get("name") == key:
                text = output.get("data", {}).get("text/plain")
                if text is None:
                    return None
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    return text
                return value if isinstance(value, str) else text
    return None


def book_findings(notebooks: dict[str, object]) -> list[dict]:
    """One dict per finding of every executed chapter, in reading order: ``chapter``, ``profile``, ``key``,
    ``paper``, ``measured``, ``rule``, ``verdict``, ``holds``, ``says``."""
    rows = []
    for name, nb in notebooks.items():
        text = glued_text(nb, f"findings-{name}")
        if text is None:
            continue
        record = json.loads(text)
        rows += [{"chapter": name, "profile": record.get("profile")} | f for f in record["findings"]]
    return rows


def verdict_counts(rows: list[dict]) -> dict[str, int]:
    """``verdict -> number of findings`` over :data:`VERDICT_ORDER` (zeros included)."""
    counts = {verdict: 0 for verdict in VERDICT_ORDER}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    return counts


def findings_frame(rows: list[dict]):
    """The book's findings as a DataFrame: chapter (number and name), finding, this run, rule, verdict."""
    import pandas as pd

    number = {name: i + 1 for i, name in enumerate(CHAPTERS)}
    return pd.DataFrame({"Ch.": [number[r["chapter"]] for r in rows], "Finding": [r["paper"] for r in rows],
                         "This run": [r["measured"] for r in rows], "Rule": [r["rule"] for r in rows],
                         "Verdict": [r["verdict"] for r in rows]})


def counts_by_chapter(rows: list[dict]):
    """A DataFrame chapter × verdict of counts (chapters that recorded findings, in reading order)."""
    import pandas as pd

    chapters = [name for name in CHAPTERS if any(r["chapter"] == name for r in rows)]
    table = pd.DataFrame(0, index=chapters, columns=list(VERDICT_ORDER))
    for r in rows:
        table.loc[r["chapter"], r["verdict"]] += 1
    return table
