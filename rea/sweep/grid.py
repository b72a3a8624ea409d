r"""The grid of a sweep: prompts × observables × thresholds × seeds, and the jobs that compute it.

A *cell* is one point of the grid, (prompt, observable, threshold a, seed); its answer is the tail probability
P(φ ≥ a) (``side="upper"``; ``"lower"``: P(φ ≤ a)) of completions of the prompt, with its interval. Cells that
share (prompt, observable, seed) share one estimation run -- one TPS run answers every threshold through MBAR --
so the unit of work is a :class:`Job`: one run, the thresholds of its cells. Each cell and each run has a key, a
hash of everything its result depends on (model, method, profile, budget, side and the cell's coordinates), which
names its files under the sweep's output folder (:mod:`rea.sweep.files`): a re-run with the same settings finds
them, a run with other settings cannot mistake them for its own.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from rea.arguments import check_positive_int

PROMPT_COLUMNS = ("prompt", "text")
"""Columns :func:`read_prompts` looks for in a CSV/Parquet file when no column is named."""


def read_prompts(path, column: str | None = None) -> list[str]:
    """The prompts of a file: a text file (one prompt per line, blank lines skipped) or a ``.csv``/``.parquet``
    table (the column ``column``; default the first of :data:`PROMPT_COLUMNS` present).

    Returns the prompts in file order (a repeated prompt is kept once). A missing or empty file, a missing column
    or an empty prompt raises a one-line ``ValueError`` naming ``prompts`` or ``column``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompts: no such file {str(path)!r} (a .txt file, one prompt per line, or .csv/.parquet)")
    if path.suffix.lower() in (".csv", ".parquet"):
        prompts = _table_column(path, column)
    else:
        if column is not None:
            raise ValueError(f"column: only for .csv/.parquet prompt files, not {path.name!r}")
        prompts = [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n")]
        prompts = [p for p in prompts if p.strip()]
    return check_prompts(prompts, f"prompts ({path.name})")


def _table_column(path: Path, column: str | None) -> list:
    import pandas as pd

    df = pd.read_csv(path, keep_default_na=False) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    if column is None:
        column = next((c for c in PROMPT_COLUMNS if c in df.columns), None)
        if column is None:
            raise ValueError(f"column: {path.name} has no column {' or '.join(PROMPT_COLUMNS)}; name one of "
                             f"{list(map(str, df.columns))}")
    elif column not in df.columns:
        raise ValueError(f"column: {path.name} has no column {column!r}; it has {list(map(str, df.columns))}")
    return df[column].tolist()


def check_prompts(prompts, name: str = "prompts") -> list[str]:
    """``prompts`` as a list of distinct non-empty strings (first occurrence kept); else a one-line ValueError."""
    if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__iter__"):
        raise ValueError(f"{name} must be a list of prompt strings (read a file with read_prompts), got {prompts!r}")
    out = list(dict.fromkeys(prompts))
    bad = [p for p in out if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ValueError(f"{name} must hold non-empty strings, got {bad[0]!r}")
    if not out:
        raise ValueError(f"{name} is empty; give at least one prompt")
    return out


def check_thresholds(thresholds) -> list[float]:
    """``thresholds`` as a list of distinct finite floats (input order); else a one-line ValueError."""
    values = [thresholds] if isinstance(thresholds, (int, float)) else thresholds
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise ValueError(f"threshold must be numbers, got {thresholds!r}") from err
    if not out or not all(math.isfinite(v) for v in out):
        raise ValueError(f"threshold must be one or more finite numbers, got {thresholds!r}")
    return list(dict.fromkeys(out))


def check_seeds(seeds) -> list[int]:
    """``seeds`` as a list of distinct non-negative ints; else a one-line ValueError naming ``seed``."""
    values = [seeds] if isinstance(seeds, int) else list(seeds)
    if not values:
        raise ValueError("seed: give at least one seed")
    return list(dict.fromkeys(check_positive_int("seed", s, minimum=0) for s in values))


def check_observables(observables) -> list[str]:
    """Observable names (``ari``, ``logprob``, ``repeats``), canonical (``log-prob`` -> ``logprob``), distinct; else
    a one-line ValueError."""
    from rea.observables import get_observable

    values = [observables] if isinstance(observables, str) else list(observables)
    if not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"observable must be one or more of ari, logprob, repeats, got {observables!r}")
    for v in values:
        get_observable(v)  # one-line ValueError for an unknown name
    names = (v.lower().replace("-", "_") for v in values)
    return list(dict.fromkeys("logprob" if n == "log_prob" else n for n in names))


def digest(spec: dict) -> str:
    """A 16-hex-digit key of a JSON-friendly ``spec`` (sorted keys): equal specs, equal keys."""
    blob = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One point of the grid; ``key`` names its result file (``cells/<key>.parquet``)."""

    prompt: str
    observable: str
    threshold: float
    seed: int
    key: str


@dataclass(frozen=True)
class Job:
    """One estimation run: a prompt, an observable and a seed, with the cells (thresholds) it answers.

    ``settings`` is everything else the run depends on (model, method, profile, side, budget); ``key`` names its
    working folder (``runs/<key>/``: the TPS checkpoint and records).
    """

    prompt: str
    observable: str
    seed: int
    settings: dict
    key: str
    cells: tuple[Cell, ...] = field(default=())

    @property
    def thresholds(self) -> list[float]:
        return [c.threshold for c in self.cells]


def make_jobs(prompts, observables, thresholds, seeds, settings: dict) -> list[Job]:
    """The jobs of a grid, in order prompt, observable, seed (each with all thresholds), after checking every axis.

    ``settings`` maps each observable to the JSON-friendly settings of its jobs (model, method, profile, side,
    budget); they enter every key, so changing any of them starts new cells.
    """
    prompts, observables = check_prompts(prompts), check_observables(observables)
    thresholds, seeds = check_thresholds(thresholds), check_seeds(seeds)
    jobs = []
    for prompt in prompts:
        for obs in observables:
            for seed in seeds:
                base = {**settings[obs], "prompt": prompt, "observable": obs, "seed": seed}
                cells = tuple(Cell(prompt, obs, a, seed, digest({**base, "threshold": a})) for a in thresholds)
                jobs.append(Job(prompt, obs, seed, dict(settings[obs]), digest(base), cells))
    return jobs
