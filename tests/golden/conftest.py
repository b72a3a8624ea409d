"""nbval runs of the golden notebooks (``pytest --nbval-lax tests/golden/``; ``make test`` includes them).

Each ``tests/golden/<chapter>.ipynb`` is executed once by nbval in its own kernel. This file

* starts that kernel in the golden environment (:func:`rea.book.golden.kernel_env`: the pins of
  :func:`~rea.book.golden.pinned_env`, fresh ``REA_RECORDS`` and ``REA_BOOK_RUNS`` in a new temp folder per notebook,
  the notebook's folder as ``REA_GOLDEN_DIR``): nbval starts the kernel while setting up a notebook's first cell,
  and the kernel inherits this process's environment then, so the variables are set around that set-up only (the
  unit tests of the same pytest process never see them) and the kernel is this interpreter
  (``--nbval-current-env``, unless ``--nbval-kernel-name`` is given);
* fails every cell whose fresh outputs hold a stderr stream (nbval itself only fails on errors and, for cells tagged
  ``nbval-check-output``, on different outputs), naming the cell;
* marks the cells ``slow``, so ``-m "not slow"`` leaves the notebooks out.

The hidden last cell of each notebook compares the recorded numbers with ``<chapter>.json`` within their tolerances
(:func:`rea.book.golden.check_run`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

_WORKDIRS: list[str] = []


def _is_nbval_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell" and hasattr(item, "test_outputs")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _is_nbval_cell(item):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """Set the golden environment while nbval starts the notebook's kernel (the set-up of its first cell)."""
    notebook = item.parent if _is_nbval_cell(item) else None
    if notebook is None or getattr(notebook, "kernel", None) is not None:
        yield
        return
    from rea.book.golden import kernel_env
    from rea.book.runner import environment

    option = item.config.option
    if not getattr(option, "nbval_kernel_name", None):
        option.nbval_current_env = True  # the kernel runs this interpreter, whatever kernelspec 'python3' names
    workdir = tempfile.mkdtemp(prefix=f"rea-nbval-{Path(str(notebook.fspath)).stem}-")
    _WORKDIRS.append(workdir)
    with environment(kernel_env(Path(workdir), Path(str(notebook.fspath)).parent)):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Fail a cell that wrote to stderr (its fresh outputs, which nbval keeps as ``item.test_outputs``)."""
    outcome = yield
    if call.when != "call" or not _is_nbval_cell(item):
        return
    report = outcome.get_result()
    stderr = [out.get("text", "") for out in item.test_outputs or []
              if out.get("output_type") == "stream" and out.get("name") == "stderr"]
    if stderr and not report.failed:
        text = "".join(stderr)
        report.outcome = "failed"
        report.longrepr = (f"{item.name} of {Path(str(item.fspath)).name} wrote to stderr "
                           f"({len(text.splitlines())} lines):\n{text[:2000]}\n\nInput:\n{item.cell.source}")
    elif stderr:
        report.sections.append(("stderr of the cell", "".join(stderr)[:2000]))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Remove the notebooks' temp folders when every test passed; otherwise keep them for a look, and say where."""
    if exitstatus == 0:
        for workdir in _WORKDIRS:
            shutil.rmtree(workdir, ignore_errors=True)
    elif _WORKDIRS:
        terminalreporter.write_line("golden runs kept (records.jsonl, book-runs/, cwd/): " + " ".join(_WORKDIRS))
