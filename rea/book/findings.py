"""Findings a chapter states, decided from its run: :func:`record_finding` and :func:`findings_table`.

A *finding* is a qualitative statement about a chapter's results: a claim of the paper reproduced or not, one method
beating another, a check passing. It is never typed into the prose. The chapter computes it from its numbers::

    record_finding("mb_toy_deeper", chapter="mbar", rule="effect",
                   paper="MBAR over TPS reaches probabilities direct sampling cannot resolve",
                   measured=f"MBAR to {sci(p_mbar)}, direct floor {sci(p_floor)}",  # sci: rea.book.typeset,
                   holds=decide_effect(lo, hi, smallest=1.0),  # rea.book.rules
                   yes="reaches a decade and more below", no="does not reach a decade below")

and the prose quotes the glued phrase, ``... MBAR {glue:text}`mb_toy_deeper` the direct floor ...``, so the sentence
changes when the numbers do. ``rule`` names the decision rule of :mod:`rea.book.rules` that decided ``holds`` (a
finding of the papers is reproduced only beyond its uncertainty, not reproduced only where the run had the power to
see it, inconclusive otherwise; a check of the book's own passes only on an exact answer or an informative
independent estimate). :func:`findings_table` collects the chapter's findings into the table "Paper finding — this
run — rule — verdict" that ends the chapter, and glues them as JSON under ``findings-<chapter>`` for the
introduction's summary of the whole book (:mod:`rea.book.summary`). ``tests/test_findings.py`` fails when a
chapter types either phrase of a finding into its prose instead of quoting the glue, or quotes a finding it never
records, or decides one without a rule or by ``any(...)``.

The verdict of a finding is ``"reproduced"`` (``holds`` true), ``"not reproduced"`` (false) or ``"inconclusive"``
(``holds`` is ``None``: the run cannot decide, e.g. no bias passed Gelman--Rubin), whose phrase is ``unsure``. A
check this book adds to the papers' findings (``paper`` starts with ``"(this book)"``) ``"passes"`` or ``"fails"``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from rea.book.rules import RULES, check_rule

VERDICTS = {True: "reproduced", False: "not reproduced", None: "inconclusive"}
"""The verdict of a finding of the papers by the value of ``holds``."""

CHECK_VERDICTS = {True: "passes", False: "fails", None: "inconclusive"}
"""The verdict of a check this book adds (its ``paper`` text starts with ``BOOK_CHECK``)."""

BOOK_CHECK = "(this book)"


@dataclass(frozen=True)
class Finding:
    """One computed finding: the paper's statement, this run's numbers, and whether they show it."""

    key: str
    chapter: str
    paper: str
    measured: str
    holds: bool | None
    phrases: tuple[str, str, str]  # (holds, does not hold, undecided)
    rule: str  # a name of rea.book.rules.RULES

    @property
    def verdict(self) -> str:
        return (CHECK_VERDICTS if self.paper.startswith(BOOK_CHECK) else VERDICTS)[self.holds]

    @property
    def says(self) -> str:
        """The phrase the prose quotes: the one that matches ``holds``."""
        return self.phrases[0 if self.holds else 1] if self.holds is not None else self.phrases[2]


_FINDINGS: dict[str, list[Finding]] = {}


def record_finding(key: str, *, chapter: str, paper: str, measured: str, holds, yes: str, no: str, rule: str,
                   unsure: str | None = None) -> None:
    """Decide a finding, glue its phrase under ``key`` for the prose and keep it for :func:`findings_table`.

    ``holds`` is a bool (numpy bools too) or ``None`` (the run cannot decide). ``yes``/``no``/``unsure`` are the
    phrases the prose quotes in each case (``unsure`` defaults to ``"cannot tell"``). ``rule`` is the name of the
    decision rule (:data:`rea.book.rules.RULES`) that decided ``holds``. Nothing is printed; when
    ``$REA_RECORDS`` names a file, the finding is logged with its verdict and phrases for the golden checks.
    """
    from myst_nb import glue

    if holds is not None:
        if not hasattr(holds, "__bool__") or isinstance(holds, (str, bytes)):
            raise ValueError(f"holds must be a bool or None, got {holds!r}")
        holds = bool(holds)
    for name, text in (("key", key), ("chapter", chapter), ("paper", paper), ("yes", yes), ("no", no)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{name} must be a non-empty string, got {text!r}")
    if yes == no:
        raise ValueError(f"yes and no must differ, both are {yes!r}")
    finding = Finding(key, chapter, paper, str(measured), holds, (yes, no, unsure or "cannot tell"), check_rule(rule))
    found = _FINDINGS.setdefault(chapter, [])
    found[:] = [f for f in found if f.key != key] + [finding]
    glue(key, finding.says, display=False)
    log = os.environ.get("REA_RECORDS")
    if log:
        with open(log, "a") as fh:
            fh.write(json.dumps({"name": key, "value": finding.says, "rtol": 0.0, "atol": 0.0,
                                 "finding": {"verdict": finding.verdict, "phrases": list(finding.phrases)}}) + "\n")


def chapter_findings(chapter: str) -> list[Finding]:
    """The findings recorded so far for ``chapter``, in the order they were first recorded."""
    return list(_FINDINGS.get(chapter, []))


def findings_table(chapter: str, profile: str | None = None):
    """The chapter's findings as a table: columns "Paper finding", "This run", "Rule", "Verdict" (one row each).

    Returns a pandas ``Styler`` without index, ready for ``glue``; raises ``ValueError`` if none was recorded. The
    findings are also glued, hidden, as JSON under ``findings-<chapter>`` (:func:`findings_record`, with the
    chapter's ``profile``): :mod:`rea.book.summary` reads them from the executed chapters for the introduction.
    """
    import pandas as pd
    from myst_nb import glue

    found = chapter_findings(chapter)
    if not found:
        raise ValueError(f"chapter {chapter!r} has recorded no findings (call record_finding first)")
    glue(f"findings-{chapter}", findings_record(chapter, profile), display=False)
    df = pd.DataFrame({"Paper finding": [f.paper for f in found], "This run": [f.measured for f in found],
                       "Rule": [f.rule for f in found], "Verdict": [f.verdict for f in found]})
    return df.style.hide(axis="index")


def findings_record(chapter: str, profile: str | None = None) -> str:
    """The chapter's findings as one JSON string: ``{"chapter", "profile", "findings": [{key, paper, measured,
    holds, rule, verdict, says}, ...]}``."""
    rows = [asdict(f) | {"verdict": f.verdict, "says": f.says} for f in chapter_findings(chapter)]
    return json.dumps({"chapter": chapter, "profile": profile, "findings": rows})



TYPED_CLAIMS = ("far below", "largely repetitive", "removes much of", "fail most often", "grows quickly",
                "carried by one or two", "the chains sample the tilted law")
"""Phrases that state a result; prose must not type them (they were typed once, and the numbers beside them said
otherwise). A finding's own phrases are checked too, see :func:`audit_chapter`."""


def finding_calls(nb) -> list:
    """Every ``record_finding("key", ...)`` call (its ``ast.Call`` node) in a notebook's code cells, in order.

    Calls whose key is not a string literal are left out. ``nb`` is an nbformat notebook (e.g. ``jupytext.read``).
    """
    import ast

    calls = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            name = getattr(getattr(node, "func", None), "id", None)
            if name == "record_finding" and node.args and isinstance(node.args[0], ast.Constant):
                calls.append(node)
    return calls


def declared_findings(nb) -> dict[str, tuple[str, ...]]:
    """``key -> phrases`` of every ``record_finding("key", ..., yes="...", no="...")`` in a notebook's code cells.

    Phrases given as string literals are returned (``yes``, ``no``, ``unsure``); computed ones cannot be checked
    statically and are left out.
    """
    import ast

    return {node.args[0].value: tuple(k.value.value for k in node.keywords
                                      if k.arg in ("yes", "no", "unsure") and isinstance(k.value, ast.Constant))
            for node in finding_calls(nb)}


def weak_decisions(nb) -> list[tuple[str, str]]:
    """``(key, why)`` for every finding whose decision cannot be justified by a rule of :mod:`rea.book.rules`.

    Flagged: no ``rule=`` literal naming a rule of :data:`~rea.book.rules.RULES`; a ``holds`` that calls ``any``
    (one pair of many passing decides the finding) or is a bare ``bool(name)`` of a collection.
    """
    import ast

    flagged = []
    for node in finding_calls(nb):
        key, kw = node.args[0].value, {k.arg: k.value for k in node.keywords}
        rule = kw.get("rule")
        if not (isinstance(rule, ast.Constant) and rule.value in RULES):
            flagged.append((key, f"names no decision rule (rule= one of {', '.join(RULES)})"))
        holds = kw.get("holds")
        calls = [getattr(n.func, "id", None) for n in ast.walk(holds) if isinstance(n, ast.Call)] if holds else []
        if "any" in calls:
            flagged.append((key, "decides holds by any(...): one item of many passing decides the finding"))
        if (isinstance(holds, ast.Call) and getattr(holds.func, "id", None) == "bool" and len(holds.args) == 1
                and isinstance(holds.args[0], ast.Name)):
            flagged.append((key, f"decides holds by bool({holds.args[0].id}): true for any non-empty collection"))
    return flagged


def audit_chapter(nb, chapter: str) -> list[str]:
    """One line per way a chapter's prose could state a verdict its run did not compute (empty: none).

    * a phrase of a finding (either outcome) typed in a markdown cell instead of quoted by ``{glue:text}`key```;
    * a typed claim of :data:`TYPED_CLAIMS`;
    * a ``{glue:text}`` quote of a ``*_verdict`` key that no ``record_finding`` decides;
    * a finding decided without a rule, or by ``any(...)`` (:func:`weak_decisions`);
    * no findings, or no glued ``findings_table(chapter`` ending the chapter.
    """
    import re

    declared = declared_findings(nb)
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    lines = [f"{chapter}: the prose types {phrase!r}, the phrase of finding {key!r}: quote {{glue:text}}`{key}`"
             for key, phrases in declared.items() for phrase in phrases if phrase.lower() in prose.lower()]
    lines += [f"{chapter}: the prose types the claim {claim!r}: decide it with record_finding and quote the glue"
              for claim in TYPED_CLAIMS if claim in prose.lower()]
    quoted = set(re.findall(r"\{glue:text\}`([\w-]+)", prose))
    lines += [f"{chapter}: the prose quotes verdict {key!r}, which no record_finding decides"
              for key in sorted(quoted) if key.endswith("_verdict") and key not in declared]
    lines += [f"{chapter}: finding {key!r} {why}" for key, why in weak_decisions(nb)]
    if not declared:
        lines.append(f"{chapter}: records no finding (record_finding)")
    if f'findings_table("{chapter}"' not in code:
        lines.append(f'{chapter}: does not glue findings_table("{chapter}")')
    return lines
