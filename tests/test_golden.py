"""Golden regression of the chapters: every recorded number of a ``ci``-profile run within its tolerance.

See :mod:`rea.book.golden`. The chapters themselves run once each, as the golden notebooks under nbval
(``pytest --nbval-lax tests/golden/``, ``tests/golden/conftest.py``); these tests check that the goldens are in sync
with ``book/`` and that the harness fails where it must (a synthetic notebook under nbval).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from rea.book import chapters, golden

TOC = chapters.toc_chapters()


def test_registry_toc_and_goldens_agree():
    """rea.book.chapters.CHAPTERS, _toc.yml and tests/golden/*.json name the same chapters."""
    assert chapters.registry_mismatches() == []
    assert TOC == list(chapters.CHAPTERS)


def test_registry_mismatches_are_reported(tmp_path):
    book, gold = tmp_path / "book", tmp_path / "tests" / "golden"
    book.mkdir()
    gold.mkdir(parents=True)
    files = list(chapters.CHAPTERS.values())
    for f in files[1:] + ["99_new.md", "notes.md"]:
        (book / f).write_text("```{code-cell} ipython3\n:tags: [parameters]\n\nseed: int = 0  # s\n```\n")
    (book / "notes.md").write_text("prose only\n")
    toc = [files[2], files[1]] + files[3:] + ["99_new.md", "notes.md"]
    (tmp_path / "_toc.yml").write_text("root: book/intro\nchapters:\n"
                                       + "".join(f"  - file: book/{f[:-3]}\n" for f in toc))
    for name in list(chapters.CHAPTERS)[:-1] + ["old"]:
        (gold / f"{name}.json").write_text("{}")
    first, last = list(chapters.CHAPTERS)[0], list(chapters.CHAPTERS)[-1]
    lines = chapters.registry_mismatches(tmp_path)
    assert any(line.startswith(f"chapter {first!r}") and "not in _toc.yml" in line for line in lines)
    assert any(line.startswith(f"chapter {first!r}") and "does not exist" in line for line in lines)
    assert any("another order" in line for line in lines)
    assert any("book/99_new.md is in _toc.yml and has a parameters cell" in line for line in lines)
    assert not any("notes.md" in line for line in lines)
    assert f"tests/golden/{last}.json is missing" in lines
    assert "tests/golden/old.json has no chapter in the registry" in lines
    assert len(lines) == 6, lines


@pytest.mark.parametrize("chapter", TOC)
def test_golden_in_sync_with_source(chapter):
    path = golden.golden_path(chapter)
    assert path.exists(), f"no golden for {chapter}: run `make golden`"
    gold = golden.load_golden(chapter)
    stale = f"{path.name} is stale: run `make golden CHAPTERS={chapter}`"
    assert gold["code_sha256"] == golden.code_hash(chapter), stale
    assert gold["parameters"]["profile"] == "ci" and gold["records"], f"{path.name}: no records at the ci profile"


@pytest.mark.parametrize("chapter", TOC)
def test_golden_notebook_in_sync_with_source(chapter):
    """tests/golden/<chapter>.ipynb is the chapter prepared by papermill now (same code cells and nbval tags), with
    the set-up cell first and the golden check last, executed (nbval compares only cells with an execution count)
    and stripped of images, HTML and execution metadata."""
    path = golden.notebook_path(chapter)
    assert path.exists(), f"no golden notebook for {chapter}: run `make golden CHAPTERS={chapter}`"
    nb = nbformat.read(path, as_version=4)
    stale = f"{path.name} is stale: run `make golden CHAPTERS={chapter}`"
    assert golden.code_cells(nb) == golden.code_cells(golden.prepare(chapter)), stale
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert golden.SETUP_TAG in code[0].metadata.tags and golden.CHECK_TAG in code[-1].metadata.tags, stale
    assert sum(golden.injected(c) for c in code) == 2, stale
    checked = [c for c in code if golden.NBVAL_CHECK in c.metadata.get("tags", [])]
    assert all(c.execution_count is not None for c in checked), f"{path.name}: a checked cell was never executed"
    assert code[-1].outputs[0].text.startswith(f"{chapter}.json: all {len(golden.load_golden(chapter)['records'])} ")
    kinds = {k for c in code for out in c.outputs for k in out.get("data", {})}
    assert kinds <= {"text/plain"} and not any("execution" in c.metadata for c in code), f"{path.name} is not stripped"
    assert not any(out.get("name") == "stderr" for c in code for out in c.outputs), f"{path.name} holds stderr"


def test_compare_tolerances():
    gold = {"x": {"value": -31.0125, "rtol": 1e-4, "atol": 1e-12}, "k": {"value": 2, "rtol": 1e-4, "atol": 1e-12},
            "e": {"value": 0.1, "rtol": 1e-9, "atol": 1e-12}, "s": {"value": "0.3, 0.6", "rtol": 1e-4, "atol": 0},
            "n": {"value": float("nan"), "rtol": 1e-4, "atol": 0}}
    ok = {"x": {"value": -31.0135}, "k": {"value": 2}, "e": {"value": 0.1 + 1e-12}, "s": {"value": "0.3, 0.6"},
          "n": {"value": float("nan")}}
    assert golden.compare(gold, ok) == []  # across a rounding boundary of the 3rd decimal: same number
    bad = {**ok, "x": {"value": -31.02}, "k": {"value": 3}, "e": {"value": 0.1 + 1e-9}, "n": {"value": 0.0}}
    assert [line.split(":")[0] for line in golden.compare(gold, bad)] == ["e", "k", "n", "x"]
    assert golden.compare(gold, {k: v for k, v in ok.items() if k != "s"}) == [
        "s: recorded in the golden, missing from the run"]


def test_check_mode_compares_numbers_and_ignores_the_code_hash(monkeypatch, capsys, tmp_path):
    """`python -m rea.book.golden --check CHAPTER` prints each mismatch and a verdict; exit 1 on any (no kernel)."""
    chapter = TOC[0]
    gold = golden.load_golden(chapter)["records"]
    same = {k: {"value": v["value"]} for k, v in gold.items()}
    monkeypatch.setattr(golden, "code_hash", lambda chapter: "changed")
    monkeypatch.setattr(golden, "execute", lambda chapter, workdir: golden.ChapterRun(tmp_path, same))
    assert golden.main(["--check", chapter]) == 0
    out = capsys.readouterr().out
    assert f"{chapter}: OK, the same numbers ({len(gold)} golden records" in out and out.count("\n") == 1
    name = next(k for k, v in gold.items() if isinstance(v["value"], int) and not isinstance(v["value"], bool))
    changed = {**same, name: {"value": gold[name]["value"] + 1}}
    monkeypatch.setattr(golden, "execute", lambda chapter, workdir: golden.ChapterRun(tmp_path, changed, ["x"]))
    assert golden.main(["--check", chapter]) == 1
    out = capsys.readouterr().out
    assert f"  {chapter}: {name}: " in out and f"  {chapter}: wrote to stderr: x" in out
    assert f"{chapter}: FAIL, 2 mismatches" in out
    assert golden.main(["--check", "nosuch"]) == 2


def _write_records(path, entries):
    path.write_text("".join(json.dumps({"name": n, "value": v, "rtol": r, "atol": a}) + "\n"
                            for n, (v, r, a) in entries.items()))


def test_check_run_compares_with_tolerances_and_prints_an_exact_summary(monkeypatch, tmp_path, capsys):
    """The golden check cell (no kernel here): silent agreement within tolerance prints the summary nbval compares;
    a changed exact value and a float outside its tolerance raise one AssertionError naming both."""
    inf = float("inf")
    gold = {"k": (3, 1e-4, 1e-12), "x": (1.0, 1e-4, 1e-12), "e": (0.25, 1e-9, 1e-12), "s": ("passes", 0.0, 0.0),
            "t": (9.0, inf, inf)}
    _write_records(tmp_path / "records.jsonl", gold)
    (tmp_path / "toy.json").write_text(json.dumps({"records": golden._read_records(tmp_path / "records.jsonl")}))
    _write_records(tmp_path / "records.jsonl", {**gold, "x": (1.00005, 1e-4, 1e-12), "t": (1.0, inf, inf)})
    monkeypatch.setenv("REA_RECORDS", str(tmp_path / "records.jsonl"))
    monkeypatch.setenv("REA_GOLDEN_DIR", str(tmp_path))
    golden.check_run("toy")
    assert capsys.readouterr().out == (
        "toy.json: all 5 recorded numbers agree: 1 exact toy answers within rtol 1e-9; 1 float32-model numbers within "
        "rtol 1e-4; 2 integers, booleans, strings: exactly; 1 volatile (timings, round-off sizes: present, not "
        "compared)\n  k = 3\n  s = 'passes'\n")
    _write_records(tmp_path / "records.jsonl", {**gold, "k": (4, 1e-4, 1e-12), "x": (1.001, 1e-4, 1e-12)})
    with pytest.raises(AssertionError) as err:
        golden.check_run("toy")
    assert str(err.value).splitlines() == ["toy: 2 recorded numbers differ from toy.json:",
                                           "k: 4 != golden 3 (rtol 0.0001, atol 1e-12)",
                                           "x: 1.001 != golden 1.0 (rtol 0.0001, atol 1e-12)"]
    monkeypatch.setenv("REA_GOLDEN_RECORDING", "toy")  # make_golden: the run is its own golden
    golden.check_run("toy")
    assert capsys.readouterr().out.startswith("toy.json: all 5 recorded numbers agree")


def test_strip_notebook_keeps_text_and_execution_counts():
    nb = nbformat.v4.new_notebook(metadata={"papermill": {"duration": 1.0}})
    cell = nbformat.v4.new_code_cell("x", execution_count=3,
                                     metadata={"execution": {"iopub.status.busy": "2026"}, "papermill": {}})
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="42\n"),
                    nbformat.v4.new_output("display_data", data={"image/png": "AAAA", "text/plain": "<Figure>"},
                                           metadata={"w": 1}),
                    nbformat.v4.new_output("display_data", data={"text/html": "<b>x</b>"})]
    nb.cells.append(cell)
    out = golden.strip_notebook(nb)
    assert "papermill" not in out.metadata and out.cells[0].metadata == {} and out.cells[0].execution_count == 3
    assert [o.get("text") or o.data for o in out.cells[0].outputs] == ["42\n", {"text/plain": "<Figure>"}]


SYNTHETIC_CELLS = [  # (source, stored stdout or None, tags, fails under nbval with the golden conftest)
    ("from rea.book import golden as _golden\n_golden.notebook_setup('synthetic')", "", ["nbval-check-output"], False),
    ("print(6 * 7)", "42\n", ["nbval-check-output"], False),
    ("print(6 * 7)", "41\n", ["nbval-check-output"], True),  # (a) an exact output changed
    ("import sys\nprint('careful', file=sys.stderr)", None, [], True),  # (d) stderr
    ("raise ValueError('boom')", None, [], True),  # (c) a cell raises
    ("from rea.book import record\nrecord('k', 3)\nrecord('x', 1.00005)\nrecord('t', 12.5, tol='volatile')",
     None, [], False),
    ("_golden.check_run('synthetic')", "SUMMARY", ["nbval-check-output"], False),  # within tolerance: passes
    ("_golden.check_run('synthetic-bad')", None, ["nbval-check-output"], True),  # (a) exact 3 != 4, (b) 1.00005 vs 1.01
]


@pytest.mark.slow
def test_nbval_harness_fails_on_changed_output_stderr_errors_and_numbers(tmp_path):
    """A synthetic golden notebook under nbval with tests/golden/conftest.py: every bad cell fails, naming why."""
    inf = float("inf")
    records = {"k": {"value": 3, "rtol": 1e-4, "atol": 1e-12}, "x": {"value": 1.0, "rtol": 1e-4, "atol": 1e-12},
               "t": {"value": 3.0, "rtol": inf, "atol": inf}}
    bad = {**records, "k": {**records["k"], "value": 4}, "x": {**records["x"], "value": 1.01}}
    (tmp_path / "synthetic.json").write_text(json.dumps({"records": records}))
    (tmp_path / "synthetic-bad.json").write_text(json.dumps({"records": bad}))
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    for i, (source, stdout, tags, _) in enumerate(SYNTHETIC_CELLS):
        cell = nbformat.v4.new_code_cell(source, execution_count=i + 1, metadata={"tags": tags})
        if stdout:
            text = golden.summary("synthetic", records) + "\n" if stdout == "SUMMARY" else stdout
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.cells.append(cell)
    nbformat.write(nb, tmp_path / "synthetic.ipynb")
    (tmp_path / "conftest.py").write_text((Path(golden.GOLDEN) / "conftest.py").read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers = slow: slow\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REA_") and k != "PYTEST_ADDOPTS"}
    env["TMPDIR"] = str(tmp_path)  # the conftest keeps the failed run's folder: here, not in /tmp
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--nbval-lax", "-rA",
                          "--color=no", "synthetic.ipynb"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    out = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr)  # the kernel's tracebacks come coloured
    failing = [f"synthetic.ipynb::Cell {i}" for i, c in enumerate(SYNTHETIC_CELLS) if c[3]]
    assert run.returncode == 1 and "4 failed, 4 passed" in out, out
    assert sorted(line.split()[1] + " " + line.split()[2] for line in out.splitlines()
                  if line.startswith("FAILED ")) == failing, out
    assert "Cell outputs differ" in out, out
    assert "Cell 3 of synthetic.ipynb wrote to stderr (1 lines):\ncareful" in out, out
    assert "ValueError: boom" in out, out
    assert "synthetic-bad: 2 recorded numbers differ from synthetic-bad.json:" in out, out
    assert "k: 3 != golden 4 (rtol 0.0001, atol 1e-12)" in out and "x: 1.00005 != golden 1.01" in out, out
