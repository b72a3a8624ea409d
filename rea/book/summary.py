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

CHAPTER_NUMBER = {name: i + 1 for i, name in enumerate(CHAPTERS)}
"""Chapter short name -> its number in the book (the order of :data:`rea.book.chapters.CHAPTERS`)."""

COLUMNS = (("papers' findings", "reproduced"), ("papers' findings", "not reproduced"),
           ("papers' findings", "inconclusive"), ("book's checks", "passes"), ("book's checks", "fails"),
           ("book's checks", "inconclusive"))
"""``(kind, verdict)`` of every count, papers' findings first, then the book's own checks."""


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
                prefix = output["metadata"]["scrapbook"].get("mime_prefix", "")  # hidden glue: papermill's prefix
                text = output.get("data", {}).get(prefix + "text/plain")
                if text is None:
                    return None
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    return text
                return value if isinstance(value, str) else text
    return None


def book_findings(notebooks: dict[str, object]) -> list[dict]:
    """One dict per finding of every executed chapter, in reading order: ``chapter``, ``profile``, ``kind``
    (``"papers' findings"`` or ``"book's checks"``), ``key``, ``paper``, ``measured``, ``rule``, ``verdict``,
    ``holds``, ``says``."""
    from rea.book.findings import BOOK_CHECK

    rows = []
    for name, nb in notebooks.items():
        text = glued_text(nb, f"findings-{name}")
        if text is None:
            continue
        record = json.loads(text)
        rows += [{"chapter": name, "profile": record.get("profile"),
                  "kind": COLUMNS[3][0] if f["paper"].startswith(BOOK_CHECK) else COLUMNS[0][0]} | f
                 for f in record["findings"]]
    return rows


def verdict_counts(rows: list[dict]) -> dict[tuple[str, str], int]:
    """``(kind, verdict) -> number of findings`` over :data:`COLUMNS` (zeros included)."""
    counts = dict.fromkeys(COLUMNS, 0)
    for row in rows:
        counts[row["kind"], row["verdict"]] += 1
    return counts


def findings_frame(rows: list[dict]):
    """The book's findings as a DataFrame: chapter (number and name), finding, this run, rule, verdict."""
    import pandas as pd

    return pd.DataFrame({"Ch.": [CHAPTER_NUMBER[r["chapter"]] for r in rows], "Finding": [r["paper"] for r in rows],
                         "This run": [r["measured"] for r in rows], "Rule": [r["rule"] for r in rows],
                         "Verdict": [r["verdict"] for r in rows]})


def counts_by_chapter(rows: list[dict]):
    """A DataFrame of counts: one row per chapter that recorded findings (in reading order) and a total, columns
    :data:`COLUMNS` (a two-level header: kind, verdict)."""
    import pandas as pd

    chapters = [name for name in CHAPTERS if any(r["chapter"] == name for r in rows)]
    labels = [f"{CHAPTER_NUMBER[name]} {name}" for name in chapters]
    table = pd.DataFrame(0, index=labels + ["all"], columns=pd.MultiIndex.from_tuples(COLUMNS))
    for r in rows:
        table.loc[f"{CHAPTER_NUMBER[r['chapter']]} {r['chapter']}", (r["kind"], r["verdict"])] += 1
    table.loc["all"] = table.loc[labels].sum()
    return table


def _listing(rows: list[dict]) -> str:
    """The findings of ``rows`` as "statement (ch. N); …"."""
    return "; ".join(f"{r['paper'].removeprefix('(this book)').strip()} (ch. {CHAPTER_NUMBER[r['chapter']]})"
                     for r in rows)


def summary_sentences(notebooks: dict[str, object], rows: list[dict], budget_factor: str | None = None) -> str:
    """The introduction's summary, in sentences computed from this build's chapters (plain text, for ``{glue:text}``).

    Counts by verdict; chapters not executed; the profiles run (and that the ``paper`` profile was not, where so);
    the papers' findings not reproduced (with ``budget_factor``, the typeset ratio of the paper's tokens per
    observable to this profile's, as the reason to read them as "at this budget"), the book's checks that fail; and
    where the book reaches its deepest tails, with which method and checked against what (chapter 9's glued numbers
    and findings).
    """
    if not rows:
        return ("No chapter of this build has been executed yet, so there is nothing to sum up: make book executes "
                "the chapters first and this page last.")
    counts = verdict_counts(rows)
    n_paper = sum(v for (kind, _), v in counts.items() if kind == COLUMNS[0][0])
    n_check = sum(v for (kind, _), v in counts.items() if kind == COLUMNS[3][0])
    c = {verdict if kind == COLUMNS[0][0] else f"check {verdict}": v for (kind, verdict), v in counts.items()}
    out = [f"This build decided {n_paper} findings of the papers: {c['reproduced']} reproduced, "
           f"{c['not reproduced']} not reproduced and {c['inconclusive']} inconclusive; and {n_check} checks of "
           f"the book's own: {c['check passes']} pass, {c['check fails']} fail and {c['check inconclusive']} are "
           "inconclusive."]
    missing = [name for name, nb in notebooks.items() if nb is None or not any(r["chapter"] == name for r in rows)]
    if missing:
        out.append(f"Not executed in this build, and so not counted: {', '.join(missing)}.")
    profiles = sorted({str(r["profile"]) for r in rows})
    ran = " and ".join(f"'{p}'" for p in profiles)
    out.append(f"Every chapter counted here ran at the {ran} profile" + ("" if "paper" in profiles else
               "; none at 'paper', the papers' budgets, which this build has not run: a finding not reproduced "
               "here is not reproduced at a CPU's budget, not refuted at the paper's") + ".")
    not_reproduced = [r for r in rows if r["verdict"] == "not reproduced"]
    if not_reproduced:
        budget = f" ({budget_factor} times fewer tokens per observable than the paper's)" if budget_factor else ""
        out.append(f"Not reproduced at this budget{budget}: {_listing(not_reproduced)}.")
    fails = [r for r in rows if r["verdict"] == "fails"]
    if fails:
        out.append(f"Checks of the book's own that fail: {_listing(fails)}.")
    out += [sentence for sentence in [_deepest_tails(notebooks.get("deeper"), rows)] if sentence]
    return " ".join(out)


def _deepest_tails(nb, rows: list[dict]) -> str | None:
    """Where chapter 9 reaches its deepest tails, from its glued numbers and findings (None if not executed)."""
    verdict = {r["key"]: r["verdict"].replace("inconclusive", "is inconclusive") for r in rows
               if r["chapter"] == "deeper"}
    toy, lm = glued_text(nb, "dt_smc_deepest_txt"), glued_text(nb, "dt_lm_smc_txt")
    decades = glued_text(nb, "dt_lm_decades")
    if toy is None or lm is None or decades is None:
        return None
    return (f"The deepest tails are chapter 9's, reached by SMC on prefixes: on the toy model its intervals are "
            f"checked against exact tails down to {toy} (that check {verdict.get('dt_smc_toy', 'was not recorded')}); "
            f"on SmolLM2 it estimates {lm}, {float(decades):.1f} decades below direct sampling's floor at the same "
            f"number of tokens, and the check of it against importance sampling there "
            f"{verdict.get('dt_lm_agree', 'was not recorded')}.")
