"""Prompt sweeps (rea.sweep, ``rea sweep``): the grid, the budgets, one local Ray for the module, estimates against
the toy's exact tails, a failing cell, a killed worker (its TPS run resumed on the next one) and a resumed sweep."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from rea import exact
from rea.book.profiles import SHARED_MBAR, SHARED_TPS
from rea.lm import DEFAULT_PROMPT, load_model
from rea.sweep import COLUMNS, budget, make_jobs, read_prompts, run_job, run_sweep, summarize
from rea.sweep.methods import tps_method

ray = pytest.importorskip("ray")

TOY_PROMPTS = ["ha", "oh", "the cat sat"]  # exact P(repeats ≥ 3) at L = 20: 0.475, 0.307, 0.188


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 cores for the module (a sweep uses a Ray it finds running and leaves it running)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


def _toy_exact_tail(prompt: str, length: int, threshold: float) -> float:
    dist = exact.count_distribution(load_model("toy"), prompt, length, "repeats")
    values, log_p = np.asarray(dist.values), np.asarray(dist.log_probs)
    return float(np.exp(log_p[values >= threshold]).sum())


# --------------------------------------------------------------------------------------------- no Ray


def test_read_prompts(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("The sky is\n\nOnce upon a time\nThe sky is\n")
    assert read_prompts(txt) == ["The sky is", "Once upon a time"]
    pd.DataFrame({"id": [1, 2], "text": ["a b", "c"]}).to_csv(tmp_path / "p.csv", index=False)
    assert read_prompts(tmp_path / "p.csv") == ["a b", "c"]
    pd.DataFrame({"q": ["x", "y"]}).to_parquet(tmp_path / "p.parquet")
    assert read_prompts(tmp_path / "p.parquet", column="q") == ["x", "y"]
    with pytest.raises(ValueError, match="^column: p.parquet has no column 'prompt'"):
        read_prompts(tmp_path / "p.parquet", column="prompt")
    with pytest.raises(ValueError, match="^prompts: no such file"):
        read_prompts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="empty"):
        read_prompts(tmp_path / "empty.txt")


def test_budget_is_the_books():
    toy, real = SHARED_TPS["ci"], SHARED_TPS["quick"]
    b = budget("ci", "toy", "repeats")
    assert (b["length"], b["n_chains"], b["n_steps"], b["n_direct"], b["lambdas"]) == (
        toy["toy_length"], toy["toy_chains"], toy["toy_steps"], toy["toy_samples"], toy["toy_lambdas"])
    b = budget("quick", "smollm2-135m", "ari", {"n_steps": 7, "length": None})
    assert (b["length"], b["n_chains"], b["n_steps"], b["n_direct"], b["lambdas"]) == (
        real["length"], real["n_chains"], 7, real["n_direct"], real["lambdas_ari"])
    assert b["n_boot"] == SHARED_MBAR["quick"]["n_boot"]
    assert budget("paper", "x", "logprob")["lambdas"] == SHARED_TPS["paper"]["lambdas_logprob"]
    with pytest.raises(ValueError, match="^budget: unknown knob"):
        budget("ci", "toy", "repeats", {"steps": 3})


def test_bad_arguments_name_the_parameter(tmp_path):
    ok = dict(prompts=["ha"], model="toy", thresholds=[3], out=tmp_path / "s", progress=False)
    for change, match in [({"profile": "fast"}, "^profile must be"), ({"method": "mcmc"}, "^method must be"),
                          ({"observables": ["nope"]}, "^observable must be"), ({"thresholds": [np.nan]}, "^threshold"),
                          ({"seeds": [-1]}, "^seed must be"), ({"prompts": "ha"}, "^prompts must be a list"),
                          ({"prompts": ["ok", " "]}, "^prompts must hold non-empty"), ({"workers": 0}, "^workers"),
                          ({"side": "both"}, "^side must be"), ({"device": "tpu"}, "^device must be"),
                          ({"num_cpus": 2, "address": "auto"}, "^num_cpus"), ({"budget": {"lambdas": [0.5, 0.1]}},
                                                                              "^lambdas must have strictly")]:
        with pytest.raises(ValueError, match=match):
            run_sweep(**{**ok, **change})
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="^out: .* is a file"):
        run_sweep(**{**ok, "out": tmp_path / "file"})


def test_jobs_share_a_run_across_thresholds_and_keys_depend_on_settings():
    settings = {"repeats": {"model": "toy", "budget": {"n_steps": 1}}}
    jobs = make_jobs(["a", "b"], ["repeats"], [3, 5, 3], [0, 1], settings)
    assert len(jobs) == 4 and all(job.thresholds == [3.0, 5.0] for job in jobs)
    keys = {c.key for job in jobs for c in job.cells}
    assert len(keys) == 8
    other = make_jobs(["a", "b"], ["repeats"], [3, 5], [0, 1], {"repeats": {"model": "toy", "budget": {"n_steps": 2}}})
    assert keys.isdisjoint(c.key for job in other for c in job.cells)
    assert [c.key for c in make_jobs(["a", "b"], ["repeats"], [3, 5], [0, 1], settings)[0].cells] == \
        [c.key for c in jobs[0].cells]


def test_run_job_in_process_direct_against_exact_and_a_bad_prompt(tmp_path, single_thread):
    """The direct method (20 000 samples) lands within 4 binomial standard errors of the toy's exact tails."""
    lm = load_model("toy")
    b = budget("quick", "toy", "repeats")
    settings = {"repeats": {"model": "toy", "method": "direct", "budget": b}}
    good, bad = make_jobs(["oh", "a zebra"], ["repeats"], [3, 8], [0], settings)
    rows = run_job(lambda: lm, good, "direct", "upper", tmp_path)["rows"]
    for row in rows:
        p = _toy_exact_tail("oh", b["length"], row["threshold"])
        assert row["status"] == "ok" and row["ci_low"] <= row["p"] <= row["ci_high"]
        assert abs(row["p"] - p) < 4 * np.sqrt(p * (1 - p) / b["n_direct"]), (row, p)
    out = run_job(lambda: lm, bad, "direct", "upper", tmp_path)
    assert [r["status"] for r in out["rows"]] == ["error", "error"]
    assert out["rows"][0]["error"].startswith("ValueError: ToyLM cannot encode 'zebra'")
    assert "\n" not in out["rows"][0]["error"] and out["provenance"]["prompt"] == "a zebra"


def test_summary_ranks_within_observable_and_threshold():
    rows = [{"prompt": p, "observable": "repeats", "threshold": a, "seed": 0, "p": v, "ci_low": v / 2,
             "ci_high": 2 * v, "status": "ok", "error": ""} for p, a, v in
            [("x", 3.0, 0.1), ("y", 3.0, 0.3), ("z", 3.0, 0.3), ("x", 5.0, 0.01)]]
    rows.append({"prompt": "w", "observable": "repeats", "threshold": 3.0, "seed": 0, "p": np.nan, "ci_low": np.nan,
                 "ci_high": np.nan, "status": "error", "error": "ValueError: bad"})
    df = summarize(rows, {"method": "tps"})
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS) and (df["method"] == "tps").all()
    assert df["prompt"].tolist() == ["y", "z", "x", "w", "x"]
    assert df["rank"].tolist()[:3] == [1, 1, 3] and np.isnan(df["rank"].iloc[3]) and df["rank"].iloc[4] == 1


# --------------------------------------------------------------------------------------------- on Ray


def test_toy_sweep_against_exact_tails(local_ray, tmp_path):
    """TPS + MBAR at the ci profile, 2 workers: every exact tail inside the interval widened ×2 in log space, and
    the ranking is the exact one (the exact tails differ by ≥ 1.6× between these prompts)."""
    table = run_sweep(TOY_PROMPTS, model="toy", thresholds=[3, 8], profile="ci", out=tmp_path / "s", progress=False)
    assert len(table) == 6 and (table["status"] == "ok").all() and table.attrs["computed"] == 6
    length = budget("ci", "toy", "repeats")["length"]
    for r in table.itertuples():
        p = _toy_exact_tail(r.prompt, length, r.threshold)
        half = np.log(r.ci_high / r.ci_low) / 2
        assert abs(np.log(r.p) - np.log(p)) <= 2 * half, (r.prompt, r.threshold, r.p, p)
    for a, group in table.groupby("threshold"):
        exact_order = sorted(TOY_PROMPTS, key=lambda q: -_toy_exact_tail(q, length, a))
        assert group.sort_values("rank")["prompt"].tolist() == exact_order
    written = pd.read_csv(tmp_path / "s" / "summary.csv")
    assert list(written.columns[: len(COLUMNS)]) == list(COLUMNS) and len(written) == 6
    assert len(list((tmp_path / "s" / "cells").glob("*.parquet"))) == 6


def test_cli_sweep_reports_a_failing_cell_and_a_rerun_reuses_finished_cells(local_ray, tmp_path, capsys):
    """``rea sweep`` as the issue states it (direct sampling here, one worker), a prompt the toy cannot encode among
    them; then the same sweep through the API: finished cells are read back, only the failed one runs again."""
    from rea.cli import main

    prompts = [DEFAULT_PROMPT, "the zebra", "ha", "oh"]  # exact P(repeats ≥ 3), L = 20: 0.184, -, 0.475, 0.307
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    out = tmp_path / "DIR"
    assert main(["sweep", "--prompts", str(tmp_path / "prompts.txt"), "--model", "toy", "--observable", "repeats",
                 "--threshold", "3", "--profile", "ci", "--out", str(out), "--method", "direct", "--workers", "1",
                 "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    first = pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])
    assert list(first.columns[: len(COLUMNS)]) == list(COLUMNS) and len(first) == 4
    assert first["prompt"].tolist() == ["ha", "oh", DEFAULT_PROMPT, "the zebra"]  # ranked; the failed cell last
    assert first["status"].tolist() == ["ok", "ok", "ok", "error"]
    err = first["error"].iloc[3]
    assert err.startswith("ValueError: ToyLM cannot encode 'zebra'") and "\n" not in err
    files = {f: f.stat().st_mtime_ns for f in (out / "cells").glob("*.parquet")}
    again = run_sweep(prompts, model="toy", thresholds=[3], method="direct", profile="ci", out=out, progress=False,
                  workers=1)
    assert (again.attrs["reused"], again.attrs["computed"], again.attrs["failed"]) == (3, 1, 1)
    np.testing.assert_array_equal(again["p"].to_numpy()[:3], first["p"].to_numpy()[:3])
    changed = [f for f, t in files.items() if f.stat().st_mtime_ns != t]
    assert changed == [out / "cells" / f"{again['key'].iloc[3]}.parquet"]  # only the failed cell ran again
    assert main(["sweep", "--prompts", str(tmp_path / "prompts.txt"), "--threshold", "3", "--profile", "fast"]) == 2
    assert "rea sweep: error: profile must be one of" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:bootstrap over")  # the in-process reference run has 3 chains, as the ci profile
def test_killed_worker_retries_resume_tps_and_a_dying_cell_is_reported(local_ray, tmp_path):
    """A job whose worker process dies runs again on a new worker: "oh" dies once after checkpointing part of its
    TPS run, and the retry resumes it to the result an uninterrupted run gives; "ha" kills every worker it meets and
    is reported after max_attempts."""

    def fragile(lm, job, b, run_dir, side):
        import os as _os
        from pathlib import Path as _Path

        from rea.sweep.methods import tps_config
        from rea.sweep.methods import tps_method as _tps
        from rea.tps import run_tps

        marker = _Path(run_dir) / "killed-once"
        if job.prompt == "ha":
            _os._exit(3)
        if job.prompt == "oh" and not marker.exists():
            run_tps(lm, tps_config(job, b, side), _Path(run_dir) / "tps", progress=False, max_steps=5)
            marker.write_text("checkpointed 5 steps, then died")
            _os._exit(3)
        return _tps(lm, job, b, run_dir, side)

    table = run_sweep(["ha", "oh"], model="toy", thresholds=[3], method=fragile, profile="ci", out=tmp_path / "s",
                  progress=False, max_attempts=2, budget={"n_direct": 200})
    row = table.set_index("prompt")
    assert row.loc["ha", "status"] == "error" and "died on each of 2 attempts" in row.loc["ha", "error"]
    assert row.loc["oh", "status"] == "ok" and row.loc["oh", "rank"] == 1
    job = make_jobs(["oh"], ["repeats"], [3], [0], {"repeats": {"budget": budget("ci", "toy", "repeats",
                                                                               {"n_direct": 200})}})[0]
    fresh = tps_method(load_model("toy"), job, job.settings["budget"], tmp_path / "fresh")
    for col in ("p", "ci_low", "ci_high"):
        assert row.loc["oh", col] == pytest.approx(fresh[col].item(), rel=1e-9)
    killed = [d for d in (tmp_path / "s" / "runs").iterdir() if (d / "killed-once").exists()]
    assert len(killed) == 1 and (killed[0] / "tps" / "records.parquet").exists()  # "oh": resumed to the end


def test_tiny_random_model_sweep(local_ray, tmp_path, tiny_llama_dir, single_thread):
    """A GPT-sized code path (a tiny random llama from a directory): TPS cells run and their direct samples are the
    ones the same seed gives in this process."""
    from rea.sweep.methods import direct_phi

    table = run_sweep(["Once upon a time", "The sky is"], model=tiny_llama_dir, thresholds=[1, 2], profile="ci",
                  out=tmp_path, progress=False, device="cpu")
    assert (table["status"] == "ok").all(), table["error"].tolist()
    assert ((table["ci_low"] <= table["p"]) & (table["p"] <= table["ci_high"])).all()
    lm = load_model(tiny_llama_dir, device="cpu")
    settings = {"repeats": {"budget": budget("ci", tiny_llama_dir, "repeats")}}
    for job in make_jobs(["Once upon a time", "The sky is"], ["repeats"], [1, 2], [0], settings):
        phi = direct_phi(lm, job, job.settings["budget"])
        for c in job.cells:
            got = table[(table["prompt"] == c.prompt) & (table["threshold"] == c.threshold)]["direct_p"].item()
            assert abs(got - np.mean(phi >= c.threshold)) <= 1 / len(phi) + 1e-12
