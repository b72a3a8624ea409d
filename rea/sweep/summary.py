"""A sweep's files and its summary table.

Output folder of a sweep::

    cells/<cell key>.parquet   one row per cell (its estimate, status and error), provenance in the metadata
    runs/<job key>/            a job's working files (``tps/``: the TPS checkpoint, records and final states)
    sweep.json                 the grid and settings of the latest call
    summary.csv, summary.parquet   every cell of the latest call, ranked (:func:`summarize`)

Every file is written atomically (:mod:`rea.storage`), so an interrupted sweep leaves finished cells whole; a re-run
reads them (:func:`read_cell`) instead of computing them again. Cells that ended in an error are computed again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("prompt", "observable", "threshold", "seed", "p", "ci_low", "ci_high", "status", "error")
"""The summary's leading columns; further columns follow (``rank``, ``method``, ``model``, ``log10_p``, ...)."""


def cell_path(root, cell) -> Path:
    """Where the result of ``cell`` lives: ``root/cells/<key>.parquet``."""
    return Path(root) / "cells" / f"{cell.key}.parquet"


def write_cell(root, cell, row: dict, provenance: dict) -> Path:
    """Write one cell's row (a one-row Parquet table with ``provenance``), atomically."""
    from rea.storage import save_table

    return save_table(pd.DataFrame([row]), cell_path(root, cell), provenance=provenance)


def read_cell(root, cell) -> dict | None:
    """The stored row of a finished cell (``status == "ok"``), or None if it has none or it ended in an error."""
    from rea.storage import load_table

    path = cell_path(root, cell)
    if not path.exists():
        return None
    try:
        df, _ = load_table(path)
    except (OSError, ValueError):  # unreadable: compute it again
        return None
    if len(df) != 1 or df["status"].iloc[0] != "ok":
        return None
    return df.iloc[0].to_dict()


def write_spec(root, spec: dict) -> Path:
    """Write the sweep's settings and grid to ``root/sweep.json`` atomically."""
    from rea.storage import atomic_path, to_jsonable

    path = Path(root) / "sweep.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(spec), indent=1, ensure_ascii=False) + "\n")
    return path


def summarize(rows: list[dict], settings: dict | None = None) -> pd.DataFrame:
    """Rank the cells: one row per cell, the columns :data:`COLUMNS` first.

    Within each (observable, threshold), cells with ``status == "ok"`` are ranked by P̂ from the largest (rank 1:
    the prompt that makes the event least rare), ties sharing the smaller rank; failed cells follow, rank NaN. Rows
    are sorted by observable, threshold, rank. ``settings`` (method, model, profile, side) become columns.
    """
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = np.nan if col in ("p", "ci_low", "ci_high") else ""
    for key, value in (settings or {}).items():
        df[key] = value
    df["error"] = df["error"].fillna("").astype(str)
    ok = df["status"] == "ok"
    df["rank"] = np.nan
    df.loc[ok, "rank"] = df[ok].groupby(["observable", "threshold"])["p"].rank(ascending=False, method="min")
    df = df.sort_values(["observable", "threshold", "rank", "prompt", "seed"], na_position="last", kind="stable")
    rest = [c for c in df.columns if c not in COLUMNS and c not in ("rank", "key")]
    return df[list(COLUMNS) + ["rank"] + rest + (["key"] if "key" in df.columns else [])].reset_index(drop=True)


def write_summary(df: pd.DataFrame, root) -> Path:
    """Write ``root/summary.csv`` and ``root/summary.parquet`` atomically; returns the CSV's path."""
    from rea.storage import atomic_path, save_table

    path = Path(root) / "summary.csv"
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    save_table(df, Path(root) / "summary.parquet")
    return path


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_summary(df: pd.DataFrame, width: int = 48) -> str:
    """The summary as a text table: rank, prompt (cut to ``width`` characters), observable, threshold, seed,
    P̂ [low, high], or the error of a failed cell (cut to 2·``width``)."""
    lines = []
    for r in df.itertuples():
        prompt = _cut(r.prompt, width)
        rank = "-" if pd.isna(r.rank) else f"{int(r.rank)}"
        est = (f"{r.p:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}]" if r.status == "ok" else
               f"error: {_cut(r.error, 2 * width)}")
        op = "≤" if getattr(r, "side", "upper") == "lower" else "≥"
        lines.append(f"{rank:>4}  {prompt:<{width}}  {r.observable} {op} {r.threshold:g}  seed {r.seed}  {est}")
    return "\n".join(lines)
