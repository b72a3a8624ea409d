"""Golden regression of the chapters: every recorded number of a ``ci``-profile run within its tolerance.

See :mod:`rea.book.golden`. The execution tests re-run each chapter in the pinned environment with fresh shared runs.
"""

from __future__ import annotations

import pytest

from rea.book import golden

TOC = golden.toc_chapters()


@pytest.mark.parametrize("chapter", TOC)
def test_golden_in_sync_with_source(chapter):
    path = golden.golden_path(chapter)
    assert path.exists(), f"no golden for {chapter}: run `make golden`"
    gold = golden.load_golden(chapter)
    assert gold["code_sha256"] == golden.code_hash(chapter), f"{path.name} is stale: run `make golden {chapter}`"
    assert gold["parameters"]["profile"] == "ci" and gold["records"], f"{path.name}: no records at the ci profile"


def test_compare_tolerances():
    gold = {"x": {"value": -31.0125, "rtol": 1e-4, "atol": 1e-12}, "k": {"value": 2, "rtol": 1e-4, "atol": 1e-12},
            "e": {"value": 0.1, "rtol": 1e-9, "atol": 1e-12}, "s": {"value": "0.3, 0.6", "rtol": 1e-4, "atol": 0},
            "n": {"value": float("nan"), "rtol": 1e-4, "atol": 0}}
    ok = {"x": {"value": -31.0135}, "k": {"value": 2}, "e": {"value": 0.1 + 1e-12}, "s": {"value": "0.3, 0.6"},
          "n": {"value": float("nan")}}
    assert golden.compare(gold, ok) == []  # across a rounding boundary of the 3rd decimal: same number
    bad = {**ok, "x": {"value": -31.02}, "k": {"value": 3}, "e": {"value": 0.1 + 1e-9}, "n": {"value": 0.0}}
    assert [line.split(":")[0] for line in golden.compare(gold, bad)] == ["e", "k", "n", "x"]
    assert golden.compare(gold, {k: v for k, v in ok.items() if k != "s"}) == [
        "s: recorded in the golden, missing from the run"]


@pytest.mark.slow
@pytest.mark.parametrize("chapter", TOC)
def test_golden_numbers(chapter, tmp_path):
    gold = golden.load_golden(chapter)
    run = golden.execute(chapter, tmp_path)
    assert not run.stderr, f"{chapter} wrote to stderr: {run.stderr}"
    diff = golden.compare(gold["records"], run.records)
    assert not diff, f"{chapter}: {len(diff)} recorded numbers differ from tests/golden/{chapter}.json " \
                     f"(executed notebook: {run.notebook}):\n" + "\n".join(diff)
