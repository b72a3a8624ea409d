"""Golden regression checks of the chapters: ``python -m rea.book.golden [CHAPTER ...]`` (``make golden``) records them,
``python -m rea.book.golden --check [CHAPTER ...]`` compares a fresh run with them, ignoring the code hash;
``pytest --nbval-lax tests/golden/`` (part of ``make test``) re-executes the golden notebooks with nbval.

A chapter states its results through :func:`rea.book.record` (glued for the prose and logged). The golden of a
chapter is two files under ``tests/golden/``:

* ``<chapter>.json`` holds every recorded number of one run at the ``"ci"`` profile (tiny budgets, seed 0), each with
  the tolerance of its precision class (:data:`rea.book.TOLERANCES`): exact toy-model answers (``tol="exact"``) and
  all integers and strings must agree to the last digits; numbers computed through a float32 model must agree to
  ``|x − x_golden| ≤ atol + rtol·|x_golden|`` (``rtol = 1e-4``: the same completions scored on other kernels differ
  by ≤ 1e-5 relative); volatile ones (timings) are only required to be present.
* ``<chapter>.ipynb`` is the executed golden notebook (:func:`golden_notebook`): the chapter's text notebook
  parametrized at the ci profile by papermill (``prepare_only``: its ``injected-parameters`` cell), with a hidden
  first cell (:func:`notebook_setup`: the kernel's environment is the pinned one, a fresh records file and shared-run
  folder, a scratch working directory) and a hidden last cell (:func:`check_run`) that compares the run's recorded
  numbers with ``<chapter>.json`` (:func:`compare`, tolerance per record), raises an AssertionError listing every
  mismatch, and prints an exact summary (counts per precision class, every integer, boolean and string) that nbval
  compares with the stored output (the cell is tagged ``nbval-check-output``, as are chapter cells whose printed
  output is exact). Image and HTML outputs and execution metadata are stripped (:func:`strip_notebook`).

``tests/golden/conftest.py`` runs each golden notebook under nbval in the environment of :func:`kernel_env` (set
before its kernel starts, fresh temp paths per notebook), fails any cell that writes to stderr, and
``tests/test_golden.py`` fails when a golden is stale (the chapter's code cells or nbval tags changed since it was
recorded: rerun ``make golden``).

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
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rea.book.chapters import BOOK, CHAPTERS, GOLDEN, ROOT, toc_chapters
from rea.book.runner import check_value, convert, environment, parameters_cell, parse_parameters, read_chapter

PARAMETERS = {"profile": "ci", "seed": "0", "device": "cpu"}
"""The golden run's parameters, as given on the command line (``rea run -p NAME VALUE``)."""

OUT_DIR = "results"
"""``out_dir`` of a golden run, for chapters that have one: relative to the scratch working directory, so the stored
notebook names no machine's path and the chapters' saving code runs too."""

KERNEL = "python3"
SETUP_TAG, CHECK_TAG = "golden-setup", "golden-check"
"""Tags of the two cells :func:`golden_notebook` injects (besides papermill's ``injected-parameters``)."""
NBVAL_CHECK = "nbval-check-output"
"""nbval's cell tag: compare the cell's fresh outputs with the stored ones exactly (``--nbval-lax`` checks no other)."""
NBVAL_TAGS = frozenset({NBVAL_CHECK, "nbval-ignore-output", "nbval-skip", "nbval-raises-exception",
                        "raises-exception"})


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
    ``REA_GOLDEN_ENV=unpinned OMP_NUM_THREADS=2 ATEN_CPU_CAPABILITY=default pytest --nbval-lax tests/golden`` checks
    that the goldens hold on other kernels and thread counts too.
    """
    if os.environ.get("REA_GOLDEN_ENV", "pinned") == "unpinned":
        return {}
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if _has_avx2():
        env.update({"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"})
    return env


def kernel_env(workdir: Path, golden_dir: Path = GOLDEN) -> dict[str, str]:
    """Environment variables of the kernel of one golden run, fresh paths under ``workdir``.

    The pins (:func:`pinned_env`) act only when the kernel starts with them, so they must be in the environment
    that starts it (``tests/golden/conftest.py`` sets them around nbval's kernel start, :func:`execute` around
    papermill's). ``REA_RECORDS`` collects the run's recorded numbers, ``REA_BOOK_RUNS`` its shared runs,
    ``REA_GOLDEN_WORKDIR`` is the working directory of the run (results, scratch) and ``REA_GOLDEN_DIR`` holds the
    ``<chapter>.json`` that :func:`check_run` compares with. A golden run never downloads (``HF_HUB_OFFLINE``).
    """
    workdir = Path(workdir)
    return {**pinned_env(), "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1",
            "REA_RECORDS": str(workdir / "records.jsonl"), "REA_BOOK_RUNS": str(workdir / "book-runs"),
            "REA_GOLDEN_WORKDIR": str(workdir / "cwd"), "REA_GOLDEN_DIR": str(Path(golden_dir).resolve())}


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


# --------------------------------------------------------------------------------------------- the golden notebook


def prepare(chapter: str):
    """The chapter's text notebook parametrized at :data:`PARAMETERS` by papermill (``prepare_only``), unexecuted.

    Parameters are typed and checked as ``rea run`` does; ``out_dir``, where a chapter has one, is :data:`OUT_DIR`.
    papermill's bookkeeping metadata (paths, timings) is dropped, its ``injected-parameters`` cell kept.
    """
    import papermill as pm

    nb = read_chapter(chapter)
    params = parse_parameters(parameters_cell(nb).source)
    values = {name: check_value(params[name], convert(params[name], text)) for name, text in PARAMETERS.items()}
    if "out_dir" in params:
        values["out_dir"] = OUT_DIR
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    with tempfile.TemporaryDirectory(prefix="rea-golden-prepare-") as tmp:
        nb = pm.execute_notebook(nb, str(Path(tmp) / f"{chapter}.ipynb"), parameters=values, prepare_only=True,
                                 kernel_name=KERNEL, language="python", progress_bar=False, report_mode=False)
    return strip_notebook(nb)


def _hidden_cell(source: str, tag: str):
    import nbformat

    return nbformat.v4.new_code_cell(source, metadata={"tags": [tag, "remove-cell", NBVAL_CHECK],
                                                       "jupyter": {"source_hidden": True}})


def golden_notebook(chapter: str):
    """:func:`prepare`'s notebook with the hidden set-up cell first and the hidden golden check last."""
    nb = prepare(chapter)
    head = "# golden run (injected by rea.book.golden): pinned environment, fresh records, scratch folder\n"
    nb.cells.insert(0, _hidden_cell(f'{head}from rea.book import golden as _golden\n\n'
                                    f'_golden.notebook_setup({chapter!r})', SETUP_TAG))
    check = (f"# golden check (injected by rea.book.golden): this run's recorded numbers against {chapter}.json\n"
             f"from rea.book import golden as _golden\n\n_golden.check_run({chapter!r})")
    nb.cells.append(_hidden_cell(check, CHECK_TAG))
    return nb


def injected(cell) -> bool:
    """Is ``cell`` one of the cells :func:`golden_notebook` adds to the prepared notebook?"""
    tags = cell.get("metadata", {}).get("tags", [])
    return SETUP_TAG in tags or CHECK_TAG in tags


def code_cells(nb) -> list[tuple[str, tuple[str, ...]]]:
    """``(source, nbval tags)`` of every code cell of ``nb`` but the injected ones: what a golden notebook must share
    with a fresh :func:`prepare` of its chapter."""
    return [(c.source, tuple(sorted(set(c.metadata.get("tags", [])) & NBVAL_TAGS)))
            for c in nb.cells if c.cell_type == "code" and not injected(c)]


def strip_notebook(nb):
    """Keep a stored notebook small and free of machine details: text outputs only (streams and ``text/plain``;
    no images, HTML or glue payloads), no output or execution metadata, no papermill bookkeeping.

    ``execution_count`` stays: nbval compares the outputs of a cell only when its stored ``execution_count`` is set.
    """
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for key in ("papermill", "execution", "ExecuteTime", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "stream":
                outputs.append(out)
            elif kind in ("display_data", "execute_result") and "text/plain" in out.get("data", {}):
                out["data"] = {"text/plain": out["data"]["text/plain"]}
                out["metadata"] = {}
                outputs.append(out)
            elif kind == "error":
                outputs.append(out)
        cell.outputs = outputs
    return nb


def notebook_setup(chapter: str) -> None:
    """First cell of a golden notebook: refuse a kernel not started in the environment of :func:`kernel_env`
    (AssertionError naming each difference), then work in a fresh scratch folder (``REA_GOLDEN_WORKDIR``, holding
    the chapter's ``out_dir`` :data:`OUT_DIR`)."""
    problems = [f"{k}={os.environ.get(k)!r} (the golden pins {v!r})" for k, v in pinned_env().items()
                if os.environ.get(k) != v]
    problems += [f"{k} is not set" for k in ("REA_RECORDS", "REA_BOOK_RUNS", "REA_GOLDEN_WORKDIR")
                 if not os.environ.get(k)]
    records = Path(os.environ.get("REA_RECORDS") or os.devnull)
    if records.is_file() and records.stat().st_size:
        problems.append(f"REA_RECORDS={records} already holds records (not a fresh run)")
    if pinned_env():
        import torch

        if torch.get_num_threads() != 1:
            problems.append(f"torch runs {torch.get_num_threads()} threads, not 1")
        if pinned_env().get("ATEN_CPU_CAPABILITY") == "avx2" and torch.backends.cpu.get_cpu_capability() != "AVX2":
            problems.append(f"torch uses {torch.backends.cpu.get_cpu_capability()} kernels, not AVX2")
    if problems:
        raise AssertionError(f"golden {chapter}: this kernel did not start in a golden run's environment (run "
                             f"`pytest --nbval-lax tests/golden/{chapter}.ipynb`, whose conftest sets it): "
                             + "; ".join(problems))
    work = Path(os.environ["REA_GOLDEN_WORKDIR"])
    (work / OUT_DIR).mkdir(parents=True, exist_ok=True)  # the chapter's out_dir exists, as under `rea run`
    os.chdir(work)


def _class_name(entry: dict) -> str:
    from rea.book.records import TOLERANCES

    for name, (rtol, atol) in TOLERANCES.items():
        if entry["rtol"] == rtol and entry["atol"] == atol:
            return {"exact": "exact toy answers within rtol 1e-9", "float": "float32-model numbers within rtol 1e-4",
                    "volatile": "volatile (timings, round-off sizes: present, not compared)"}.get(name, name)
    return f"numbers within rtol {entry['rtol']:g}, atol {entry['atol']:g}"


def summary(chapter: str, golden: dict[str, dict]) -> str:
    """What :func:`check_run` prints when a run agrees with ``golden``: the number of records per precision class,
    then every non-volatile integer, boolean, string and None, one ``name = repr(value)`` a line. It depends on the
    golden only, so nbval can compare it exactly with the stored output; floats are never printed (their digits are
    compared within tolerance by :func:`compare`)."""
    exact, counts = [], {}
    for name, entry in golden.items():
        value = entry["value"]
        volatile = isinstance(entry["rtol"], float) and math.isinf(entry["rtol"])
        if not volatile and (value is None or isinstance(value, (bool, int, str))):
            exact.append(f"  {name} = {value!r}")
            kind = "integers, booleans, strings: exactly"
        else:
            kind = _class_name(entry)
        counts[kind] = counts.get(kind, 0) + 1
    head = f"{chapter}.json: all {len(golden)} recorded numbers agree: " + "; ".join(
        f"{n} {kind}" for kind, n in sorted(counts.items()))
    return "\n".join([head, *exact])


def check_run(chapter: str) -> None:
    """Last cell of a golden notebook: compare this run's records (``REA_RECORDS``) with ``<chapter>.json`` in
    ``REA_GOLDEN_DIR`` (tolerance per record, :func:`compare`); raise an AssertionError listing every mismatch,
    else print :func:`summary`.

    While :func:`make_golden` records (``REA_GOLDEN_RECORDING=<chapter>``) the run is its own golden.
    """
    records = _read_records(Path(os.environ["REA_RECORDS"]))
    if os.environ.get("REA_GOLDEN_RECORDING") == chapter:
        gold, where = records, "this run (recording)"
    else:
        path = golden_path(chapter, Path(os.environ.get("REA_GOLDEN_DIR") or GOLDEN))
        gold, where = json.loads(path.read_text())["records"], path.name
    diff = compare(gold, records)
    if diff:
        raise AssertionError(f"{chapter}: {len(diff)} recorded numbers differ from {where}:\n" + "\n".join(diff))
    print(summary(chapter, gold))


# --------------------------------------------------------------------------------------------- running, comparing


def _stderr_lines(nb) -> list[str]:
    lines = []
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                lines.append(f"code cell {i}: {(out.get('text', '').strip().splitlines() or [''])[0][:200]}")
    return lines


def execute(chapter: str, workdir: Path) -> ChapterRun:
    """Execute :func:`golden_notebook` of ``chapter`` once (papermill, environment of :func:`kernel_env` under
    ``workdir``) as its own golden; the executed notebook is ``workdir/<chapter>.ipynb``."""
    import nbformat
    import papermill as pm

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**kernel_env(workdir), "REA_GOLDEN_RECORDING": chapter}
    Path(env["REA_RECORDS"]).unlink(missing_ok=True)
    target = workdir / f"{chapter}.ipynb"
    with environment(env):  # the kernel inherits this process's environment when it starts
        pm.execute_notebook(golden_notebook(chapter), str(target), kernel_name=KERNEL, language="python",
                            cwd=str(workdir), progress_bar=False, report_mode=False)
    nb = nbformat.read(target, as_version=4)
    return ChapterRun(target, _read_records(Path(env["REA_RECORDS"])), _stderr_lines(nb))


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


def notebook_path(chapter: str, out_dir: Path = GOLDEN) -> Path:
    """The executed golden notebook of a chapter, ``tests/golden/<chapter>.ipynb``."""
    return Path(out_dir) / f"{chapter}.ipynb"


def load_golden(chapter: str, out_dir: Path = GOLDEN) -> dict:
    """The golden of a chapter: ``{chapter, source, code_sha256, parameters, pinned_env, records}``."""
    return json.loads(golden_path(chapter, out_dir).read_text())


def _write(target: Path, text: str) -> None:
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(target)


def make_golden(chapter: str, out_dir: Path = GOLDEN) -> Path:
    """Execute ``chapter`` once (see :func:`execute`) and write its golden records and its golden notebook (stripped,
    :func:`strip_notebook`); refuse a run that wrote to stderr."""
    import nbformat

    with tempfile.TemporaryDirectory(prefix=f"rea-golden-{chapter}-") as tmp:
        run = execute(chapter, Path(tmp))
        nb = strip_notebook(nbformat.read(run.notebook, as_version=4))
    if run.stderr:
        raise RuntimeError(f"chapter {chapter!r} wrote to stderr ({run.stderr[0]}); fix the chapter first")
    target = golden_path(chapter, out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    blob = {"chapter": chapter, "source": f"book/{CHAPTERS[chapter]}", "code_sha256": code_hash(chapter),
            "parameters": PARAMETERS, "pinned_env": pinned_env(), "records": run.records}
    _write(target, json.dumps(blob, indent=1, ensure_ascii=False) + "\n")
    _write(notebook_path(chapter, out_dir), nbformat.writes(nb) + "\n")
    return target


def check_golden(chapter: str, out_dir: Path = GOLDEN) -> list[str]:
    """Execute ``chapter`` once and list what differs from its golden numbers.

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
        size = notebook_path(chapter).stat().st_size
        print(f"rea.book.golden: {target.relative_to(ROOT)} and {chapter}.ipynb ({size / 1024:.0f} KiB) "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
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
