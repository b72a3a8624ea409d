"""The deep-tail benchmark's results for the book: read ``bench/results/tails_*.json`` and typeset them as tables.

``bench/bench_tails.py --json PATH`` writes ``{"provenance": {...}, "problem": {...}, "results": [...]}``: for the
toy, one row per method and threshold (exact p, median p̂, relative RMSE, coverage, efficiency against direct
sampling or ``None`` with its "not reached" text, tokens per repeat, repeats); for ``--smollm``, one row per pair of
independent methods (both estimates with intervals, p, decades below direct sampling's floor, agreement).

* :func:`load_bench` -- the file's content, or None when it does not exist (a chapter then says so);
* :func:`toy_table`, :func:`smollm_table` -- the rows as DataFrames with typeset cells (2.9 × 10⁻⁷);
* :func:`provenance_line` -- date, machine and command in one line;
* :data:`ADV_TOKENS`, :data:`TOY_LENGTH`, :data:`TOY_THRESHOLDS` -- the toy benchmark's problem, shared with
  ``bench/bench_tails.py``: the count of these tokens in L completion tokens, and its two tails;
* :func:`best_method` -- the most efficient method at a range of tail probabilities among those whose intervals
  cover often enough (the issue's goals: ≥ 10⁴ at 1.4 × 10⁻⁸, ≥ 10⁶ at ≤ 10⁻¹², coverage ≥ 90 %);
* :func:`efficiency_interval`, :func:`decide_goal` -- the efficiency's interval over the repeats and the verdict
  of a goal against it (the book's ``effect`` rule with the goal as zero);
* :func:`measured_sources`, :func:`source_digests`, :func:`stale_sources`, :func:`staleness` -- provenance: the
  source files a result measures, their SHA-256 recorded with it, and whether the result is older than the code
  it measures (``tests/test_bench_results.py`` fails on a stale committed result, naming the command that
  regenerates it: :func:`regenerate_command`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from pathlib import Path

from rea.book.typeset import sci, typeset
from rea.validate.toy import ADV_TOKENS as ADV_TOKENS  # re-exported: the toy benchmark's problem (see above)

TOY_LENGTH = 20
"""Completion length L of the toy benchmark (φ = the count of :data:`ADV_TOKENS`, the toy LM's default prompt)."""

TOY_THRESHOLDS = (10.0, 14.0)
"""The toy benchmark's tails P(φ ≥ a): about 1.4 × 10⁻⁸ and 1.7 × 10⁻¹³
(exact: :func:`rea.exact.count_distribution`)."""

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
"""Where the committed benchmark results live (``tails_toy.json``, ``tails_smollm.json``)."""

METHOD_NAMES = {"annealed": "annealed TPS + MBAR", "replica": "replica exchange + MBAR", "smc": "SMC",
                "direct": "direct sampling", "importance": "importance sampling"}
"""The benchmark's method keys, as the book names them."""


def load_bench(path) -> dict | None:
    """The benchmark file at ``path`` as a dict, or None if it does not exist. A file without ``results`` is a
    one-line ValueError naming the path."""
    path = Path(path)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ValueError(f"{path}: not a bench_tails --json file (no 'results' list)")
    return data


def _num(x, digits: int = 2) -> str:
    return "n/a" if x is None else sci(x, digits)


def toy_table(data: dict):
    """One row per method and threshold of a toy benchmark: method, exact P, median p̂, relative RMSE, coverage
    (share of the repeats with an estimate), efficiency against direct sampling (or why not), tokens per repeat."""
    import pandas as pd

    rows = []
    for r in data["results"]:
        cover = r.get("coverage")
        rows.append({
            "method": METHOD_NAMES.get(r["method"], r["method"]),
            "P exact": sci(r["p_exact"]),
            "median p̂": _num(r["median_p_hat"]),
            "relative RMSE": _num(r["rel_rmse"]),
            "coverage": "n/a (no estimate)" if cover is None
            else f"{cover:.0%} of {r['n_with_estimate']}",
            "efficiency vs direct": sci(r["efficiency"]) if r["efficiency"] is not None else r["efficiency_text"],
            "tokens per repeat": sci(r["tokens_per_repeat"]),
        })
    return pd.DataFrame(rows)


def smollm_table(data: dict):
    """One row per pair of independent methods of a SmolLM2 benchmark: the methods, the threshold a of
    P(Log-Prob ≤ a), both estimates with their intervals ("estimate 1", "estimate 2", each "method: p [low, high]"),
    the tokens, the decades below direct sampling's floor with those tokens, and whether the intervals overlap."""
    import pandas as pd

    rows = []
    for r in data["results"]:
        if "estimates" not in r:  # a pair that could not be run (e.g. no bias passed Gelman-Rubin)
            rows.append({"methods": " vs ".join(METHOD_NAMES.get(m, m) for m in r["methods"]),
                         "agree": "no" + (f" ({r['note']})" if r.get("note") else "")})
            continue
        row = {"methods": " vs ".join(METHOD_NAMES.get(m, m) for m in r["methods"]),
               "threshold a": sci(r["threshold"], 4)}
        for i, m in enumerate(r["methods"]):
            e = r["estimates"][m]
            row[f"estimate {i + 1}"] = (f"{METHOD_NAMES.get(m, m)}: {sci(e['p'])} [{sci(e['ci_low'])}, "
                                        f"{sci(e['ci_high'])}]")
        row.update({"tokens": sci(r["tokens"]), "decades below direct": typeset(r["decades_below_direct"], ".1f"),
                    "agree": "yes" if r["agree"] else "no"})
        rows.append(row)
    columns = ["methods", "threshold a", "estimate 1", "estimate 2", "tokens", "decades below direct", "agree"]
    return pd.DataFrame(rows).reindex(columns=columns).fillna("")


def provenance_line(data: dict) -> str:
    """``date, CPU (cores), threads, torch, commit: command`` of a benchmark file, for a table's caption."""
    p = data.get("provenance", {})
    commit = (p.get("git_commit") or "unknown")[:8] + (" with local changes" if p.get("git_dirty") else "")
    threads = data.get("problem", {}).get("threads", p.get("torch_threads"))
    stale = stale_sources(data)
    state = ("the digests of its measured sources were not recorded (results written before provenance carried "
             "them): stale" if stale is None else
             f"its {len(p['sources'])} measured source files unchanged since" if not stale else
             f"stale: {len(stale)} of its {len(p['sources'])} measured source files changed since")
    return (f"{p.get('date', 'unknown date')}, {p.get('cpu', 'unknown CPU')} ({p.get('cpu_count', '?')} cores, "
            f"{threads} torch threads), torch {p.get('torch', '?')}, commit {commit}: `{p.get('command', '?')}`; "
            f"{state}")


def best_method(data: dict, p_low: float, p_high: float, min_coverage: float = 0.9, covers=None) -> dict | None:
    """The toy row with the largest efficiency among methods other than direct sampling, at exact tail
    probabilities in [``p_low``, ``p_high``], whose coverage is at least ``min_coverage`` -> that row (a dict), or
    None if no method qualifies (no estimate in every repeat, or too low a coverage). ``covers`` (a function of a
    row -> bool), when given, replaces the ``min_coverage`` test (e.g. the coverage rule,
    :func:`calibrated_coverage`)."""
    if not 0 <= p_low <= p_high:
        raise ValueError(f"p_low and p_high must satisfy 0 ≤ p_low ≤ p_high, got {p_low!r}, {p_high!r}")
    if covers is None:
        def covers(r):
            return r.get("coverage") is not None and not math.isnan(r["coverage"]) and r["coverage"] >= min_coverage
    ok = [r for r in data["results"] if r["method"] != "direct" and p_low <= r["p_exact"] <= p_high
          and r["efficiency"] is not None and covers(r)]
    return max(ok, key=lambda r: r["efficiency"]) if ok else None


def efficiency_interval(row: dict, level: float = 0.96) -> tuple[float, float] | None:
    """``(low, high)`` of a toy row's efficiency against direct sampling at ``level``, or None without one.

    The efficiency is ``C / RMSE²`` (module docstring of ``bench/bench_tails.py``) with the squared relative
    error averaged over ``n`` repeats; for errors about normal, ``n·RMSE²/σ²`` is χ² with ``n`` degrees of freedom,
    so ``σ²`` lies in ``[n·RMSE²/χ²_{1−α/2}, n·RMSE²/χ²_{α/2}]`` and the efficiency in
    ``[eff·χ²_{α/2}/n, eff·χ²_{1−α/2}/n]`` (α = 1 − level).
    """
    from scipy.stats import chi2

    eff, n = row.get("efficiency"), row.get("repeats")
    if eff is None or not n or not math.isfinite(eff):
        return None
    alpha = 1.0 - level
    return float(eff * chi2.ppf(alpha / 2, n) / n), float(eff * chi2.ppf(1 - alpha / 2, n) / n)


def decide_goal(low: float, high: float, goal: float) -> bool | None:
    """A goal "at least ``goal``" against an interval ``[low, high]`` of the quantity: ``True`` if ``low ≥ goal``,
    ``False`` if ``high < goal``, else ``None`` (the ``effect`` rule of :mod:`rea.book.rules` with the goal as its
    zero: met beyond the run's uncertainty, missed beyond it, or undecided)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return True if low >= goal else (False if high < goal else None)


def calibrated_coverage(row: dict, level: float = 0.96) -> tuple[bool | None, str]:
    """Whether a toy row's intervals cover as a calibrated ``level`` interval does -> (verdict, why).

    The ``coverage`` rule of :mod:`rea.book.rules`: only informative intervals (:func:`rea.book.rules.informative`)
    count when the row records each repeat's interval (``repeat_estimates``); older files record only the share of
    the repeats with an estimate that cover, and all of those count. ``None`` under
    :data:`rea.book.rules.MIN_COUNTED` counted intervals.
    """
    import numpy as np

    from rea.book.rules import allowed_misses, decide_coverage, informative

    reps = row.get("repeat_estimates")
    if reps:
        lo = np.array([r["ci_low"] if r["ci_low"] is not None else np.nan for r in reps], dtype=float)
        hi = np.array([r["ci_high"] if r["ci_high"] is not None else np.nan for r in reps], dtype=float)
        counted = np.asarray(informative(lo, hi), dtype=bool).reshape(-1)
        covered = (lo <= row["p_exact"]) & (row["p_exact"] <= hi)
        how = "informative intervals"
    else:
        n = int(row.get("n_with_estimate") or 0)
        cover = row.get("coverage")
        hits = 0 if cover is None or not math.isfinite(cover) else round(cover * n)
        counted, covered = np.ones(n, dtype=bool), np.arange(n) < hits
        how = "intervals of the repeats with an estimate (informativeness not recorded)"
    n, misses = int(counted.sum()), int((counted & ~covered).sum())
    verdict = decide_coverage(covered, counted, level)
    why = (f"{misses} of {n} {how} miss" + (f" (≤ {allowed_misses(n, level)} allowed)" if n else ""))
    return verdict, why


SOURCE_PARTS = ("rea", "bench")
"""The top folders of the repository whose modules a benchmark result measures (see :func:`measured_sources`)."""


def _book_modules(script: Path) -> set[str]:
    """The modules of ``rea.book`` that ``script`` takes names from (its ``from rea.book… import`` lines)."""
    import ast
    import importlib

    used = set()
    for node in ast.walk(ast.parse(Path(script).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rea.book"):
            if node.module != "rea.book":
                used.add(node.module)
                continue
            book = importlib.import_module("rea.book")
            for alias in node.names:
                obj = getattr(book, alias.name, None)
                used.add(getattr(obj, "__module__", None) or f"rea.book.{alias.name}")
        elif isinstance(node, ast.Import):
            used.update(a.name for a in node.names if a.name.startswith("rea.book."))
    return used


def measured_sources(script, modules: dict | None = None) -> list[str]:
    """The repository's source files a benchmark run measures, as paths relative to the repository's root.

    Computed, not listed: every module loaded under ``rea/`` or ``bench/`` (``modules``, default ``sys.modules``
    after the run, so the benchmark's lazy imports count), and ``script`` itself; of the book's package
    ``rea/book/`` only the modules ``script`` imports names from (the problem's definition here,
    ``threshold_between``): the rest is the book's plumbing (tables, glue, findings), which changes no number. A
    module the run imports anew must be imported by a file already on this list, so a change of imports changes a
    recorded file's hash too.
    """
    import sys

    script = Path(script).resolve()
    book = _book_modules(script)
    files = {script}
    for name, module in list((sys.modules if modules is None else modules).items()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        path = Path(path).resolve()
        if not path.is_relative_to(ROOT):
            continue
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in SOURCE_PARTS or (rel.parts[:2] == ("rea", "book") and name not in book):
            continue
        files.add(path)
    return sorted(str(p.relative_to(ROOT)) for p in files)


def source_digests(paths) -> dict[str, str | None]:
    """``{path: SHA-256 of its bytes}`` for repository-relative ``paths`` (None for a file that does not exist)."""
    out = {}
    for rel in paths:
        path = ROOT / rel
        out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return out


def source_hash(digests: dict[str, str | None]) -> str:
    """One SHA-256 over ``{path: digest}`` (sorted by path): the recorded state of all measured sources."""
    text = "".join(f"{rel}\0{digests[rel]}\n" for rel in sorted(digests))
    return hashlib.sha256(text.encode()).hexdigest()


def stale_sources(data: dict) -> list[str] | None:
    """The measured source files whose content differs now from when ``data`` was written (missing files too),
    or None when ``data`` records no source digests (written before results carried them)."""
    recorded = data.get("provenance", {}).get("sources")
    if not recorded:
        return None
    now = source_digests(recorded)
    return [rel for rel in sorted(recorded) if now[rel] != recorded[rel]]


def regenerate_command(path, data: dict) -> str:
    """The command line that rewrites the result file ``path``: its recorded command with ``--json`` pointed at
    ``path`` (relative to the repository's root) and the project's interpreter."""
    path = Path(path).resolve()
    rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    words = shlex.split(data.get("provenance", {}).get("command") or "")
    script = next((i for i, w in enumerate(words) if w.endswith(".py")), None)
    if script is None:
        return f".venv/bin/python bench/bench_tails.py --json {rel}"
    args = words[script + 1:]
    if "--json" in args:
        args[args.index("--json") + 1:args.index("--json") + 2] = [rel]
    else:
        args += ["--json", rel]
    return shlex.join([".venv/bin/python", words[script], *args])


def wall_seconds(data: dict) -> float | None:
    """The seconds the run that wrote ``data`` took: recorded in its provenance, else summed over its methods'
    recorded times (older files)."""
    wall = data.get("provenance", {}).get("wall_s") or data.get("problem", {}).get("wall_s")
    if wall:
        return float(wall)
    per_method = {r.get("method") or tuple(r.get("methods", ())): r.get("wall_s") for r in data["results"]}
    times = [t for t in per_method.values() if t]
    return float(sum(times)) if times else None


def staleness(path, data: dict | None = None) -> str | None:
    """One line saying why the result file ``path`` is older than the code it measures, with the command that
    regenerates it and how long it last took, or None when its recorded source digests all match."""
    path = Path(path)
    data = load_bench(path) if data is None else data
    rel = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
    stale = stale_sources(data)
    if stale == []:
        return None
    p = data.get("provenance", {})
    commit = (p.get("git_commit") or "unknown")[:8] + (" with local changes" if p.get("git_dirty") else "")
    why = ("records no source digests (written before results carried them), at commit " + commit
           if stale is None else
           f"is older than the code it measures: {len(stale)} of {len(p['sources'])} measured files changed since "
           f"commit {commit} ({', '.join(stale[:3])}{', …' if len(stale) > 3 else ''})")
    wall = wall_seconds(data)
    took = f" (last run: {wall:.0f} s on {p.get('cpu_count', '?')} cores)" if wall else ""
    return f"{rel} {why}; regenerate: {regenerate_command(path, data)}{took}"
