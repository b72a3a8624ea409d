"""Golden regression of the chapters: every recorded number of a ``ci``-profile run within its tolerance.

See :mod:`rea.book.golden`. The execution tests re-run each chapter in the pinned environment with fresh shared runs.
"""

from __future__ import annotations

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
    assert f"tests/golden/{last}.json is missing" in lines and "tests/golden/old.json has no chapter in the registry" in lines
    assert len(lines) == 6, lines


@pytest.mark.parametrize("chapter", TOC)
def test_golden_in_sync_with_source(chapter):
    path = golden.golden_path(chapter)
    assert path.exists(), f"no golden for {chapter}: run `make golden`"
    gold = golden.load_golden(chapter)
    assert gold["code_sha256"] == golden.code_hash(chapter), f"{path.name} is stale: run `make golden {chapter}`"
    assert gold["parameters"]["profile"] == "ci" and gold["records"], f"{path.name}: no records at the ci profile"


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


@pytest.mark.slow
@pytest.mark.parametrize("chapter", TOC)
def test_golden_numbers(chapter, tmp_path):
    gold = golden.load_golden(chapter)
    run = golden.execute(chapter, tmp_path)
    assert not run.stderr, f"{chapter} wrote to stderr: {run.stderr}"
    diff = golden.compare(gold["records"], run.records)
    assert not diff, f"{chapter}: {len(diff)} recorded numbers differ from tests/golden/{chapter}.json " \
                     f"(executed notebook: {run.notebook}):\n" + "\n".join(diff)


def test_check_mode_compares_numbers_and_ignores_the_code_hash(monkeypatch, capsys, tmp_path):
    """`python -m rea.book.golden --check CHAPTER` prints each mismatch and a verdict; exit 1 on any (no kernel here)."""
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
