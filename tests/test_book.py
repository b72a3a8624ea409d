"""The book's structure: chapters have typed parameters, goldens are in sync with their sources, ``rea run`` works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rea import runner
from rea.golden import GOLDEN, toc_chapters

ROOT = Path(__file__).resolve().parent.parent
TOC = toc_chapters()
REQUIRED = {"profile", "model", "prompt", "seed"}


def _code_sources(nb) -> list[str]:
    tags = lambda c: c.get("metadata", {}).get("tags", [])  # noqa: E731
    return [c.source.strip() for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in tags(c)]


def test_toc_lists_only_written_chapters():
    assert TOC, "no chapter in _toc.yml"
    for chapter in TOC:
        assert (runner.BOOK / runner.CHAPTERS[chapter]).exists()


@pytest.mark.parametrize("chapter", TOC)
def test_parameters_cell(chapter):
    params = runner.chapter_parameters(chapter)
    assert REQUIRED <= set(params), f"{chapter}: parameters cell lacks {REQUIRED - set(params)}"
    assert params["profile"].default == "quick"
    for p in params.values():
        assert p.help, f"{chapter}: parameter {p.name!r} has no '# help' comment"
        assert p.annotation == type(p.default).__name__, f"{chapter}: {p.name}: annotation vs default type"


@pytest.mark.parametrize("chapter", TOC)
def test_front_matter(chapter):
    text = (runner.BOOK / runner.CHAPTERS[chapter]).read_text()
    head = text.split("---", 2)[1]
    assert "format_name: myst" in head and "jupytext_version" not in head
    assert "cell_metadata_filter: tags,-all" in head
    assert "name: python3" in head


@pytest.mark.parametrize("chapter", TOC)
def test_golden_in_sync_with_source(chapter):
    import nbformat

    golden = GOLDEN / f"{chapter}.ipynb"
    assert golden.exists(), f"no golden for {chapter}: run `make golden`"
    gold = nbformat.read(golden, as_version=4)
    src = runner.read_chapter(chapter)
    assert _code_sources(gold) == _code_sources(src), f"tests/golden/{chapter}.ipynb is stale: run `make golden`"
    injected = [c for c in gold.cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(injected) == 1 and 'profile = "ci"' in injected[0].source


def test_parse_and_convert():
    params = runner.parse_parameters(
        'a: int = 3  # an int\nb: float = 0.5  # a float\nc: str = "x # y"  # a str\nd: bool = False  # flag\n'
        "e: list = [1, 2]  # a list\n"
    )
    assert params["c"].default == "x # y" and params["c"].help == "a str"
    assert runner.convert(params["a"], "1e3") == 1000
    assert runner.convert(params["b"], "2") == 2.0
    assert runner.convert(params["d"], "yes") is True
    assert runner.convert(params["e"], "[3, 4]") == [3, 4]
    with pytest.raises(runner.RunError, match="must be of type int"):
        runner.convert(params["a"], "2.5")
    with pytest.raises(runner.RunError, match="must be of type list"):
        runner.convert(params["e"], "3")


def test_cli_errors(capsys):
    assert runner.main(["nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown chapter 'nosuch'" in err and "theory" in err and err.count("\n") == 1
    assert runner.main(["theory", "-p", "nosuch", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter 'nosuch'" in err and "n_samples" in err
    missing = [c for c, f in runner.CHAPTERS.items() if not (runner.BOOK / f).exists()]
    if missing:
        assert runner.main([missing[0]]) == 2
        assert "not written yet" in capsys.readouterr().err


def test_help_params(capsys):
    assert runner.main(["theory", "--help-params"]) == 0
    out = capsys.readouterr().out
    assert "profile" in out and "'quick'" in out and "budget" in out


@pytest.mark.slow
def test_run_theory_end_to_end(tmp_path):
    from rea.cli import main as cli_main

    out = tmp_path / "run"
    rc = cli_main(["run", "theory", "--prompt", "The sky is", "-p", "profile", "ci", "-p", "toy_samples", "500",
                   "--out", str(out), "--no-progress"])
    assert rc == 0
    import nbformat

    nb = nbformat.read(out / "theory.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])][0].source
    assert 'prompt = "The sky is"' in injected and "toy_samples = 500" in injected
    assert (out / "observables.csv").exists() and (out / "toy_direct_tail.csv").exists()
    assert json.loads((out / "parameters.json").read_text())["parameters"]["profile"] == "ci"
    assert not list((ROOT / "book").glob("*.ipynb"))


def test_slug():
    assert runner.slug("The sky is!") == "the-sky-is"
    assert runner.slug("???") == "run"
