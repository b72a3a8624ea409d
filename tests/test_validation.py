"""Fast versions of `make validate` (rea.validate) and the one-call pipeline rea.tps.mbar.tps_mbar."""

import time
import warnings

import numpy as np
import pandas as pd
import pytest

from rea import exact, validate
from rea.tps import tps_mbar, tps_samples, tps_tokens


@pytest.fixture(scope="module")
def exact_records(toy):
    rng = np.random.default_rng(0)
    lams = [-2.0, -1.0, -0.75, -0.5, -0.25, 0.5]
    rec = validate.records_from_exact(toy, validate.PROMPT, 30, lams, 6, 150, rng)
    direct = validate.exact_tilted_phi(toy, validate.PROMPT, 30, 0.0, 2000, rng)
    return rec, direct


def test_exact_tilted_sampler_matches_exact_mean(toy):
    rng = np.random.default_rng(1)
    for lam in (-1.0, 0.0, 0.7):
        phi = validate.exact_tilted_phi(toy, validate.PROMPT, 20, lam, 20000, rng)
        mean = exact.exact_mean(toy, validate.PROMPT, 20, "repeats", lam=lam)
        assert abs(phi.mean() - mean) < 4.5 * phi.std() / np.sqrt(phi.size) + 1e-9


def test_tps_mbar_bootstrap_and_analytic_against_exact(toy, exact_records):
    rec, direct = exact_records
    thr = np.array([5.0, 20.0, 28.0])
    p = np.exp(exact.count_distribution(toy, validate.PROMPT, 30, "repeats").log_tail(thr))
    for method in ("bootstrap", "analytic"):
        df = tps_mbar(rec, direct, thr, method=method)
        assert list(df.columns[:7]) == ["threshold", "p", "log10_p", "ci_low", "ci_high", "rel_ci_half", "n"]
        assert np.all((df.ci_low <= p) & (p <= df.ci_high)), (method, df.assign(exact=p))
        assert np.all(df.rel_ci_half < 0.5)
        assert df.direct_k.iloc[-1] == 0 and df.direct_ci_high.iloc[-1] > 0  # direct sees nothing at 1e-7
    assert df.attrs["dropped"] == [] and 0.0 in df.attrs["lambdas"]
    # bins: probabilities sum to ~1 and match the exact pmf where it is not tiny
    edges = np.arange(-0.5, 30.5, 1.0)
    db = tps_mbar(rec, direct, bin_edges=edges, method="analytic")
    assert db.p.sum() == pytest.approx(1.0, abs=1e-9)
    pmf = np.exp(exact.count_distribution(toy, validate.PROMPT, 30, "repeats").log_probs[:30])
    ok = (db.ci_low <= pmf) & (pmf <= db.ci_high)
    assert ok.mean() >= 0.8
    np.testing.assert_allclose(db.density, db.p / db.width)


def test_tps_mbar_drops_stuck_bias_by_gelman_rubin(exact_records):
    rec, direct = exact_records
    rec = rec.copy()
    stuck = (rec["lam"] == -2.0) & (rec["chain"] % 2 == 0)
    rec.loc[stuck, "phi"] = 29.0  # half the chains stuck on the extreme: GR = inf
    df = tps_mbar(rec, direct, [10.0], method="analytic")
    assert -2.0 in df.attrs["dropped"] and -2.0 not in df.attrs["lambdas"]


def _repeat_steps(rec, k):
    """Each step of every chain repeated k times in a row (a perfectly correlated chain, g ≈ k)."""
    out = rec.loc[rec.index.repeat(k)].copy()
    out["step"] = out.groupby(["chain", "lam"]).cumcount()
    return out.reset_index(drop=True)


def test_analytic_counts_correlated_samples_once(exact_records):
    """Repeating every step 8 times (g ≈ 8) must not make the analytic interval narrower: effective counts N_k/g_k
    give back the independent-sample MBAR (same estimate, same width), where trusting the 8× longer chains would
    shrink the interval by √8."""
    rec, direct = exact_records
    thr = np.array([20.0, 28.0])
    one = tps_mbar(rec, direct, thr, method="analytic")
    eight = tps_mbar(_repeat_steps(rec, 8), direct, thr, method="analytic")
    g = eight.attrs["statistical_inefficiency"]
    assert all(6 < v < 11 for v in g.values()), g
    np.testing.assert_allclose(eight.p, one.p, rtol=0.1)
    width = np.log(eight.ci_high / eight.ci_low) / np.log(one.ci_high / one.ci_low)
    assert np.all((width > 0.8) & (width < 1.25)), width
    assert eight.attrs["n_samples"] == 8 * len(rec) * 0.9 + direct.size


def test_analytic_never_drops_the_only_sample_beyond_a_threshold(exact_records):
    """The only φ ≥ a sits inside a correlated block (g ≈ 10). Thinning by g (the old analytic method) dropped it
    and raised for 41 of the 45 spike positions 700–744 tried here (7/16 audit runs); every post-burn-in sample is
    kept now, so whenever the pooled samples reach a the analytic method answers."""
    rec, direct = exact_records
    rec = _repeat_steps(rec[rec["lam"] >= -1.0], 10)
    top = rec.phi.max() + 1
    # one post-burn-in step of one chain at λ = −1 (not on a multiple of the stride) is the only φ = top
    spike = rec.index[(rec["lam"] == -1.0) & (rec.chain == 6) & (rec.step == 730)]
    rec.loc[spike, "phi"] = top
    df = tps_mbar(rec, direct, [top], method="analytic")
    assert df.attrs["dropped"] == [] and df.attrs["statistical_inefficiency"][-1.0] > 5
    assert df.n.iloc[0] == 1 and 0 < df.p.iloc[0] < df.ci_high.iloc[0] < 1
    assert df.attrs["n_samples"] == int(len(rec) * 0.9) + direct.size


def test_tps_tokens_counts_regenerated_suffixes():
    rec = pd.DataFrame({"chain": [0, 0, 1], "cut": [0, 10, 29], "lam": 0.0, "step": [0, 1, 0], "phi": 1.0})
    assert tps_tokens(rec, 30) == 30 + 20 + 1 + 2 * 30


def _records(**override):
    base = pd.DataFrame({"chain": np.repeat([0, 1], 10), "lam": -1.0, "step": np.tile(np.arange(10), 2),
                         "phi": np.arange(20, dtype=float), "direction": -1})
    for k, v in override.items():
        base[k] = v
    return base


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: tps_mbar(_records(), None, [1.0]), r"^direct_phi: no direct samples and no λ = 0"),
        (lambda: tps_mbar(_records(phi=np.r_[np.nan, np.ones(19)]), np.zeros(5), [1.0]), r"^records: phi has 1 non"),
        (lambda: tps_mbar(_records().iloc[:0], np.zeros(5), [1.0]), r"^records is empty"),
        (lambda: tps_mbar(_records().iloc[:-3], np.zeros(5), [1.0]), r"^records: chains at λ = -1 have different"),
        (lambda: tps_mbar(_records(), np.zeros(5), [100.0]), r"^thresholds \[100.0\] lie beyond .*extend the λ grid"),
        (lambda: tps_mbar(_records(), [0.0, np.inf], [1.0]), r"^direct_phi contains 1 non-finite"),
        (lambda: tps_mbar(_records(), np.zeros(5), [1.0], method="magic"), r"^method"),
        (lambda: tps_mbar(_records(), np.zeros(5)), r"^thresholds / bin_edges"),
        (lambda: tps_samples(pd.DataFrame({"chain": [0], "phi": [1.0]})), r"^records lacks column"),
    ],
)
def test_pipeline_bad_input_one_line_errors(call, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=match) as err:
            call()
    assert "\n" not in str(err.value)


def test_validate_checks_fast():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = (validate.check_log_partition(0.2) + validate.check_deep_tail(0.3)
                + validate.check_ari(0.1) + validate.check_coverage(0.2, repeats=12))
    for c in rows:
        print(c)
    named = {c.name: c for c in rows}
    assert all(c.passed for n, c in named.items() if not n.startswith("coverage")), rows
    # 12 repeats: coverage is only roughly measured here (make validate runs 50: pooled ≥ 0.90, no tail ≪ 0.90)
    rates = {n: float(c.detail.split()[0]) for n, c in named.items() if n.startswith("coverage_exact_tilted_")}
    assert len(rates) == 2 and min(rates.values()) >= 0.75, rates


def _timed(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        rows = fn(*args, **kwargs)
    for c in rows:
        print(f"{c.name}: {'PASS' if c.passed else 'FAIL'} ({time.perf_counter() - t0:.1f} s) {c.detail}")
    return rows


def test_tps_end_to_end_fast(single_thread):
    """Real toy TPS (16 chains × 400 steps, λ ∈ {−1, −0.5, 0.5}) + MBAR: ln Z within max(3.29σ, 1/√N) nats, tails
    0.11 and 2e-3 inside informative 99.9 % bootstrap intervals (λ = −1.5 needs ~1000 steps to pass Gelman–Rubin:
    make validate runs it). The ladder is asymmetric so that a flipped acceptance sign shows. ~6 s."""
    rows = _timed(validate.check_tps_end_to_end, 0.4, lambdas_neg=(-0.5, -1.0), lambdas_pos=(0.5,),
                  thresholds=(6.0, 8.0), confidence=0.999)
    assert len(rows) == 2 and all(c.passed for c in rows), rows


def test_tps_deep_tail_fast(single_thread):
    """The deep-tail pipeline (adverb count, L = 20) on a shorter grid, λ ∈ {−0.5, −1}, 1000 steps, at P(φ ≥ 6) =
    2.3e-4 (the 1.4e-8 tail of make validate needs λ = −1.75 and ~6000 steps to pass Gelman–Rubin). ~12 s."""
    rows = _timed(validate.check_tps_deep_tail, 1 / 6, lambdas=(-0.5, -1.0), threshold=6.0)
    assert len(rows) == 1 and rows[0].passed, rows


def test_coverage_on_real_tps_chains_fast(single_thread):
    """check_coverage_tps at a small scale: 10 repeats × 16 real chains × 600 steps at λ = −1, tails 1.6e-2 and
    7.8e-4; both methods pass the pooled ≥ 0.90 rule (make validate: 50 repeats, 2000 steps, λ down to −2, tails to
    6.6e-6). ~13 s."""
    rows = _timed(validate.check_coverage_tps, 0.3, repeats=10, lambdas=(-1.0,), thresholds=(6.0, 7.0))
    assert [c.name for c in rows] == ["coverage_tps_mbar_bootstrap", "coverage_tps_mbar_analytic"]
    assert all(c.passed for c in rows), rows
    assert all("(10 repeats, real TPS chains" in c.detail for c in rows)


def test_coverage_verdict_rule():
    ok, pooled, per = validate.coverage_verdict(np.ones((50, 3), bool))
    assert ok and pooled == 1.0 and per.tolist() == [1.0, 1.0, 1.0]
    cov = np.ones((50, 3), bool)
    cov[:11, 2] = False  # one tail at 39/50: significantly below 0.90 although pooled = 0.93
    assert validate.coverage_verdict(cov)[:2] == (False, pytest.approx(139 / 150))
    cov[:, 2] = True
    cov[:5, :] = False  # pooled 0.90, every tail 0.90
    assert validate.coverage_verdict(cov)[0]


def test_validate_main_prints_one_line_per_coverage(monkeypatch, capsys):
    rows = [validate.Check("coverage_tps_mbar_bootstrap", True, "0.94 (50 repeats, real TPS chains, x)"),
            validate.Check("other check", True, "fine")]
    seen = {}

    def fake(scale, repeats=50):
        seen["repeats"] = repeats
        return rows

    monkeypatch.setattr(validate, "CHECKS", [fake, lambda scale: [validate.Check("no repeats", True, "")]])
    assert validate.main(["--scale", "0.1", "--repeats", "7"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "coverage_tps_mbar_bootstrap: 0.94 (50 repeats, real TPS chains, x)" in out
    assert not any(line.startswith("other check:") for line in out) and seen["repeats"] == 7


def test_validate_importance_sampling_fast():
    rows = validate.check_importance_sampling(0.1)
    assert all(c.passed for c in rows), rows
