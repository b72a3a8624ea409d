"""Regenerate the golden executed notebooks for nbval: ``python -m rea.golden [CHAPTER ...]`` (``make golden``).

Each chapter listed in ``_toc.yml`` is converted in memory from its MyST source and executed by papermill at the
``"ci"`` profile (tiny budgets, seed 0) into ``tests/golden/<chapter>.ipynb``. ``pytest --nbval`` re-executes those
notebooks and compares every output with the sanitising rules of ``tests/golden/sanitize.cfg``; cells tagged
``nbval-ignore-output`` are run but not compared. ``tests/test_book.py`` fails when a golden's code drifts from its
``book/`` source: rerun ``make golden`` after editing a chapter.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from rea.runner import BOOK, CHAPTERS, ROOT, read_chapter

GOLDEN = ROOT / "tests" / "golden"
PARAMETERS = {"profile": "ci", "seed": 0, "device": "cpu", "out_dir": ""}
_PNG = re.compile(r"image/png$")


def toc_chapters(root: Path = ROOT) -> list[str]:
    """Short names of the chapters listed in ``_toc.yml`` (in order)."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [Path(c["file"]).stem for c in toc.get("chapters", [])]
    by_file = {Path(f).stem: name for name, f in CHAPTERS.items()}
    return [by_file[f] for f in files if f in by_file]


def _slim(nb) -> None:
    """Drop volatile metadata and shrink figure PNGs to a stub (nbval does not compare images)."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        for out in cell.get("outputs", []):
            for key in list(out.get("data", {})):
                if _PNG.search(key):
                    out["data"][key] = "iVBORw0KGgo="  # masked by sanitize.cfg either way


def make_golden(chapter: str, out_dir: Path = GOLDEN) -> Path:
    import nbformat
    import papermill as pm

    nb = read_chapter(chapter)
    target = out_dir / f"{chapter}.ipynb"
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    executed = pm.execute_notebook(nb, str(target), parameters=PARAMETERS, kernel_name="python3",
                                   language="python", cwd=str(out_dir), progress_bar=False)
    _slim(executed)
    nbformat.write(executed, str(target))
    return target


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chapters = argv or toc_chapters()
    for chapter in chapters:
        if chapter not in CHAPTERS or not (BOOK / CHAPTERS[chapter]).exists():
            print(f"rea.golden: error: no written chapter {chapter!r}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        target = make_golden(chapter)
        print(f"rea.golden: {target.relative_to(ROOT)} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
