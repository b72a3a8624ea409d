"""One worker of a sweep: it loads the model once and answers jobs, one after another (:class:`Worker`).

The same class runs as a Ray actor (:mod:`rea.sweep.pool`: one per GPU, or one per ``cpus_per_worker`` cores) or
in the calling process (tests). :func:`run_job` never raises for a failure of the job itself -- a prompt the
tokenizer rejects, a model that does not load, an error inside the method -- but returns one row per cell with
``status="error"`` and a one-line ``error``; only the death of the worker process escapes, and the pool handles it.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from rea.sweep.methods import get_method

REQUIRED = ("threshold", "p", "ci_low", "ci_high")
"""Columns every method's table must have."""


def one_line(err: BaseException, limit: int = 300) -> str:
    """``"TypeName: first line of the message"``, at most ``limit`` characters."""
    text = str(err).strip().splitlines()
    line = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def error_rows(job, message: str) -> list[dict]:
    """One ``status="error"`` row per cell of ``job`` (p and its interval NaN)."""
    return [{"prompt": c.prompt, "observable": c.observable, "threshold": c.threshold, "seed": c.seed,
             "p": np.nan, "ci_low": np.nan, "ci_high": np.nan, "status": "error", "error": message, "key": c.key}
            for c in job.cells]


def _cell_rows(job, table: pd.DataFrame) -> list[dict]:
    """The method's table -> one ``status="ok"`` row per cell (its extra columns kept)."""
    if not isinstance(table, pd.DataFrame) or not set(REQUIRED) <= set(table.columns):
        raise ValueError(f"the method must return a DataFrame with columns {', '.join(REQUIRED)}")
    by_threshold = {float(r["threshold"]): r for r in table.to_dict("records")}
    rows = []
    for c in job.cells:
        if c.threshold not in by_threshold:
            raise ValueError(f"the method returned no row for threshold {c.threshold:g}")
        extra = {k: v for k, v in by_threshold[c.threshold].items() if k != "threshold"}
        rows.append({"prompt": c.prompt, "observable": c.observable, "threshold": c.threshold, "seed": c.seed,
                     **extra, "status": "ok", "error": "", "key": c.key})
    return rows


def _warning_lines(caught, limit: int = 160) -> str:
    """Distinct first lines of the warnings a job raised (each cut to ``limit`` characters), joined by `` | ``."""
    lines = dict.fromkeys(f"{w.category.__name__}: {str(w.message).strip().splitlines()[0]}" for w in caught
                          if str(w.message).strip())
    return " | ".join(line if len(line) <= limit else line[: limit - 1] + "…" for line in lines)


def run_job(get_lm, job, method, side: str, root) -> dict:
    """Answer ``job`` with ``method`` -> ``{"rows": [one dict per cell], "provenance": dict}``.

    ``get_lm()`` returns the model (loading it on first use); ``root`` is the sweep's output folder (the method
    works in ``root/runs/<job.key>/``). Every row has the cell's coordinates, ``p, ci_low, ci_high, status, error``,
    the method's extra columns, ``wall_s`` (the job's seconds) and ``warnings``.
    """
    from rea.storage import provenance

    t0 = time.perf_counter()
    device = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            lm = get_lm()
            device = str(getattr(lm, "device", "cpu"))
            run_dir = Path(root) / "runs" / job.key
            run_dir.mkdir(parents=True, exist_ok=True)
            table = get_method(method)(lm, job, dict(job.settings["budget"]), run_dir, side=side)
            rows = _cell_rows(job, table)
        except Exception as err:  # any failure of this job is reported in its rows; the sweep goes on
            rows = error_rows(job, one_line(err))
    wall = time.perf_counter() - t0
    note = _warning_lines(caught)
    for row in rows:
        row.update(wall_s=wall, warnings=note, device=device)
    prov = provenance(**job.settings, prompt=job.prompt, observable=job.observable, seed=job.seed,
                      run_dir=f"runs/{job.key}", device=device)
    return {"rows": rows, "provenance": prov}


class Worker:
    """Serves the jobs of one sweep and keeps its model loaded across them.

    Parameters: ``model`` (a :func:`rea.lm.load_model` name, hub id or directory), ``device`` (``"auto"``: the GPU
    Ray gave this worker, else the CPU), ``threads`` (torch threads; pinned with ``REA_THREADS`` so that the decode
    does not change its thread count under load; None leaves both as they are).
    """

    def __init__(self, model: str, device: str = "auto", threads: int | None = None):
        if threads:
            os.environ["REA_THREADS"] = str(int(threads))
            import torch

            torch.set_num_threads(int(threads))
        self.model, self.device, self._lm = model, device, None

    def lm(self):
        """The model, loaded on first use (the first load of the embedded model on a machine converts it into the
        shared cache under a lock, :func:`rea.lm.load_model`; the other workers then read it)."""
        if self._lm is None:
            from rea.lm import load_model

            self._lm = load_model(self.model, device=self.device)  # converts the embedded model once, under a lock
        return self._lm

    def run(self, job, method, side: str, root) -> dict:
        """:func:`run_job` with this worker's model."""
        return run_job(self.lm, job, method, side, root)

    def pid(self) -> int:
        """The worker's process id (a started actor answers it)."""
        return os.getpid()
