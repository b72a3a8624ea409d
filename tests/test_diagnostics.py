"""Diagnostics against exact answers: hand-computed Gelman–Rubin, AR(1) correlation times, bootstrap coverage."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rea.stats import (
    TiltedMBAR,
    bootstrap_over_chains,
    burn_in_mask,
    chain_resample_index,
    drop_burn_in,
    gelman_rubin,
    gelman_rubin_by_bias,
    half_vs_full_bias,
    n_burn_in,
    order_statistic_index,
    statistical_inefficiency,
    statistical_inefficiency_multiple,
    subsample,
)


def ar1(rng, rho, n, chains=1):
    """Stationary AR(1) with unit marginal variance: g = (1 + ρ)/(1 − ρ)."""
    x = np.empty((chains, n))
    x[:, 0] = rng.normal(size=chains)
    eps = rng.normal(size=(chains, n)) * np.sqrt(1 - rho**2)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + eps[:, t]
    return x


# --------------------------------------------------------------------------------------------- burn-in


def test_burn_in_mask_drops_first_tenth_of_each_segment():
    steps = np.concatenate([np.arange(10), np.arange(40_000)])
    length = np.concatenate([np.full(10, 10), np.full(40_000, 40_000)])
    keep = burn_in_mask(steps, length)
    assert keep[:10].tolist() == [False] + [True] * 9
    assert (~keep[10:]).sum() == 4000 and keep[10 + 4000] and not keep[10 + 3999]
    with pytest.raises(ValueError, match="^steps_within_segment"):
        burn_in_mask([0, 10], 10)
    with pytest.raises(ValueError, match="^fraction"):
        burn_in_mask([0, 1], 10, fraction=1.0)


def test_one_burn_in_rule_everywhere():
    """⌊0.1·N⌋ in diagnostics, tps_mbar (via drop_burn_in) and TPSResult.post_burn_in alike -- including N where
    ⌊·⌋ and ⌈·⌉ differ (4, 25) and where 0.1·N is inexact in floating point (30: 3.0000000000000004)."""
    from rea.tps import TPSResult

    assert [n_burn_in(n) for n in (1, 4, 10, 25, 30, 40_000)] == [0, 0, 1, 2, 3, 4000]
    assert n_burn_in(np.array([4, 30])).tolist() == [0, 3] and n_burn_in(30, 0.2) == 6
    for n in (4, 25, 30):
        df = pd.DataFrame({"chain": 0, "lam": -1.0, "step": np.arange(n)})
        rec = df.rename(columns={"lam": "lambda"})
        res = TPSResult(config=type("C", (), {"n_steps": n})(), records=rec, final=None, provenance={})
        assert drop_burn_in(df).step.min() == res.post_burn_in().step.min() == n_burn_in(n)
        assert burn_in_mask(np.arange(n), n).sum() == n - n_burn_in(n)
    with pytest.raises(ValueError, match="^fraction"):
        n_burn_in(10, 1.0)


def test_drop_burn_in_tidy_table():
    rows = [(c, lam, s) for c in range(2) for lam in (-0.1, 0.1) for s in range(20)]
    df = pd.DataFrame(rows, columns=["chain", "lam", "step"]).sample(frac=1.0, random_state=0)
    out = drop_burn_in(df)
    assert len(out) == 4 * 18
    assert out.groupby(["chain", "lam"]).step.min().eq(2).all()
    with pytest.raises(ValueError, match="^df has no column 'bias'"):
        drop_burn_in(df, by=("chain", "bias"))


# --------------------------------------------------------------------------------------------- Gelman-Rubin


def test_gelman_rubin_hand_computed():
    # J = 2, L = 3: means 2 and 3, grand mean 2.5; B = 3/1 · (0.25 + 0.25) = 1.5; s² = 1, 1 -> W = 1
    # GR = ((2/3)·1 + 1.5/3)/1 = 7/6
    assert gelman_rubin([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]]) == pytest.approx(7 / 6)
    # J = 3, L = 2: means 1.5, 3.5, 5; grand 10/3; B = 2/2 · Σ(ȳ−ȳ̄)² = 6.1667; s² = 0.5, 0.5, 2 -> W = 1
    y = [[1.0, 2.0], [3.0, 4.0], [4.0, 6.0]]
    B = sum((m - 10 / 3) ** 2 for m in (1.5, 3.5, 5.0))
    assert gelman_rubin(y) == pytest.approx((0.5 * 1.0 + B / 2) / 1.0)


def test_gelman_rubin_mixing_vs_stuck():
    rng = np.random.default_rng(0)
    good = ar1(rng, 0.5, 2000, chains=8)
    gr_good = gelman_rubin(good)
    assert abs(gr_good - 1) < 0.02
    stuck = good + np.arange(8)[:, None] * 1.5  # chains stuck around different means
    assert gelman_rubin(stuck) > 2
    assert gelman_rubin(np.array([[1.0, 1.0], [2.0, 2.0]])) == np.inf
    assert np.isnan(gelman_rubin(np.ones((3, 4))))
    with pytest.raises(ValueError, match=r"^y must have shape \[J, L\]"):
        gelman_rubin(np.ones((1, 10)))


def test_gelman_rubin_by_bias_flags_the_stuck_bias():
    rng = np.random.default_rng(1)
    J, L = 6, 500
    y, chain, lam = [], [], []
    for lam_k, offset in ((-0.1, 0.0), (0.1, 3.0)):  # λ = 0.1: chains stuck at different levels
        x = ar1(rng, 0.3, L, chains=J) + offset * np.arange(J)[:, None]
        y.append(x.ravel())
        chain.append(np.repeat(np.arange(J), L))
        lam.append(np.full(J * L, lam_k))
    df = gelman_rubin_by_bias(np.concatenate(y), np.concatenate(chain), np.concatenate(lam))
    assert df.lam.tolist() == [-0.1, 0.1]
    assert df.passed.tolist() == [True, False]
    assert df.n_chains.tolist() == [J, J] and df.length.tolist() == [L, L]


# --------------------------------------------------------------------------------------------- correlation


def test_statistical_inefficiency_ar1_exact():
    rng = np.random.default_rng(2)
    rho = 0.8  # g = 1.8/0.2 = 9
    x = ar1(rng, rho, 50_000)[0]
    g = statistical_inefficiency(x)
    assert g == pytest.approx((1 + rho) / (1 - rho), rel=0.15)
    assert statistical_inefficiency(rng.normal(size=5000)) == pytest.approx(1.0, abs=0.15)
    assert statistical_inefficiency(np.ones(10)) == np.inf
    idx = subsample(x)
    assert len(idx) == pytest.approx(x.size / g, rel=0.05)
    sub = x[idx]
    # stride g leaves the lag-1 correlation ρ^g = 0.13 (from 0.8)
    assert np.corrcoef(sub[:-1], sub[1:])[0, 1] == pytest.approx(rho**g, abs=0.05)
    assert subsample(np.ones(7)).tolist() == [0]


def test_statistical_inefficiency_multiple_pools_chains_and_sees_disagreement():
    rng = np.random.default_rng(5)
    rho = 0.8  # g = 9
    x = ar1(rng, rho, 5000, chains=10)
    g = statistical_inefficiency_multiple(list(x))
    assert g == pytest.approx((1 + rho) / (1 - rho), rel=0.15)
    # chains at different levels (not mixed): the pooled-mean fluctuations stay correlated, g grows
    assert statistical_inefficiency_multiple(list(x + 2.0 * np.arange(10)[:, None])) > 5 * g
    assert statistical_inefficiency_multiple([np.ones(5), np.ones(8)]) == np.inf
    with pytest.raises(ValueError, match="^series"):
        statistical_inefficiency_multiple([np.ones(1)])


# --------------------------------------------------------------------------------------------- bootstrap


def test_order_statistic_rule():
    assert order_statistic_index(100, 0.96) == (2, 97)  # 3rd smallest / 3rd largest
    assert order_statistic_index(1000, 0.95) == (25, 974)
    assert order_statistic_index(20, 0.9) == (1, 18)
    with pytest.raises(ValueError, match="^n_boot"):
        order_statistic_index(49, 0.96)  # fewer than 1 replica beyond each end


def test_chain_resample_index_treats_repeats_as_distinct_chains():
    ids = np.array(["a", "a", "b", "c", "c", "c"])
    idx, new = chain_resample_index(ids, ["c", "a", "c"])
    assert idx.tolist() == [3, 4, 5, 0, 1, 3, 4, 5]
    assert new.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="^selected chain 'z'"):
        chain_resample_index(ids, ["z"])


def test_bootstrap_interval_is_the_order_statistic_and_covers():
    """Chains with a chain-level random effect: the true mean is covered in ≥ 85 % of 60 repeats."""
    rng = np.random.default_rng(3)
    J, L, mu = 12, 50, 1.0

    def make():
        return mu + rng.normal(0, 0.5, (J, 1)) + rng.normal(0, 1, (J, L))

    y = make()
    res = bootstrap_over_chains(np.arange(J), lambda sel: y[sel].mean(), rng=rng)
    srt = np.sort(res.replicas)
    assert res.ci_low == srt[2] and res.ci_high == srt[97]
    assert res.estimate == pytest.approx(y.mean()) and res.n_valid == 100
    assert res.half_width == pytest.approx((srt[97] - srt[2]) / 2)
    hits = 0
    reps = 60
    for _ in range(reps):
        y = make()
        r = bootstrap_over_chains(np.arange(J), lambda sel, y=y: y[sel].mean(), rng=rng)
        hits += r.ci_low <= mu <= r.ci_high
    print("bootstrap-over-chains coverage (J = 12):", hits / reps)
    assert hits / reps >= 0.85


def test_bootstrap_t_interval_formula_and_coverage_with_few_skewed_chains():
    """interval="t": θ̂ ± t_{J−1}·(q84 − q16)/2·√(J/(J−1)). On J = 6 correlated chains of a skewed estimator
    (ln of the mean of e^x, x an AR(1) with g = 19) it covers 0.95–0.975 over seeds 5–10 (200 repeats each), the
    percentile interval 0.79–0.89 -- why tps_mbar's bootstrap defaults to the t interval."""
    rng = np.random.default_rng(5)
    J = 6
    y = np.exp(ar1(rng, 0.9, 200, chains=J))
    res = bootstrap_over_chains(np.arange(J), lambda sel: np.log(y[sel].mean()), rng=rng, interval="t")
    q16, q84 = np.percentile(res.replicas, [15.865525393145708, 84.13447460685429])
    half = stats.t.ppf(0.98, J - 1) * np.sqrt(J / (J - 1)) * (q84 - q16) / 2
    assert res.ci_low == pytest.approx(res.estimate - half) and res.ci_high == pytest.approx(res.estimate + half)
    assert res.interval == "t" and res.n_chains == J
    hits = {"percentile": 0, "t": 0}
    reps = 200
    for _ in range(reps):
        y = np.exp(ar1(rng, 0.9, 200, chains=J))
        for iv in hits:
            r = bootstrap_over_chains(np.arange(J), lambda sel, y=y: np.log(y[sel].mean()), rng=rng, interval=iv)
            hits[iv] += r.ci_low <= 0.5 <= r.ci_high  # ln E[e^x] = 1/2 for x ~ N(0, 1)
    rate = {k: v / reps for k, v in hits.items()}
    print("bootstrap coverage, 6 skewed chains:", rate)
    assert rate["t"] >= 0.92 and rate["t"] >= rate["percentile"] + 0.03
    with pytest.raises(ValueError, match="^interval"):
        bootstrap_over_chains(np.arange(J), np.mean, interval="bca")
    with pytest.raises(ValueError, match="^n_boot"):
        bootstrap_over_chains(np.arange(J), np.mean, n_boot=10, interval="t")


def test_bootstrap_over_chains_reruns_mbar_and_covers_exact_tail():
    """Whole pipeline per replica: chains span all biases (like annealed TPS), MBAR on the selected chains."""
    rng = np.random.default_rng(4)
    lams = np.array([-4.5, -3.0, -1.5, 0.0])
    J, per = 8, 40
    phi = np.concatenate([rng.normal(-lam, 1.0, J * per) for lam in lams])
    lam = np.repeat(lams, J * per)
    chain = np.tile(np.repeat(np.arange(J), per), lams.size)

    def pipeline(selected):
        idx, _ = chain_resample_index(chain, selected)
        mb = TiltedMBAR(phi[idx], lam[idx], min_overlap=0.0)
        return mb.tail([4.0, 5.0]).log_p.to_numpy()

    res = bootstrap_over_chains(np.arange(J), pipeline, n_boot=100, rng=rng)
    truth = np.log(stats.norm.sf([4.0, 5.0]))
    assert res.replicas.shape == (100, 2)
    assert np.all((res.ci_low <= truth) & (truth <= res.ci_high))


def test_bootstrap_failed_replicas_become_nan():
    calls = {"n": 0}

    def fn(sel):
        calls["n"] += 1
        if calls["n"] % 10 == 0:
            raise RuntimeError("MBAR failed")
        return float(np.mean(sel))

    res = bootstrap_over_chains(np.arange(5), fn, rng=0, on_error="nan")
    assert res.n_valid == 90 and np.isnan(res.replicas).sum() == 10
    finite = np.sort(res.replicas[np.isfinite(res.replicas)])
    lo, hi = order_statistic_index(90, 0.96)
    assert res.ci_low == finite[lo] and res.ci_high == finite[hi]
    with pytest.raises(RuntimeError):
        calls["n"] = 0
        bootstrap_over_chains(np.arange(5), fn, rng=0)


def test_half_vs_full_bias():
    df = half_vs_full_bias([1.0, 2.0, 0.0], [1.5, 2.0, 0.0], [0.5, 1.0, 0.0])
    assert df.delta.tolist() == [0.5, 0.0, 0.0]
    assert df.rel_to_h.iloc[0] == pytest.approx(1 / 3) and df.rel_to_ci.iloc[0] == pytest.approx(1.0)
    assert np.isnan(df.rel_to_h.iloc[2]) and np.isnan(df.rel_to_ci.iloc[2])
    with pytest.raises(ValueError, match="^h_first_half, h_full and ci_half_width"):
        half_vs_full_bias([1.0, 2.0], [1.0, 2.0, 3.0], 1.0)
