"""Fast versions of `make validate` (rea.validate) and the one-call pipeline rea.analysis.tps_mbar."""

import warnings

import numpy as np
import pandas as pd
import pytest

from rea import exact, validate
from rea.analysis import tps_mbar, tps_samples, tps_tokens


@pytest.fixture(scope="module")
def toy():
    return validate._toy()


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
    stuck = (rec["lambda"] == -2.0) & (rec["chain"] % 2 == 0)
    rec.loc[stuck, "phi"] = 29.0  # half the chains stuck on the extreme: GR = inf
    df = tps_mbar(rec, direct, [10.0], method="analytic")
    assert -2.0 in df.attrs["dropped"] and -2.0 not in df.attrs["lambdas"]


def test_tps_tokens_counts_regenerated_suffixes():
    rec = pd.DataFrame({"chain": [0, 0, 1], "cut": [0, 10, 29], "lambda": 0.0, "step": [0, 1, 0], "phi": 1.0})
    assert tps_tokens(rec, 30) == 30 + 20 + 1 + 2 * 30


def _records(**override):
    base = pd.DataFrame({"chain": np.repeat([0, 1], 10), "lambda": -1.0, "step": np.tile(np.arange(10), 2),
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
    # 12 repeats: coverage is only roughly measured here (make validate runs 50 and requires ≥ 85 %)
    rates = [float(x.rstrip("%")) for c in rows if c.name.startswith("coverage")
             for x in c.detail.replace(",", ";").split() if x.endswith("%") and x[:-1].isdigit()]
    assert rates and min(rates) >= 66


def test_validate_importance_sampling_fast():
    rows = validate.check_importance_sampling(0.1)
    assert all(c.passed for c in rows), rows
