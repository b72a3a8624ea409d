"""The SMC sampler across a bias ladder (rea.smc.ladder*) and its forward-shooting kernel (rea.tps.kernel), against
exact answers of the toy LM; the HF decoder path on a tiny random llama."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from rea import exact
from rea.lm import DEFAULT_PROMPT, load_model
from rea.sampling import encode_prompt, score
from rea.smc import conditional_ess, next_lambda, prefix_observable, replicate_interval, smc_ladder_tail
from rea.smc.ladder import MOVE_STREAM
from rea.tps.kernel import draw_moves, shoot
from rea.validate.toy import ADV_TOKENS, single_thread


@pytest.fixture(scope="module")
def toy():
    return load_model("toy")


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


def exact_means(toy, length, lams, observable="count", tokens=ADV_TOKENS):
    return np.array([exact.exact_mean(toy, DEFAULT_PROMPT, length, observable, tokens=tokens, lam=x) for x in lams])


def ratio_z(log_x, log_truth):
    """(mean of X_r/truth − 1) in standard errors of that mean, over replicates' log-estimates ``[R, …]``."""
    x = np.exp(np.asarray(log_x) - log_truth)
    return (x.mean(axis=0) - 1.0) / (x.std(axis=0, ddof=1) / np.sqrt(len(x)))


# --------------------------------------------------------------------------------------------- the kernel


def test_kernel_leaves_the_tilted_law_invariant(toy):
    """Exact draws of p_λ ∝ e^{−λφ} p_M (L = 3, φ = Log-Prob, λ = 0.8: enumerated) stay p_λ-distributed after 10
    forward-shooting moves; the moves do change the completions, and their log-probs are the model's."""
    length, lam, n = 3, 0.8, 4000
    a, s0 = toy.transition_matrix, exact.prompt_state(toy, DEFAULT_PROMPT)
    seqs = np.array(list(itertools.product(range(a.shape[0]), repeat=length)))
    logp = np.log(a[s0, seqs[:, 0]]) + np.log(a[seqs[:, 0], seqs[:, 1]]) + np.log(a[seqs[:, 1], seqs[:, 2]])
    w = np.exp((1 - lam) * logp - np.max((1 - lam) * logp))
    rng = np.random.default_rng(0)
    tokens = seqs[rng.choice(len(seqs), size=n, p=w / w.sum())]
    obs = prefix_observable("logprob")
    lp = score(toy, DEFAULT_PROMPT, tokens)
    shot = shoot(toy, encode_prompt(toy, DEFAULT_PROMPT, length), tokens, lp, obs(tokens, lp), lam,
                 draw_moves(rng, n, 10, length), obs)
    target = exact.exact_mean(toy, DEFAULT_PROMPT, length, "logprob", lam=lam)
    assert abs(shot.phi.mean() - target) < 4 * shot.phi.std() / np.sqrt(n)
    assert abs(target - exact.exact_mean(toy, DEFAULT_PROMPT, length, "logprob", lam=-lam)) > 100 * shot.phi.std() / n
    assert 0.1 < shot.accepted.mean() / 10 < 0.9 and np.mean(np.any(shot.tokens != tokens, axis=1)) > 0.5
    np.testing.assert_allclose(score(toy, DEFAULT_PROMPT, shot.tokens), shot.logp, atol=1e-5)
    assert np.all(shot.generated >= 10) and np.all(shot.generated <= 10 * length)


# --------------------------------------------------------------------------------------------- exactness


def test_weighted_means_match_exact_where_unweighted_particles_and_annealed_chains_do_not(toy):
    """Adverb count, L = 10, λ down to −1.75: the weighted particle means are within 3 SE of the exact tilted means at
    every bias, while the plain means of the same particles and the paper's annealed chains (same kernel and ladder)
    fall many SE behind -- and per_bias() shows that gap."""
    length, lams, r = 10, [-0.25 * k for k in range(1, 8)], 10
    res = smc_ladder_tail(toy, DEFAULT_PROMPT, length, "count", [4.0], lambdas=lams, n_particles=500, n_moves=5,
                          n_replicates=r, tokens=ADV_TOKENS, seed=1, n_annealed=40, progress=False)
    df, truth = res.per_bias(), exact_means(toy, length, [0.0] + lams)
    z_weighted = (df["mean_phi"] - truth) / df["mean_phi_se"]
    plain = np.array([h["phi"].mean(axis=1) for h in res.histories])  # [R, K+1]
    z_plain = (plain.mean(0) - truth) / (plain.std(0, ddof=1) / np.sqrt(r))
    chains = np.concatenate([h["annealed_phi"][-1] for h in res.histories])
    z_annealed = (chains.mean() - truth[-1]) / (chains.std(ddof=1) / np.sqrt(len(chains)))
    assert np.all(np.abs(z_weighted) < 3), z_weighted.round(2).tolist()
    assert z_plain.min() < -5 and z_annealed < -5, (z_plain.round(1).tolist(), z_annealed)
    assert df["annealed_gap_se"].iloc[-1] < -5 and df["plain_gap_se"].min() < -5
    assert truth[-1] - truth[0] > 20 * df["mean_phi_se"].max()  # the tilt moves the mean by far more than the SE
    assert list(df.columns[:6]) == ["lam", "ess", "resampled", "log_z", "log_z_lo", "log_z_hi"]
    assert df["acceptance"].iloc[1:].between(0.3, 1).all() and df["n_ancestors"].iloc[-1] < 500


def test_z_hat_and_every_bias_tail_are_unbiased(toy):
    """400 small replicates (N = 20, 2 moves, L = 6, λ to −3): the mean of Ẑ(λ_k) matches Z(λ_k)/Z(0) and the mean of
    each bias's tail estimate the exact P(φ ≥ a), within 3 SE; the mean of log Ẑ sits below log Z (Jensen)."""
    length, lams, thr = 6, [-1.0, -2.0, -3.0], [3.0, 4.0]
    res = smc_ladder_tail(toy, DEFAULT_PROMPT, length, "count", thr, lambdas=lams, n_particles=20, n_moves=2,
                          n_replicates=400, tokens=ADV_TOKENS, seed=3, progress=False, batch_size=10**5)
    log_z = np.array([exact.log_partition(toy, DEFAULT_PROMPT, length, x, "count", tokens=ADV_TOKENS) for x in lams])
    assert np.all(np.abs(ratio_z(res.log_z_reps[:, 1:], log_z)) < 3)
    assert log_z[-1] > 4  # Z(−3)/Z(0) = e^4.19: a constant (or a plain mean of e^{−λφ}) would miss it
    dist = exact.count_distribution(toy, DEFAULT_PROMPT, length, "count", tokens=ADV_TOKENS)
    z_tails = ratio_z(res.log_tail_reps[:, 1:, :], dist.log_tail(thr)[None, :])
    assert np.all(np.abs(z_tails) < 3), z_tails.round(2)
    jensen = res.log_z_reps[:, -1].mean() - log_z[-1]
    assert jensen < -3 * res.log_z_reps[:, -1].std() / np.sqrt(400)


@pytest.mark.parametrize("side", ["upper", "lower"])
def test_both_tails_match_exact(toy, side):
    """Upper tail of the adverb count (λ < 0) and lower tail of Log-Prob (λ > 0): the pooled estimates at the bias
    chosen for each threshold are within 4 SE of the exact tails, and the intervals cover them."""
    if side == "upper":
        length, obs, tokens, lams, thr = 8, "count", ADV_TOKENS, [-0.5, -1.0, -1.5], [3.0, 4.0]
        dist = exact.count_distribution(toy, DEFAULT_PROMPT, length, "count", tokens=ADV_TOKENS)
        truth = dist.log_tail(thr)
    else:
        length, obs, tokens, lams, thr = 3, "logprob", None, [0.2, 0.4], [-14.0, -16.0]
        truth = exact.logprob_distribution(toy, DEFAULT_PROMPT, length).log_cdf(thr)
    res = smc_ladder_tail(toy, DEFAULT_PROMPT, length, obs, thr, lambdas=lams, n_particles=200, n_moves=3,
                          n_replicates=10, tokens=tokens, seed=4, side=side, progress=False)
    chosen = res.log_tail_reps[:, res.bias_index, np.arange(len(thr))]
    assert np.all(np.abs(ratio_z(chosen, truth)) < 4)
    assert np.all((res.ci_low <= np.exp(truth)) & (np.exp(truth) <= res.ci_high)), (res.table(), np.exp(truth))
    assert np.all(res.bias_index > 0) and res.p.shape == res.ci_low.shape == (2,)
    log_z = [exact.log_partition(toy, DEFAULT_PROMPT, length, x, obs, tokens=tokens) for x in lams]
    assert np.all(np.abs(ratio_z(res.log_z_reps[:, 1:], np.array(log_z))) < 4)


# --------------------------------------------------------------------------------------------- intervals


@pytest.fixture(scope="module")
def coverage_runs(toy):
    """100 repeats × 5 replicates of N = 150 particles (3 moves, L = 6, λ = −1 … −5), as one batched run -> exact
    tails ``[2]``, the share of repeats with a finite interval and the coverage among those ``[2]``."""
    length, thr, r, k = 6, [3.0, 6.0], 5, 100
    with single_thread():
        res = smc_ladder_tail(toy, DEFAULT_PROMPT, length, "count", thr, lambdas=[-1.0, -2.0, -3.0, -4.0, -5.0],
                              n_particles=150, n_moves=3, n_replicates=r * k, tokens=ADV_TOKENS, seed=5,
                              confidence=0.95, progress=False, batch_size=10**5)
    truth = np.exp(exact.count_distribution(toy, DEFAULT_PROMPT, length, "count", tokens=ADV_TOKENS).log_tail(thr))
    reps = [res.replicates(slice(i * r, (i + 1) * r)) for i in range(k)]
    finite = np.array([np.isfinite(rep.ci_high) for rep in reps])  # [k, S]: all-zero repeats give [0, ∞)
    covered = np.array([(rep.ci_low <= truth) & (truth <= rep.ci_high) for rep in reps])
    return truth, finite.mean(axis=0), np.sum(covered & finite, axis=0) / np.maximum(finite.sum(axis=0), 1)


@pytest.mark.slow
def test_interval_covers_a_tail_of_2e_3(coverage_runs):
    """P(count ≥ 3 in 6 tokens) = 1.7e-3: Cox's 95 % interval over 5 replicates is finite and covers it in ≥ 90 % of
    100 repeats (measured: 0.96)."""
    truth, finite, coverage = coverage_runs
    assert truth[0] < 2e-3 and finite[0] == 1 and coverage[0] >= 0.9, coverage


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="forward shooting cannot refresh the early tokens at strong bias, so N = 150 "
                   "particles rarely hold the all-adverb prefixes that carry P(φ = 6) = 1.6e-7: measured, 65 of 100 "
                   "repeats have no particle in the tail and the intervals of the other 35 cover it 4 times "
                   "(rea.smc.ladder, Limits)")
def test_interval_covers_a_tail_of_2e_7(coverage_runs):
    truth, finite, coverage = coverage_runs
    assert truth[1] < 1e-6 and finite[1] >= 0.9 and coverage[1] >= 0.9, (finite, coverage)


# --------------------------------------------------------------------------------------------- schedule


def test_next_lambda_hits_the_conditional_ess_target():
    rng = np.random.default_rng(0)
    phi, log_w = rng.poisson(2.0, 300).astype(float), rng.normal(0, 0.5, 300)
    for target in (0.3, 0.5, 0.9):
        lam = next_lambda(log_w, phi, -1.0, -1, target, -50.0)
        floor = np.exp(log_w)[phi == phi.max()].sum() / np.exp(log_w).sum()
        assert lam < -1.0 and conditional_ess(log_w, phi, lam + 1.0) == pytest.approx(floor + (1 - floor) * target,
                                                                                       abs=1e-6)
    assert next_lambda(log_w, phi, -1.0, -1, 0.5, -1.001) == -1.001  # the limit is closer than the target step
    assert next_lambda(log_w, np.full(300, 2.0), 0.0, 1, 0.5, 10.0) == pytest.approx(1 / 3)
    assert conditional_ess(log_w, phi, 0.0) == pytest.approx(1.0)


def test_auto_ladder_reaches_the_threshold_and_is_reused(toy, tmp_path):
    """The pilot places each bias where the conditional ESS of the step is the target (above the tie floor, so at
    least the target), stops once 30 % of its weighted particles reach the deepest threshold, and the ladder is
    stored with the run and reused by a rerun; other thresholds (another target) are refused."""
    kw = dict(n_particles=100, n_moves=2, n_replicates=2, tokens=ADV_TOKENS, seed=2, ess_target=0.7,
              target_fraction=0.3, progress=False, out_dir=tmp_path)
    res = smc_ladder_tail(toy, DEFAULT_PROMPT, 8, "count", [2.0, 3.0], **kw)
    ladder = json.loads((tmp_path / "ladder.json").read_text())
    lams = np.array(ladder["lambdas"])
    assert ladder["reached"] and len(lams) >= 3 and np.all(np.diff(np.r_[0.0, lams]) < 0)
    assert np.all(np.array(ladder["cess"]) >= 0.7 - 1e-6) and np.median(ladder["cess"]) < 0.8
    assert res.settings["ladder"]["lambdas"] == ladder["lambdas"] and res.pilot_tokens == ladder["pilot_tokens"] > 0
    assert res.tokens == res.pilot_tokens + sum(int(np.sum(h["generated"])) for h in res.histories)
    np.testing.assert_array_equal(res.lambdas[1:], lams)
    again = smc_ladder_tail(toy, DEFAULT_PROMPT, 8, "count", [2.0, 3.0], **kw)  # everything loaded: no pilot rerun
    np.testing.assert_array_equal(again.log_z_reps, res.log_z_reps)
    with pytest.raises(ValueError, match=r"other settings \(target\)"):
        smc_ladder_tail(toy, DEFAULT_PROMPT, 8, "count", [2.0, 4.0], **kw)


# --------------------------------------------------------------------------------------------- runs


def test_resume_is_bit_identical_and_other_settings_are_refused(toy, tmp_path):
    kw = dict(lambdas=[-0.5, -1.0, -1.5, -2.0], n_particles=30, n_moves=2, n_replicates=3, tokens=ADV_TOKENS, seed=7,
              n_annealed=4, progress=False, batch_size=60)
    whole = smc_ladder_tail(toy, DEFAULT_PROMPT, 8, "count", [3.0], **kw)
    part = smc_ladder_tail(toy, DEFAULT_PROMPT, 8, "count", [3.0], out_dir=tmp_path, max_steps=2, **kw)
    assert not part.complete and len(part.lambdas) == 3 and whole.complete
    (tmp_path / "replicate_00001.npz").unlink()  # as if replicate 1 had never been saved
    resumed = smc_ladder_tail(toy, DEFAULT_PROMPT, 8, "count", [3.0], out_dir=tmp_path, **kw)
    assert resumed.complete
    for a, b in zip(whole.histories, resumed.histories):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(whole.p, resumed.p)
    assert whole.tokens == resumed.tokens and whole.tokens_annealed == resumed.tokens_annealed > 0
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["model"] == "toy" and prov["seed"] == 7 and prov["versions"]["numpy"] and prov["params"]["n_moves"] == 2
    assert resumed.provenance["params"]["n_replicates"] == 3
    with pytest.raises(ValueError, match=r"^out_dir .* other settings \(tau\)[^\n]*$"):
        smc_ladder_tail(toy, DEFAULT_PROMPT, 8, "count", [3.0], out_dir=tmp_path, **{**kw, "tau": 0.9})


@pytest.mark.parametrize("kw, name", [
    (dict(n_particles=1), "n_particles"), (dict(n_particles=2.5), "n_particles"), (dict(tau=0.0), "tau"),
    (dict(tau=1.5), "tau"), (dict(ess_target=1.0), "ess_target"), (dict(ess_target=0), "ess_target"),
    (dict(lambdas=[]), "lambdas"), (dict(lambdas=[-1.0, -0.5]), "lambdas"), (dict(lambdas=[0.5, -1.0]), "lambdas"),
    (dict(lambdas=[0.0, -1.0]), "lambdas"), (dict(lambdas="fast"), "lambdas"), (dict(lambdas=[np.nan]), "lambdas"),
    (dict(n_moves=-1), "n_moves"), (dict(n_replicates=0), "n_replicates"), (dict(max_steps=0), "max_steps"),
    (dict(side="both"), "side"), (dict(thresholds=[]), "thresholds"), (dict(interval="wald"), "interval"),
    (dict(batching="x"), "batching"), (dict(lambda_max=0.0), "lambda_max"), (dict(n_annealed=-2), "n_annealed"),
    (dict(target_fraction=0.0), "target_fraction"), (dict(confidence=1.0), "confidence"), (dict(length=0), "length"),
])
def test_bad_inputs_raise_one_line_errors(toy, kw, name):
    args = dict(length=5, observable="repeats", thresholds=[2.0], lambdas=[-1.0], n_particles=10, n_replicates=2,
                progress=False)
    args.update(kw)
    with pytest.raises(ValueError) as err:
        smc_ladder_tail(toy, DEFAULT_PROMPT, **args)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_tiny_llama_through_the_hf_decoder(tiny_llama):
    """A random llama (fast decoder, continuous batching): shapes, log Ẑ(0) = 0, tokens = N·L plus Σ (L − cut) over
    every move drawn (rejected ones included), and lockstep batching gives the same particles."""
    length, n, m, lams, seed = 6, 8, 2, [-0.5, -1.0], 3
    kw = dict(lambdas=lams, n_particles=n, n_moves=m, n_replicates=2, seed=seed, progress=False, n_annealed=2)
    res = smc_ladder_tail(tiny_llama, "Once upon", length, "repeats", [1.0, 2.0], **kw)
    assert res.log_z_reps.shape == (2, 3) and res.log_tail_reps.shape == (2, 3, 2) and res.p.shape == (2,)
    assert np.all(res.log_z_reps[:, 0] == 0) and res.log_z[0] == 0 and len(res.per_bias()) == 3
    expected = 0
    for r in range(2):
        expected += n * length
        for k in range(1, len(lams) + 1):
            cut = draw_moves(np.random.default_rng([seed, MOVE_STREAM, 1, r, k]), n, m, length).cut
            expected += int(np.sum(length - cut))
    assert res.tokens == expected
    lockstep = smc_ladder_tail(tiny_llama, "Once upon", length, "repeats", [1.0, 2.0], batching="lockstep", **kw)
    for a, b in zip(res.histories, lockstep.histories):
        np.testing.assert_array_equal(a["phi"], b["phi"])
        np.testing.assert_allclose(a["log_norm"], b["log_norm"], rtol=1e-9)


def test_replicate_interval_is_reused(toy):
    """The pooled tail is the mean of the chosen bias's replicate estimates, with rea.smc's interval."""
    res = smc_ladder_tail(toy, DEFAULT_PROMPT, 6, "count", [2.0], lambdas=[-1.0, -2.0], n_particles=50, n_moves=2,
                          n_replicates=4, tokens=ADV_TOKENS, seed=8, progress=False)
    mean, lo, hi = replicate_interval(res.log_tail_reps[:, res.bias_index[0], 0], 0.95)
    assert res.p[0] == pytest.approx(np.exp(mean)) and res.ci_low[0] == pytest.approx(np.exp(lo))
    assert res.ci_high[0] == pytest.approx(np.exp(hi))
