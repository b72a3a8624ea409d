"""rea.book.bench: the deep-tail benchmark's JSON (``bench/bench_tails.py --json``) read and typeset for the book,
and the committed results checked against the code they measure
(:func:`test_committed_result_is_not_older_than_its_code` fails on a stale ``bench/results/*.json``, naming the
command that regenerates it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rea.book import bench
from rea.book.bench import RESULTS, best_method, load_bench, provenance_line, smollm_table, toy_table

PROVENANCE = {"date": "2026-01-02T03:04:05+00:00", "command": ".venv/bin/python bench/bench_tails.py --json x.json",
              "cpu": "Some CPU", "cpu_count": 2, "torch_threads": 2, "torch": "2.13.0+cpu",
              "git_commit": "0123456789abcdef", "git_dirty": False}


def _row(method, p, eff, cover, n=10, missed=0):
    return {"method": method, "threshold": 10.0, "p_exact": p, "median_p_hat": p, "rel_rmse": 0.2,
            "coverage": cover, "n_with_estimate": n, "n_missed": missed, "efficiency": eff,
            "efficiency_text": "not reached (3 of 10 repeats without an estimate)" if eff is None else f"{eff:.3g}",
            "tokens_per_repeat": 1e6, "repeats": 10, "scale": 0.25, "wall_s": 1.0}


TOY = {"provenance": PROVENANCE, "problem": {"threads": 1},
       "results": [_row("annealed", 1.4e-8, None, None, n=0, missed=10), _row("replica", 1.4e-8, 5e4, 0.5),
                   _row("smc", 1.4e-8, 4e5, 1.0), _row("smc", 1.7e-13, 2e10, 0.9), _row("direct", 1.4e-8, 1.0, 1.0)]}


def test_load_bench_reads_a_file_or_says_none(tmp_path):
    path = tmp_path / "tails.json"
    assert load_bench(path) is None
    path.write_text(json.dumps(TOY))
    assert load_bench(path) == TOY
    path.write_text(json.dumps({"provenance": {}}))
    with pytest.raises(ValueError, match="no 'results' list"):
        load_bench(path)


def test_toy_table_typesets_every_row():
    t = toy_table(TOY)
    assert list(t["method"]) == ["annealed TPS + MBAR", "replica exchange + MBAR", "SMC", "SMC", "direct sampling"]
    assert t.loc[0, "efficiency vs direct"].startswith("not reached") and t.loc[0, "coverage"] == "n/a (no estimate)"
    assert t.loc[2, "efficiency vs direct"] == "4.0 × 10⁵" and t.loc[1, "coverage"] == "50% of 10"
    assert t.loc[3, "P exact"] == "1.7 × 10⁻¹³" and "e-" not in t.to_string()


def test_best_method_needs_coverage_and_an_estimate_in_every_repeat():
    assert best_method(TOY, 1e-9, 1e-7)["method"] == "smc"  # replica is more efficient than nothing, covers 50 %
    assert best_method(TOY, 1e-9, 1e-7, min_coverage=0.4)["efficiency"] == 4e5
    assert best_method(TOY, 0.0, 1e-12)["efficiency"] == 2e10
    only_tps = dict(TOY, results=TOY["results"][:2])
    assert best_method(only_tps, 1e-9, 1e-7) is None
    with pytest.raises(ValueError, match="p_low and p_high"):
        best_method(TOY, 1e-7, 1e-9)


def test_smollm_table_and_provenance_line():
    est = {"p": 2e-11, "ci_low": 3e-12, "ci_high": 2e-10}
    lm = {"provenance": PROVENANCE, "results": [
        {"methods": ["smc", "importance"], "threshold": -226.0, "lam": 0.3, "p": 2e-11, "tokens": 1e5,
         "estimates": {"smc": est, "importance": dict(est, p=1.2e-11)}, "decades_below_direct": 7.06, "agree": True},
        {"methods": ["replica", "smc"], "agree": False, "note": "no bias passed Gelman–Rubin at this budget"}]}
    t = smollm_table(lm)
    assert t.loc[0, "estimate 1"] == "SMC: 2.0 × 10⁻¹¹ [3.0 × 10⁻¹², 2.0 × 10⁻¹⁰]"
    assert t.loc[0, "estimate 2"].startswith("importance sampling: 1.2 × 10⁻¹¹")
    assert t.loc[0, "threshold a"] == "−226" and t.loc[0, "decades below direct"] == "7.1"
    assert t.loc[0, "agree"] == "yes" and t.loc[1, "agree"].startswith("no (no bias passed")
    assert t.loc[1, "estimate 1"] == "" and list(t.columns)[:3] == ["methods", "threshold a", "estimate 1"]
    line = provenance_line(TOY)
    assert line.startswith("2026-01-02") and "Some CPU (2 cores, 1 torch threads)" in line and "01234567" in line
    assert "`.venv/bin/python bench/bench_tails.py --json x.json`" in line


def test_committed_results_parse_when_present():
    for name, table in (("tails_toy.json", toy_table), ("tails_smollm.json", smollm_table)):
        data = load_bench(RESULTS / name)
        if data is not None:
            assert len(table(data)) == len(data["results"]) and provenance_line(data)


def test_efficiency_interval_and_goal():
    lo, hi = bench.efficiency_interval(_row("smc", 1.4e-8, 4e5, 1.0))
    assert lo < 4e5 < hi and 1e5 < lo and hi < 1e6  # χ² with 10 degrees of freedom: about [0.31, 2.1] × 4e5
    assert bench.efficiency_interval(_row("annealed", 1.4e-8, None, None)) is None
    assert bench.decide_goal(lo, hi, 1e4) is True and bench.decide_goal(lo, hi, 1e7) is False
    assert bench.decide_goal(lo, hi, 4e5) is None


def test_calibrated_coverage_counts_informative_intervals_only():
    row = dict(_row("smc", 1e-8, 4e5, 1.0), repeat_estimates=[
        {"p": 1e-8, "ci_low": 5e-9, "ci_high": 2e-8}] * 3 + [{"p": 0.0, "ci_low": 0.0, "ci_high": None}] * 7)
    verdict, why = bench.calibrated_coverage(row)
    assert verdict is True and why.startswith("0 of 3 informative")
    row["repeat_estimates"] = row["repeat_estimates"][:2] + row["repeat_estimates"][3:]
    assert bench.calibrated_coverage(row)[0] is None  # 2 counted: fewer than MIN_COUNTED
    assert bench.calibrated_coverage(_row("replica", 1e-8, 5e4, 0.5))[0] is False  # 5 misses of 10


def test_staleness_compares_recorded_digests_with_the_files_now(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    (tmp_path / "rea").mkdir()
    source = tmp_path / "rea" / "m.py"
    source.write_text("x = 1\n")
    digests = bench.source_digests(["rea/m.py"])
    data = {"provenance": dict(PROVENANCE, command=".venv/bin/python bench/bench_tails.py --smollm --json /tmp/x.json",
                               sources=digests, source_hash=bench.source_hash(digests), wall_s=12.0),
            "results": []}
    path = tmp_path / "bench" / "results" / "tails_x.json"
    assert bench.stale_sources(data) == [] and bench.staleness(path, data) is None
    source.write_text("x = 2\n")
    assert bench.stale_sources(data) == ["rea/m.py"]
    line = bench.staleness(path, data)
    assert line.startswith("bench/results/tails_x.json is older than the code it measures: 1 of 1")
    assert "regenerate: .venv/bin/python bench/bench_tails.py --smollm --json bench/results/tails_x.json" in line
    assert "12 s" in line and "\n" not in line
    source.unlink()
    assert bench.stale_sources(data) == ["rea/m.py"]  # a deleted source is a change too
    old = {"provenance": PROVENANCE, "results": []}
    assert bench.stale_sources(old) is None and "records no source digests" in bench.staleness(path, old)


def test_measured_sources_are_the_loaded_modules_and_not_the_book_plumbing():
    import sys

    files = bench.measured_sources(bench.ROOT / "bench" / "bench_tails.py")
    assert "bench/bench_tails.py" in files and "rea/book/bench.py" in files and "rea/book/records.py" in files
    assert "rea/book/findings.py" not in files and "rea/book/__init__.py" not in files
    loaded = {Path(m.__file__).resolve() for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
    assert all((bench.ROOT / f).resolve() in loaded for f in files if f != "bench/bench_tails.py")


@pytest.mark.parametrize("name", sorted(p.name for p in RESULTS.glob("*.json")))
def test_committed_result_is_not_older_than_its_code(name):
    """A committed benchmark result must measure the code as it is: the SHA-256 of every source file it measured,
    recorded when it was written, must match the file now (the digests are recomputed here, never typed)."""
    line = bench.staleness(RESULTS / name)
    if line is not None:
        pytest.fail(line, pytrace=False)
