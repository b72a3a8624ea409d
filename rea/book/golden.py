"""Golden regression checks of the chapters: ``python -m rea.book.golden [CHAPTER ...]`` (``make golden``) records them,
``python -m rea.book.golden --check [CHAPTER ...]`` compares a fresh run with them, ignoring the code hash.

A chapter states its results through :func:`rea.book.record` (glued for the prose and logged). The golden of a
chapter, ``tests/golden/<chapter>.json``, holds every recorded number of one run at the ``"ci"`` profile (tiny
budgets, seed 0), each with the tolerance of its precision class (:data:`rea.book.TOLERANCES`):

* exact toy-model answers (``tol="exact"``) and all integers and strings must agree to the last digits;
* numbers computed through a float32 model must agree to ``|x − x_golden| ≤ atol + rtol·|x_golden|``
  (``rtol = 1e-4``: the same completions scored on other kernels differ by ≤ 1e-5 relative).

``tests/test_golden.py`` re-executes each chapter (through :func:`rea.book.runner.run_chapter`, the one way a chapter is
run) and compares; it also fails on any output to stderr and when a golden is stale (the chapter's code cells
changed since the golden was recorded: rerun ``make golden``).

What is reproducible, and how (see the README): a chapter's run depends on its seed only, not on the batch size.
Golden runs pin what can be pinned so that sampling is bit-identical where the hardware allows: one thread
(``OMP_NUM_THREADS=1``; thread count changes MKL's summation order), and on x86-64 CPUs with AVX2 the AVX2 code
paths of both MKL (``MKL_CBWR=AVX2``, Intel's conditional numerical reproducibility) and PyTorch
(``ATEN_CPU_CAPABILITY=avx2``), so an AVX-512 machine computes what an AVX2 one does. Where the pins do not hold
(another BLAS, another architecture), log-probs still differ only by rounding, and the Gumbel-max sampler
(:func:`rea.sampling.position_noise`) keeps the tokens unless rounding swaps the two best scores of a draw.
Every shared run is recomputed in a fresh folder (``REA_BOOK_RUNS``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rea.book.chapters import BOOK, CHAPTERS, GOLDEN, ROOT, toc_chapters
from rea.book.runner import read_chapter, run_chapter

PARAMETERS = {"profile": "ci", "seed": "0", "device": "cpu"}


def code_hash(chapter: str) -> str:
    """sha256 of a chapter's code cells (prose edits do not make its golden stale; code edits do)."""
    nb = read_chapter(chapter)
    code = "\n\x00\n".join(c.source.strip() for c in nb.cells if c.cell_type == "code")
    return hashlib.sha256(code.encode()).hexdigest()


def _has_avx2() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        return " avx2 " in f" {Path('/proc/cpuinfo').read_text()} "
    except OSError:
        return False


def pinned_env() -> dict[str, str]:
    """Environment of a golden run: one thread; AVX2 code paths of MKL and PyTorch where the CPU has AVX2.

    ``REA_GOLDEN_ENV=unpinned`` pins nothing: the chapters then run in the caller's environment, e.g.
    ``REA_GOLDEN_ENV=unpinned OMP_NUM_THREADS=2 ATEN_CPU_CAPABILITY=default pytest tests/test_golden.py`` checks
    that the goldens hold on other kernels and thread counts too.
    """
    import os

    if os.environ.get("REA_GOLDEN_ENV", "pinned") == "unpinned":
        return {}
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if _has_avx2():
        env.update({"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"})
    return env


@dataclass
class ChapterRun:
    """One executed chapter: its recorded numbers (name -> {value, rtol, atol}) and its stderr outputs."""

    notebook: Path
    records: dict[str, dict]
    stderr: list[str] = field(default_factory=list)


def _read_records(path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        name, i = entry.pop("name"), 1
        key = name
        while key in out:  # a name recorded twice keeps both, in order
            i += 1
            key = f"{name}#{i}"
        out[key] = entry
    return out


def execute(chapter: str, workdir: Path) -> ChapterRun:
    """Run ``chapter`` at the golden parameters in the pinned environment, into ``workdir``."""
    import nbformat

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    records = workdir / "records.jsonl"
    records.unlink(missing_ok=True)
    env = {**pinned_env(), "REA_RECORDS": str(records), "REA_BOOK_RUNS": str(workdir / "book-runs")}
    target = run_chapter(chapter, dict(PARAMETERS), out=workdir, progress=False, env=env)
    nb = nbformat.read(target, as_version=4)
    stderr = []
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                stderr.append(f"code cell {i}: {out.get('text', '').strip().splitlines()[0][:200]}")
    return ChapterRun(target, _read_records(records), stderr)


def _same(new, gold: dict) -> bool:
    """Does ``new`` equal the golden entry ``gold`` within its tolerance (exactly for ints, bools, strings)?"""
    old = gold["value"]
    if isinstance(gold["rtol"], float) and math.isinf(gold["rtol"]):  # volatile: only its presence is checked
        return True
    if isinstance(old, bool) or isinstance(new, bool) or isinstance(old, str) or isinstance(new, str):
        return type(old) is type(new) and old == new
    if isinstance(old, int) and isinstance(new, int):
        return old == new
    if old is None or new is None:
        return old is new
    old, new = float(old), float(new)
    if math.isnan(old) or math.isnan(new):
        return math.isnan(old) and math.isnan(new)
    if math.isinf(old) or math.isinf(new):
        return old == new
    return abs(new - old) <= gold["atol"] + gold["rtol"] * abs(old)


def compare(golden: dict[str, dict], records: dict[str, dict]) -> list[str]:
    """One line per disagreement between golden records and a run's records (empty: they agree)."""
    lines = [f"{k}: recorded in the golden, missing from the run" for k in golden if k not in records]
    lines += [f"{k}: recorded by the run, not in the golden (rerun `make golden`)" for k in records if k not in golden]
    for k in golden.keys() & records.keys():
        gold, new = golden[k], records[k]["value"]
        if not _same(new, gold):
            lines.append(f"{k}: {new!r} != golden {gold['value']!r} (rtol {gold['rtol']:g}, atol {gold['atol']:g})")
    return sorted(lines)


def golden_path(chapter: str, out_dir: Path = GOLDEN) -> Path:
    return Path(out_dir) / f"{chapter}.json"


def load_golden(chapter: str, out_dir: Path = GOLDEN) -> dict:
    """The golden of a chapter: ``{chapter, source, code_sha256, parameters, pinned_env, records}``."""
    return json.loads(golden_path(chapter, out_dir).read_text())


def make_golden(chapter: str, out_dir: Path = GOLDEN) -> Path:
    """Execute ``chapter`` (see :func:`execute`) and write its golden records; refuse a run that wrote to stderr."""
    with tempfile.TemporaryDirectory(prefix=f"rea-golden-{chapter}-") as tmp:
        run = execute(chapter, Path(tmp))
    if run.stderr:
        raise RuntimeError(f"chapter {chapter!r} wrote to stderr ({run.stderr[0]}); fix the chapter first")
    target = golden_path(chapter, out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    blob = {"chapter": chapter, "source": f"book/{CHAPTERS[chapter]}", "code_sha256": code_hash(chapter),
            "parameters": PARAMETERS, "pinned_env": pinned_env(), "records": run.records}
    tmp_target = target.with_suffix(".json.tmp")
    tmp_target.write_text(json.dumps(blob, indent=1, ensure_ascii=False) + "\n")
    tmp_target.replace(target)
    return target


def check_golden(chapter: str, out_dir: Path = GOLDEN) -> list[str]:
    """Execute ``chapter`` as ``tests/test_golden.py`` does and list what differs from its golden numbers.

    The golden's code hash is ignored: this checks that changed chapter code still computes the recorded numbers
    (each within its tolerance, :func:`compare`) before the golden is re-recorded. One line per differing, missing
    or new number and per output to stderr; empty: the chapter computes its golden numbers.
    """
    gold = load_golden(chapter, out_dir)
    with tempfile.TemporaryDirectory(prefix=f"rea-golden-check-{chapter}-") as tmp:
        run = execute(chapter, Path(tmp))
    return [f"wrote to stderr: {line}" for line in run.stderr] + compare(gold["records"], run.records)


def record_chapters(chapters: list[str]) -> int:
    """Re-record the goldens of ``chapters`` (:func:`make_golden`), one line per chapter; returns the exit status."""
    for chapter in chapters:
        t0 = time.perf_counter()
        target = make_golden(chapter)
        print(f"rea.book.golden: {target.relative_to(ROOT)} ({time.perf_counter() - t0:.0f} s)")
    return 0


def check_chapters(chapters: list[str]) -> int:
    """``--check``: :func:`check_golden` for each chapter, printing every mismatch and a one-line verdict per
    chapter; returns 1 if any chapter differs from its golden, else 0."""
    failed = []
    for chapter in chapters:
        t0 = time.perf_counter()
        if not golden_path(chapter).exists():
            print(f"rea.book.golden --check: {chapter}: FAIL, no golden {golden_path(chapter).relative_to(ROOT)}")
            failed.append(chapter)
            continue
        lines = check_golden(chapter)
        n = len(load_golden(chapter)["records"])
        for line in lines:
            print(f"  {chapter}: {line}")
        verdict = f"FAIL, {len(lines)} mismatches" if lines else "OK, the same numbers"
        print(f"rea.book.golden --check: {chapter}: {verdict} ({n} golden records, code hash ignored, "
              f"{time.perf_counter() - t0:.0f} s)")
        failed += [chapter] if lines else []
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rea.book.golden",
        description="Re-record the chapters' golden numbers (tests/golden/<chapter>.json), or with --check compare "
                    "a fresh run with them, ignoring the code hash.")
    parser.add_argument("chapters", nargs="*", metavar="CHAPTER", help="short names (default: every chapter)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing: print every number that differs from the golden; exit 1 on any")
    args = parser.parse_args(argv)
    chapters = args.chapters or toc_chapters()
    for chapter in chapters:
        if chapter not in CHAPTERS or not (BOOK / CHAPTERS[chapter]).exists():
            print(f"rea.book.golden: error: no written chapter {chapter!r}", file=sys.stderr)
            return 2
    return check_chapters(chapters) if args.check else record_chapters(chapters)


if __name__ == "__main__":
    sys.exit(main())
