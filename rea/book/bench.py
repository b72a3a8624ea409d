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
  cover often enough (the issue's goals: ≥ 10⁴ at 1.4 × 10⁻⁸, ≥ 10⁶ at ≤ 10⁻¹², coverage ≥ 90 %).
"""

from __future__ import annotations

import json
import math
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
    return (f"{p.get('date', 'unknown date')}, {p.get('cpu', 'unknown CPU')} ({p.get('cpu_count', '?')} cores, "
            f"{threads} torch threads), torch {p.get('torch', '?')}, commit {commit}: `{p.get('command', '?')}`")


def best_method(data: dict, p_low: float, p_high: float, min_coverage: float = 0.9) -> dict | None:
    """The toy row with the largest efficiency among methods other than direct sampling, at exact tail
    probabilities in [``p_low``, ``p_high``], whose coverage is at least ``min_coverage`` -> that row (a dict), or
    None if no method qualifies (no estimate in every repeat, or too low a coverage)."""
    if not 0 <= p_low <= p_high:
        raise ValueError(f"p_low and p_high must satisfy 0 ≤ p_low ≤ p_high, got {p_low!r}, {p_high!r}")
    ok = [r for r in data["results"] if r["method"] != "direct" and p_low <= r["p_exact"] <= p_high
          and r["efficiency"] is not None and r.get("coverage") is not None
          and not math.isnan(r["coverage"]) and r["coverage"] >= min_coverage]
    return max(ok, key=lambda r: r["efficiency"]) if ok else None
