"""Execute the book's chapters into jupyter-book's cache, several at once: ``python -m rea.book.execute [--jobs N]``.

``jupyter-book build`` with ``execute_notebooks: cache`` executes the chapters one after another. On a CPU that is
slower than it need be: a decode step of a small batch does not keep two cores busy (it ends every matrix product at
a thread barrier), while two chapters with one thread each do (:mod:`rea.lm.threads` drops a process to one thread
when another keeps a core busy; measured there: 8 rows, 68 ms per step alone with two threads, 92 ms with one
thread beside another process, so two chapters side by side run 2 × 68 / 92 ≈ 1.5× the steps per second).

``make book`` therefore runs this module first. It reads every chapter of ``_toc.yml`` the way jupyter-book does
(the ``myst_nb_md`` reader of jupyter-cache), skips those the cache already holds (same code cells, same kernel),
executes the others ``jobs`` at a time in the chapter's folder (jupyter-book's ``run_in_temp: false``), and stores
each executed notebook in ``_build/.jupyter_cache`` with its execution time, exactly as jupyter-book's cache mode
would. The build then finds every chapter cached and only renders. Chapters start longest first
(:data:`EXPECTED_SECONDS`), so the long ones do not end up running alone at the end; chapters that share TPS runs
wait on the run's file lock (:mod:`rea.book.runs`) rather than compute it twice. Before the chapters start, the
embedded model is converted into ``$REA_CACHE`` if it is not there yet (:func:`rea.lm.embedded_model_dir`), so that
its progress bar goes to the terminal and not into a chapter's output.

The introduction sums up every chapter's findings (:mod:`rea.book.summary`), read from the cached chapters, so it
runs last (:data:`SUMMARY_PAGES`), and runs again whenever a chapter was executed: its own code may be unchanged
while what it reads has changed, which jupyter-cache (keyed by code) would not notice.

A chapter that fails is reported with the end of its traceback and the exit status is 1; the build would fail on it
too. Interrupting keeps every chapter already cached; the next run executes only the rest.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from rea.book.chapters import CHAPTERS, ROOT, toc_files

EXPECTED_SECONDS: dict[str, float] = {"tps": 299, "single-token": 157, "sweep": 102, "deeper": 72, "theory": 54,
                                      "sampling": 49, "tilting": 43, "mbar": 17, "errors": 15}
"""Quick-profile execution time of each chapter in seconds (a cold ``make book`` on 2 CPU cores), used only to start
the longest chapters first; a chapter not listed counts as 0."""

SUMMARY_PAGES = ("intro.md",)
"""Pages that read the other chapters' executed notebooks: executed after them, and again whenever one was."""

READER = {"type": "plugin", "name": "myst_nb_md"}
"""jupyter-cache's reader of MyST notebooks: the one myst-nb uses for a ``.md`` chapter."""


def read_notebook(path: Path):
    """A chapter as jupyter-book reads it (myst-nb's MyST reader), so that its cache key matches the build's."""
    from myst_nb.core.read import myst_nb_reader_plugin

    return myst_nb_reader_plugin(str(path))


def pending(cache_dir: Path, paths: list[Path]) -> list[Path]:
    """The chapters of ``paths`` that the jupyter-cache at ``cache_dir`` does not hold yet."""
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_dir))
    out = []
    for path in paths:
        try:
            cache.match_cache_notebook(read_notebook(path))
        except KeyError:
            out.append(path)
    return out


def execute_one(path: str, timeout: int) -> tuple[str, object, float, str | None]:
    """Execute one chapter in its folder: (path, executed notebook, seconds, traceback or None)."""
    from jupyter_cache.executors.utils import single_nb_execution

    nb = read_notebook(Path(path))
    result = single_nb_execution(nb, cwd=str(Path(path).parent), timeout=timeout, allow_errors=False)
    return path, nb, result.time, result.exc_string if result.err is not None else None


def execute(paths: list[Path], cache_dir: Path, jobs: int = 2, timeout: int = 1800, progress: bool = True) -> list[str]:
    """Execute the chapters of ``paths`` that ``cache_dir`` lacks, ``jobs`` at a time, and cache them.

    Returns one line per failed chapter (empty: all cached). ``jobs`` must be ≥ 1.
    """
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from tqdm.auto import tqdm

    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer ≥ 1, got {jobs!r}")
    todo = sorted(pending(cache_dir, paths), key=lambda p: -EXPECTED_SECONDS.get(_short_name(p), 0.0))
    cache = get_cache(str(cache_dir))
    failed = []
    bar = tqdm(total=len(todo), desc="executing chapters", unit="chapter", disable=not progress or not todo)
    with ProcessPoolExecutor(max_workers=min(jobs, max(len(todo), 1))) as pool:
        futures = [pool.submit(execute_one, str(p), timeout) for p in todo]
        for future in as_completed(futures):
            path, nb, seconds, error = future.result()
            bar.update(1)
            if error is not None:
                failed.append(f"{Path(path).name}: failed after {seconds:.0f} s\n{error[-3000:]}")
                continue
            record = cache.add_nb_to_project(path, read_data=READER)
            cache.cache_notebook_bundle(CacheBundleIn(nb, record.uri, data={"execution_seconds": seconds}),
                                        check_validity=False, overwrite=True)
            bar.set_postfix_str(f"{Path(path).name} {seconds:.0f} s")
    bar.close()
    return failed


def execute_book(paths: list[Path], cache_dir: Path, jobs: int = 2, summary_pages=SUMMARY_PAGES,
                 progress: bool = True) -> list[str]:
    """:func:`execute` the pages of ``paths``: the chapters first, then the pages named in ``summary_pages``, which
    are executed again (:func:`forget`) whenever a chapter was. Returns one line per failed page."""
    chapters = [p for p in paths if Path(p).name not in summary_pages]
    summaries = [p for p in paths if Path(p).name in summary_pages]
    executed = pending(cache_dir, chapters)
    failed = execute(chapters, cache_dir, jobs=jobs, progress=progress)
    if executed:
        forget(cache_dir, summaries)
    return failed + execute(summaries, cache_dir, jobs=1, progress=progress)


def forget(cache_dir: Path, paths: list[Path]) -> None:
    """Drop the cached executions of ``paths`` (if any), so that the next :func:`execute` runs them again."""
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_dir))
    for path in paths:
        try:
            cache.remove_cache(cache.match_cache_notebook(read_notebook(path)).pk)
        except KeyError:
            pass


def notebook_pages(root: Path = ROOT) -> list[Path]:
    """Every page of ``_toc.yml`` (its root and chapters) that jupyter-book executes: MyST notebooks under book/."""
    import yaml
    from myst_nb.core.read import is_myst_markdown_notebook

    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text())
    pages = [Path(root) / (toc["root"] + ".md")] + [Path(root) / "book" / f for f in toc_files(root)]
    return [p for p in pages if p.exists() and is_myst_markdown_notebook(p.read_text())]


def _short_name(path: Path) -> str:
    by_file = {file: name for name, file in CHAPTERS.items()}
    return by_file.get(Path(path).name, Path(path).stem)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rea.book.execute", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("REA_BOOK_JOBS", min(2, os.cpu_count() or 1))),
                        help="chapters executed at once (default: $REA_BOOK_JOBS, else min(2, CPU cores))")
    parser.add_argument("--cache", type=Path, default=ROOT / "_build" / ".jupyter_cache", help="jupyter-cache folder")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be ≥ 1, got {args.jobs}")
    t0 = time.perf_counter()
    paths = notebook_pages(ROOT)
    if pending(args.cache, paths):  # convert the embedded model here, with its progress bar in the terminal, not in
        from rea.lm import embedded_model_dir  # a chapter's output (stderr there fails the -W build)

        embedded_model_dir()
    failed = execute_book(paths, args.cache, jobs=args.jobs)
    for line in failed:
        print(line, file=sys.stderr)
    print(f"rea.book.execute: {len(paths) - len(failed)} of {len(paths)} chapters cached "
          f"({time.perf_counter() - t0:.0f} s, {args.jobs} at a time)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
