"""``run_sweep``: every cell of a grid of prompts × observables × thresholds × seeds, on Ray, resumable.

    from rea import run_sweep
    table = run_sweep(["Once upon a time", "The sky is"], model="toy", observables=["repeats"],
                      thresholds=[3, 6], profile="ci", out="sweeps/demo")

The arguments are checked before anything starts (a one-line ``ValueError`` naming the bad one); then the cells
already finished under ``out`` are read back, the others run as jobs on a pool of Ray workers
(:mod:`rea.sweep.pool`), each finished job's cells are written as they arrive, and the ranked summary is written
(:mod:`rea.sweep.summary`) and returned. A tqdm bar counts cells.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from rea.arguments import check_positive_int
from rea.sweep.grid import check_observables, make_jobs
from rea.sweep.methods import budget, get_method
from rea.sweep.summary import read_cell, summarize, write_cell, write_spec, write_summary

SIDES = ("upper", "lower")


def _checked_out(out) -> Path:
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"out: {str(root)!r} is a file; name a folder for the sweep's results")
    if not root.parent.exists() and str(root.parent) not in ("", "."):
        raise ValueError(f"out: the folder {str(root.parent)!r} does not exist; create it or choose another out")
    return root


def _settings(model, method, profile, side, observables, overrides) -> dict:
    """Observable -> the settings every key of its jobs depends on (model, method, profile, side, budget)."""
    from rea.book.profiles import PROFILES

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if side not in SIDES:
        raise ValueError(f"side must be 'upper' (P(φ ≥ a)) or 'lower' (P(φ ≤ a)), got {side!r}")
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a model name, hub id or directory, got {model!r}")
    fn = get_method(method)
    name = method if isinstance(method, str) else f"callable:{getattr(fn, '__qualname__', type(fn).__name__)}"
    return {obs: {"model": model, "method": name, "profile": profile, "side": side,
                  "budget": budget(profile, model, obs, overrides)} for obs in observables}


def run_sweep(prompts, model: str = "smollm2-135m", observables=("repeats",), thresholds=(3.0,), seeds=(0,), *,
              method="tps", profile: str = "quick", side: str = "upper", out="sweep", budget: dict | None = None,
              workers: int | None = None, cpus_per_worker: int = 1, num_cpus: int | None = None,
              address: str | None = None, device: str = "auto", max_attempts: int = 2,
              progress: bool = True) -> pd.DataFrame:
    """P(φ ≥ a) (``side="lower"``: P(φ ≤ a)) with its interval per cell of prompts × observables × thresholds × seeds.

    Parameters
    ----------
    prompts : list of prompt strings (:func:`rea.sweep.read_prompts` reads a file)
    model : a :func:`rea.lm.load_model` name, hub id or directory (``"toy"``: the exact toy LM)
    observables, thresholds, seeds : the other axes of the grid (a single value or a list each)
    method : ``"tps"`` (TPS + MBAR, the book's pipeline), ``"direct"``, or a callable (:mod:`rea.sweep.methods`)
    profile : ``"ci"``, ``"quick"`` or ``"paper"``: the book's budgets (:func:`rea.sweep.methods.budget`)
    budget : overrides of the profile's knobs (``length, n_chains, n_steps, lambdas, n_direct, n_boot``)
    out : the sweep's folder; a re-run with the same settings reuses its finished cells and resumes its runs
    workers : how many Ray workers (default: one per GPU, else one per ``cpus_per_worker`` cores of the cluster)
    num_cpus : cores of a local Ray (default all); address : a Ray cluster (default ``$RAY_ADDRESS``, else local).
        A Ray already started in this process is used as it is.
    device : ``"auto"``, ``"cpu"`` or ``"cuda"`` for the workers; max_attempts : runs of a job whose worker died
    progress : show a tqdm bar over cells

    Returns
    -------
    The summary (:func:`rea.sweep.summary.summarize`): one row per cell, ranked within (observable, threshold),
    columns ``prompt, observable, threshold, seed, p, ci_low, ci_high, status, error`` then ``rank``, the method's
    columns, ``wall_s``, ``warnings``, ``method, model, profile, side``. ``attrs``: ``computed``, ``reused``,
    ``failed`` cell counts, ``workers`` (started at once; 0 when every cell was reused), ``wall_s``, ``out``. Also
    written to ``out/summary.csv`` and ``out/summary.parquet``.
    """
    t0 = time.perf_counter()
    observables = check_observables(observables)
    settings = _settings(model, method, profile, side, observables, budget)
    jobs = make_jobs(prompts, observables, thresholds, seeds, settings)
    root = _checked_out(out)
    for name, value, low in (("workers", workers, 1), ("cpus_per_worker", cpus_per_worker, 1),
                             ("num_cpus", num_cpus, 1), ("max_attempts", max_attempts, 1)):
        if value is not None:
            check_positive_int(name, value, minimum=low)
    if num_cpus is not None and address:
        raise ValueError("num_cpus: only for a local Ray; a cluster at address has the cores it has")
    if not isinstance(device, str) or not (device in ("auto", "cpu") or device.startswith("cuda")):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    root.mkdir(parents=True, exist_ok=True)
    cells = [c for job in jobs for c in job.cells]
    write_spec(root, {"prompts": list(dict.fromkeys(c.prompt for c in cells)), "observables": observables,
                      "thresholds": sorted({c.threshold for c in cells}), "seeds": sorted({c.seed for c in cells}),
                      "settings": settings})
    rows = {c.key: r for c in cells if (r := read_cell(root, c)) is not None}
    reused = len(rows)
    todo = [job for job in jobs if any(c.key not in rows for c in job.cells)]
    n_workers = _compute(todo, rows, root, model=model, device=device, workers=workers, cpus_per_worker=cpus_per_worker,
             num_cpus=num_cpus, address=address, max_attempts=max_attempts, method=method, side=side,
             progress=progress, total=len(cells))
    common = {"method": settings[observables[0]]["method"], "model": model, "profile": profile, "side": side}
    table = summarize([rows[c.key] for c in cells], common)
    write_summary(table, root)
    table.attrs.update(computed=len(cells) - reused, reused=reused, failed=int((table["status"] != "ok").sum()),
                       workers=n_workers, wall_s=time.perf_counter() - t0, out=str(root))
    return table


def _compute(todo, rows: dict, root: Path, *, model, device, workers, cpus_per_worker, num_cpus, address,
             max_attempts, method, side, progress, total) -> int:
    """Run the jobs ``todo`` on Ray, writing each cell and filling ``rows`` (cell key -> row) as jobs finish;
    returns the number of workers started at once (0: nothing to compute)."""
    from tqdm.auto import tqdm

    from rea.storage import provenance
    from rea.sweep.pool import connect, plan_workers, run_jobs

    bar = tqdm(total=total, initial=len(rows), unit="cell", desc="sweep", disable=not progress)
    failed = 0

    def on_done(job, result):
        nonlocal failed
        prov = result["provenance"] or provenance(**job.settings, prompt=job.prompt, observable=job.observable,
                                                  seed=job.seed, run_dir=f"runs/{job.key}")
        new = [c for c in job.cells if c.key not in rows]
        for cell, row in zip(job.cells, result["rows"]):
            write_cell(root, cell, row, prov)
            rows[cell.key] = row
            failed += row["status"] != "ok"
        bar.update(len(new))
        bar.set_postfix(failed=failed)

    if not todo:
        bar.close()
        return 0
    try:
        started = connect(address, num_cpus)
        try:
            n, options, threads = plan_workers(device, workers, cpus_per_worker)
            n = min(n, len(todo))
            run_jobs(todo, (method, side, str(root)), on_done, model=model, device=device, n_workers=n,
                          options=options, threads=threads, max_attempts=max_attempts)
        finally:
            if started:
                import ray

                ray.shutdown()
    finally:
        bar.close()
    return n
