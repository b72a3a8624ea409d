"""The one registry of the book's executable chapters: short name -> source file, in reading order.

``rea run CHAPTER`` (:mod:`rea.book.runner`), the golden checks (:mod:`rea.book.golden`) and the profile tables
(:data:`rea.book.profiles.SETTINGS`) address chapters by these names. Two other places list chapters and must agree
with :data:`CHAPTERS`: ``_toc.yml`` (jupyter-book's table of contents) and ``tests/golden/<chapter>.json`` (one
golden per chapter); :func:`registry_mismatches` says where they do not (``tests/test_golden.py`` fails on any).

To add a chapter: write ``book/NN_name.md`` with a parameters cell, add it here, to ``_toc.yml`` and to
:data:`rea.book.profiles.SETTINGS`, then record its golden (``make golden CHAPTERS=name``).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
GOLDEN = ROOT / "tests" / "golden"

CHAPTERS: dict[str, str] = {
    "theory": "01_theory.md",
    "sampling": "02_sampling.md",
    "tilting": "03_tilting.md",
    "tps": "04_tps.md",
    "mbar": "05_mbar.md",
    "errors": "06_errors.md",
    "single-token": "07_single_token.md",
    "sweep": "08_sweep.md",
    "deeper": "09_deeper_tails.md",
}
"""Chapter short name -> its jupytext MyST source under ``book/``, in the order of ``_toc.yml``."""

PARAMETERS_TAG = re.compile(r"^:tags: \[[^\]]*\bparameters\b", re.M)
"""A code cell tagged ``parameters`` in a MyST source: what makes a page an executable chapter."""


def toc_files(root: Path = ROOT) -> list[str]:
    """The pages ``_toc.yml`` lists under ``chapters`` (file names under ``book/``, e.g. ``"01_theory.md"``)."""
    import yaml

    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text())
    return [Path(entry["file"]).name + ".md" for entry in toc.get("chapters", [])]


def toc_chapters(root: Path = ROOT) -> list[str]:
    """Short names of the registered chapters that ``_toc.yml`` lists, in its order (prose pages left out)."""
    by_file = {file: name for name, file in CHAPTERS.items()}
    return [by_file[f] for f in toc_files(root) if f in by_file]


def registry_mismatches(root: Path = ROOT, golden_dir: Path | None = None) -> list[str]:
    """One line per disagreement between :data:`CHAPTERS`, ``_toc.yml`` and ``tests/golden/*.json`` (empty: agree).

    * every registered chapter is in ``_toc.yml``, in the same order, and its source exists;
    * every other page of ``_toc.yml`` is prose: it has no code cell tagged ``parameters``;
    * ``tests/golden/`` holds exactly one ``<chapter>.json`` per registered chapter.
    """
    root = Path(root)
    golden_dir = Path(golden_dir) if golden_dir is not None else root / "tests" / "golden"
    listed = toc_files(root)
    lines = [f"chapter {name!r} (book/{file}) is not in _toc.yml" for name, file in CHAPTERS.items()
             if file not in listed]
    lines += [f"chapter {name!r}: book/{file} does not exist" for name, file in CHAPTERS.items()
              if not (root / "book" / file).exists()]
    in_toc = [file for file in listed if file in CHAPTERS.values()]
    if in_toc != [file for file in CHAPTERS.values() if file in listed]:
        lines.append(f"_toc.yml lists the chapters in another order than the registry: {in_toc}")
    lines += [f"book/{file} is in _toc.yml and has a parameters cell, but no entry in CHAPTERS" for file in listed
              if file not in CHAPTERS.values() and (root / "book" / file).exists()
              and PARAMETERS_TAG.search((root / "book" / file).read_text())]
    goldens = {p.stem for p in golden_dir.glob("*.json")}
    lines += [f"tests/golden/{name}.json is missing" for name in CHAPTERS if name not in goldens]
    lines += [f"tests/golden/{name}.json has no chapter in the registry" for name in sorted(goldens - set(CHAPTERS))]
    return lines
