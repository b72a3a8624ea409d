"""The book's structure: chapters have typed parameters, goldens are in sync with their sources, ``rea run`` works."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rea.book import runner
from rea.book.chapters import CHAPTERS, toc_chapters
from rea.book.profiles import PROFILES, SETTINGS, chapter_settings, profile_knobs

ROOT = Path(__file__).resolve().parent.parent
TOC = toc_chapters()
REQUIRED = {"profile", "model", "prompt", "seed"}


def test_toc_lists_only_written_chapters():
    assert TOC, "no chapter in _toc.yml"
    for chapter in TOC:
        assert (runner.BOOK / CHAPTERS[chapter]).exists()


@pytest.mark.parametrize("chapter", TOC)
def test_parameters_cell(chapter):
    params = runner.chapter_parameters(chapter)
    assert REQUIRED <= set(params), f"{chapter}: parameters cell lacks {REQUIRED - set(params)}"
    assert params["profile"].default == "quick"
    for p in params.values():
        assert p.help, f"{chapter}: parameter {p.name!r} has no '# help' comment"
        if p.optional:
            assert p.annotation == f"{p.type.__name__} | None", f"{chapter}: {p.name}: annotation of an optional"
            assert "None: " in p.help, f"{chapter}: {p.name}: the help must say what None means"
        else:
            assert p.annotation == type(p.default).__name__, f"{chapter}: {p.name}: annotation vs default type"


@pytest.mark.parametrize("chapter", TOC)
def test_profile_knobs_are_the_chapters(chapter):
    """Every parameter that defaults to None is a knob of the chapter's profile tables, and every knob's value at
    every profile passes the runner's checks of the parameter of the same name."""
    params = runner.chapter_parameters(chapter)
    optional = {name for name, p in params.items() if p.optional}
    for profile in PROFILES:
        knobs = profile_knobs(chapter, profile)
        assert optional <= set(knobs), f"{chapter}: None parameters without a profile value: {optional - set(knobs)}"
        for name in optional:
            assert runner.check_value(params[name], knobs[name]) == knobs[name]
            assert isinstance(knobs[name], params[name].type) or params[name].type is list, (chapter, name)
        assert chapter_settings(chapter, profile, **{name: None for name in optional}) == knobs


def test_profile_tables():
    assert set(SETTINGS) == set(CHAPTERS)
    for chapter, tables in SETTINGS.items():
        for table in tables:
            assert set(table) == set(PROFILES), f"{chapter}: a table without exactly the profiles {PROFILES}"
            keys = [set(row) for row in table.values()]
            assert all(k == keys[0] for k in keys), f"{chapter}: profiles with different knobs"
        names = [k for table in tables for k in table["ci"]]
        assert len(names) == len(set(names)), f"{chapter}: a knob in two of its tables"
    assert SETTINGS["tps"] == SETTINGS["tilting"] and SETTINGS["mbar"][0] is SETTINGS["tps"][0]


def test_chapter_settings():
    quick = chapter_settings("tps", "quick")
    assert quick["n_steps"] == 40 and quick["checkpoint_every"] == 50 and quick["record_tokens_every"] == 1
    over = chapter_settings("tps", "quick", n_steps=200, toy_lambdas=None)
    assert over["n_steps"] == 200 and over["toy_lambdas"] == quick["toy_lambdas"]
    over["lambdas_ari"].append(9.0)  # a copy: the table is untouched
    assert chapter_settings("tps", "quick")["lambdas_ari"] == quick["lambdas_ari"]
    assert chapter_settings("errors", "ci", n_boot=60)["n_boot"] == 60
    with pytest.raises(ValueError, match="'n_step': not a knob of chapter 'tps'"):
        chapter_settings("tps", "quick", n_step=200)
    with pytest.raises(ValueError, match="profile must be one of ci, quick, paper"):
        chapter_settings("tps", "fast")
    with pytest.raises(ValueError, match="chapter must be one of"):
        chapter_settings("nosuch", "ci")


@pytest.mark.parametrize("chapter", TOC)
def test_front_matter(chapter):
    text = (runner.BOOK / CHAPTERS[chapter]).read_text()
    head = text.split("---", 2)[1]
    assert "format_name: myst" in head and "jupytext_version" not in head
    assert "cell_metadata_filter: tags,-all" in head
    assert "name: python3" in head


def test_parse_and_convert():
    params = runner.parse_parameters(
        'a: int = 3  # an int\nb: float = 0.5  # a float\nc: str = "x # y"  # a str\nd: bool = False  # flag\n'
        "e: list = [1, 2]  # a list\nf: int | None = None  # (None: from the profile)\n"
        "g: list | None = None  # (None: from the profile)\n"
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
    assert params["f"].optional and params["f"].type is int and not params["a"].optional
    assert runner.convert(params["f"], "200") == 200 and runner.convert(params["f"], "None") is None
    assert runner.convert(params["g"], "[0.1, 0.2]") == [0.1, 0.2] and runner.convert(params["g"], "None") is None
    with pytest.raises(runner.RunError, match="must be of type int"):
        runner.convert(params["a"], "None")
    with pytest.raises(runner.RunError, match=re.escape("must be of type int | None (default None), got '2.5'")):
        runner.convert(params["f"], "2.5")
    with pytest.raises(runner.RunError, match=re.escape("annotation must read 'T | None'")):
        runner.parse_parameters("h: int = None  # no\n")


def test_cli_errors(capsys):
    assert runner.main(["nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown chapter 'nosuch'" in err and "theory" in err and err.count("\n") == 1
    assert runner.main(["theory", "-p", "nosuch", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter 'nosuch'" in err and "n_samples" in err
    missing = [c for c, f in CHAPTERS.items() if not (runner.BOOK / f).exists()]
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
    logged = {json.loads(line)["name"] for line in (out / "records.jsonl").read_text().splitlines()}
    assert {"th_n", "th_score_diff"} <= logged  # every recorded number, for the reader of a run
    assert json.loads((out / "parameters.json").read_text())["parameters"]["profile"] == "ci"
    assert not list((ROOT / "book").glob("*.ipynb"))


def test_slug():
    assert runner.slug("The sky is!") == "the-sky-is"
    assert runner.slug("???") == "run"


@pytest.mark.parametrize(
    "chapter, param, value, match",
    [
        ("theory", "profile", "fast", "'profile' must be one of ci, quick, paper, got 'fast'"),
        ("theory", "length", "-1", "'length' must be a positive integer, got -1"),
        ("theory", "length", "0", "'length' must be a positive integer, got 0"),
        ("theory", "n_samples", "-5", "'n_samples' must be a positive integer"),
        ("theory", "toy_length", "-2", "'toy_length' must be a positive integer"),
        ("theory", "seed", "-1", "'seed' must be a non-negative integer"),
        ("theory", "length", "abc", "'length' must be of type int | None"),
        ("tps", "n_steps", "-10", "'n_steps' must be a positive integer"),
        ("tps", "n_steps", "0", "'n_steps' must be a positive integer"),
        ("errors", "n_boot", "0", "'n_boot' must be a positive integer"),
        ("single-token", "budget", "-1", "'budget' must be a positive integer"),
        ("tps", "lambdas_ari", "['a', 0.1]", "'lambdas_ari' must be a list of finite numbers"),
        ("tps", "toy_lambdas", "[0.1, 1e999]", "'toy_lambdas' must be a list of finite numbers"),
        ("tps", "lambdas_logprob", "[True]", "'lambdas_logprob' must be a list of finite numbers"),
        ("tps", "lambdas_ari", "[0.1, -0.2]", "'lambdas_ari' must be a list of finite numbers ≥ 0 (|λ| values)"),
        ("mbar", "n_bins", "0", "'n_bins' must be a positive integer, got 0"),
    ],
)
def test_run_checks_values_before_any_kernel_starts(chapter, param, value, match, tmp_path, capsys, monkeypatch):
    import papermill

    if chapter not in TOC:
        pytest.skip(f"chapter {chapter!r} is not written yet")

    def no_kernel(*args, **kwargs):
        raise AssertionError("a kernel was started before the parameters were checked")

    monkeypatch.setattr(papermill, "execute_notebook", no_kernel)
    out = tmp_path / "run"
    assert runner.main([chapter, "-p", param, value, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rea run: error: parameter ") and err.count("\n") == 1 and match in err, err
    assert not out.exists()


def test_run_accepts_profile_values_and_none(tmp_path, monkeypatch):
    import papermill

    seen = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda nb, target, parameters, **kw: seen.update(parameters))
    rc = runner.main(["theory", "-p", "profile", "ci", "-p", "length", "None", "-p", "seed", "0", "-p", "n_samples",
                      "5", "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0 and seen["profile"] == "ci" and seen["length"] is None and seen["n_samples"] == 5
    assert seen["seed"] == 0


@pytest.mark.parametrize("chapter", TOC)
def test_every_profile_knob_is_settable_from_the_command_line(chapter, tmp_path, monkeypatch):
    """`rea run CHAPTER -p KNOB VALUE` reaches the chapter for every optional parameter (value: the ci profile's)."""
    import papermill

    seen = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda nb, target, parameters, **kw: seen.update(parameters))
    params = runner.chapter_parameters(chapter)
    knobs = profile_knobs(chapter, "ci")
    argv = [chapter, "--out", str(tmp_path / "run"), "--no-progress"]
    for name in (n for n, p in params.items() if p.optional):
        argv += ["-p", name, repr(knobs[name]) if isinstance(knobs[name], (list, tuple)) else str(knobs[name])]
    assert runner.main(argv) == 0
    assert all(seen[name] == knobs[name] for name, p in params.items() if p.optional)
