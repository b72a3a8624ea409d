"""Findings are decided from the run, never typed: rea.book.findings, rea.book.typeset and every chapter's prose."""

import json

import nbformat
import pytest

from rea.book import CHAPTERS, sci
from rea.book.findings import audit_chapter, chapter_findings, declared_findings, findings_table, record_finding
from rea.book.runner import read_chapter


def _nb(markdown: str, code: str):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown), nbformat.v4.new_code_cell(code)])


CODE = ('record_finding("x_verdict", chapter="demo", paper="p", measured="m", holds=a > b, rule="bar",\n'
        '               yes="is the better of the two", no="is not better")\n'
        'glue("tab", findings_table("demo", profile))\n')


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_chapter_prose_quotes_its_computed_findings(chapter):
    assert audit_chapter(read_chapter(chapter), chapter) == []


def test_audit_accepts_quoted_and_flags_typed_phrases():
    assert audit_chapter(_nb("MBAR {glue:text}`x_verdict` here.", CODE), "demo") == []
    typed = audit_chapter(_nb("MBAR is the better of the two here.", CODE), "demo")
    assert len(typed) == 1 and "'is the better of the two'" in typed[0] and "x_verdict" in typed[0]
    opposite = audit_chapter(_nb("MBAR is not better.", CODE), "demo")
    assert len(opposite) == 1 and "'is not better'" in opposite[0]


def test_audit_flags_claims_unknown_verdicts_and_missing_table():
    lines = audit_chapter(_nb("Errors grow quickly; see {glue:text}`y_verdict`. Largely repetitive.",
                              'record("y_verdict", "yes")'), "demo")
    assert any("'largely repetitive'" in line for line in lines)
    assert any("'y_verdict', which no record_finding" in line for line in lines)
    assert any("records no finding" in line for line in lines)
    assert any('findings_table("demo")' in line for line in lines)


def test_declared_findings_reads_literal_phrases():
    assert declared_findings(_nb("", CODE)) == {"x_verdict": ("is the better of the two", "is not better")}


def test_record_finding_glues_the_phrase_of_its_outcome_and_logs_it(tmp_path, monkeypatch):
    log = tmp_path / "records.jsonl"
    monkeypatch.setenv("REA_RECORDS", str(log))
    outcomes = {True: "reproduced", False: "not reproduced", None: "inconclusive"}
    for i, (holds, verdict) in enumerate(outcomes.items()):
        record_finding(f"k{i}", chapter="test-demo", paper="P", measured="M", holds=holds, yes="Y", no="N",
                       unsure="U", rule="effect")
        f = chapter_findings("test-demo")[-1]
        assert f.verdict == verdict and f.says == {True: "Y", False: "N", None: "U"}[holds]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["value"] for e in entries] == ["Y", "N", "U"]
    assert [e["finding"]["verdict"] for e in entries] == list(outcomes.values())
    table = findings_table("test-demo").data
    assert list(table.columns) == ["Paper finding", "This run", "Rule", "Verdict"]
    assert table["Rule"].tolist() == ["effect"] * 3
    assert table["Verdict"].tolist() == list(outcomes.values())
    record_finding("k1", chapter="test-demo", paper="P", measured="M2", holds=True, yes="Y", no="N", rule="bar")
    assert [f.key for f in chapter_findings("test-demo")] == ["k0", "k2", "k1"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(holds="yes"), "holds must be a bool or None"),
    (dict(yes=""), "yes must be a non-empty string"),
    (dict(no="Y"), "yes and no must differ"),
    (dict(rule="looks fine"), "rule must be one of effect, exact, coverage, agree, bar"),
])
def test_record_finding_rejects_bad_input(kwargs, match):
    args = dict(chapter="test-bad", paper="P", measured="M", holds=True, yes="Y", no="N", rule="bar") | kwargs
    with pytest.raises(ValueError, match=match):
        record_finding("bad", **args)


def test_findings_table_needs_findings():
    with pytest.raises(ValueError, match="has recorded no findings"):
        findings_table("no-such-chapter")


@pytest.mark.parametrize("x, text", [(2.9e-7, "2.9 × 10⁻⁷"), (-3e-9, "−3.0 × 10⁻⁹"), (1.43e-8, "1.4 × 10⁻⁸"),
                                     (5e4, "5.0 × 10⁴"), (0.031, "0.031"), (0.0, "0"), (float("nan"), "n/a"),
                                     (float("-inf"), "−∞"), (1e-3, "0.001"), (120, "120"), (0.5, "0.5"),
                                     (232.4, "232"), (12.5, "12")])
def test_sci_typesets(x, text):
    assert sci(x) == text


def test_checks_the_book_adds_pass_or_fail():
    record_finding("c0", chapter="test-check", paper="(this book) a check", measured="M", holds=False, yes="Y",
                   no="N", rule="exact")
    record_finding("c1", chapter="test-check", paper="(this book) b", measured="M", holds=True, yes="Y", no="N",
                   rule="exact")
    assert [f.verdict for f in chapter_findings("test-check")] == ["fails", "passes"]


@pytest.mark.parametrize("holds, why", [
    ("any(p < floor for p in pairs)", "any(...)"),
    ("bool(deep)", "bool(deep)"),
])
def test_audit_flags_decisions_by_any_pair(holds, why):
    code = CODE.replace("holds=a > b", f"holds={holds}")
    lines = audit_chapter(_nb("{glue:text}`x_verdict`", code), "demo")
    assert len(lines) == 1 and why in lines[0] and "x_verdict" in lines[0]


def test_audit_flags_a_finding_without_a_rule():
    lines = audit_chapter(_nb("{glue:text}`x_verdict`", CODE.replace(' rule="bar",', "")), "demo")
    assert len(lines) == 1 and "names no decision rule" in lines[0]


def test_findings_table_glues_the_record_the_summary_reads(monkeypatch):
    from rea.book import summary

    glued = {}
    monkeypatch.setattr("myst_nb.glue", lambda key, value, display=True: glued.__setitem__(key, value))
    record_finding("s0", chapter="test-sum", paper="P", measured="M", holds=None, yes="Y", no="N", rule="agree")
    record_finding("s1", chapter="test-sum", paper="(this book) c", measured="M", holds=False, yes="Y", no="N",
                   rule="coverage")
    findings_table("test-sum", "quick")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("")])
    prefix = "application/papermill.record/"  # how myst_nb.glue(..., display=False) stores a value
    nb.cells[0].outputs = [nbformat.v4.new_output(
        "display_data", data={prefix + "text/plain": repr(glued["findings-test-sum"])},
        metadata={"scrapbook": {"name": "findings-test-sum", "mime_prefix": prefix}})]
    monkeypatch.setattr(summary, "CHAPTERS", {"test-sum": "x.md"})
    monkeypatch.setattr(summary, "CHAPTER_NUMBER", {"test-sum": 1})
    rows = summary.book_findings({"test-sum": nb})
    assert [(r["key"], r["verdict"], r["rule"], r["profile"]) for r in rows] == [
        ("s0", "inconclusive", "agree", "quick"), ("s1", "fails", "coverage", "quick")]
    counts = summary.verdict_counts(rows)
    assert counts["papers' findings", "inconclusive"] == 1 and counts["book's checks", "fails"] == 1
    assert sum(counts.values()) == 2
    table = summary.counts_by_chapter(rows)
    assert table.loc["all"].sum() == 2 and table.loc["all", ("book's checks", "fails")] == 1
    text = summary.summary_sentences({"test-sum": nb}, rows)
    assert "1 findings of the papers: 0 reproduced, 0 not reproduced and 1 inconclusive" in text
    assert "1 checks of the book's own: 0 pass, 1 fail" in text
    assert "Checks of the book's own that fail: c (ch. 1)" in text
    assert "none at 'paper'" in text and "`" not in text
    assert "nothing to sum up" in summary.summary_sentences({"test-sum": None}, [])
