"""The SMC sampler across a bias ladder (rea.smc.ladder*) and its forward- and head-shooting kernel (rea.tps.kernel),
against exact answers of the toy LM; the HF decoder path on a tiny random llama."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from rea import exact
from rea.lm import DEFAULT_PROMPT
from rea.sampling import LogitBias, encode_prompt, regenerate, score
from rea.smc import conditional_ess, next_lambda, prefix_observable, replicate_interval, smc_ladder_tail
from rea.smc.ladder import MOVE_STREAM
from rea.tps.kernel import draw_moves, head_log_alpha, head_moves, local_tilt, shoot
from rea.validate.toy import ADV_TOKENS, single_thread

pytestmark = pytest.mark.usefixtures("single_thread")  # the toy's tiny ops (tests/conftest.py)


def exact_means(toy, length, lams, observable="count", tokens=ADV_TOKENS):
    return np.array([exact.exact_mean(toy, DEFAULT_PROMPT, length, observable, tokens=tokens, lam=x) for x in lams])


def ratio_z(log_x, log_truth):
    """(mean of X_r/truth − 1) in standard errors of that mean, over replicates' log-estimates ``[R, …]``."""
    x = np.exp(np.asarray(log_x) - log_truth)
    return (x.mean(axis=0) - 1.0) / (x.std(axis=0, ddof=1) / np.sqrt(len(x)))


# --------------------------------------------------------------------------------------------- the kernel


def tilted_draws(toy, n, rng, length=3, lam=0.8):
    """``n`` exact draws of p_λ ∝ e^{−λφ} p_M (φ = Log-Prob, L = 3: enumerated) -> (tokens ``[n, L]``, their
    per-token log p_M ``[n, L]``, φ ``[n]``, the exact first-token marginal of p_λ ``[V]``)."""
    a, s0 = toy.transition_matrix, exact.prompt_state(toy, DEFAULT_PROMPT)
    seqs = np.array(list(itertools.product(range(a.shape[0]), repeat=length)))
    logp = np.log(a[s0, seqs[:, 0]]) + np.log(a[seqs[:, 0], seqs[:, 1]]) + np.log(a[seqs[:, 1], seqs[:, 2]])
    w = np.exp((1 - lam) * logp - np.max((1 - lam) * logp))
    w /= w.sum()
    tokens = seqs[rng.choice(len(seqs), size=n, p=w)]
    lp = score(toy, DEFAULT_PROMPT, tokens)
    return tokens, lp, prefix_observable("logprob")(tokens, lp), np.bincount(seqs[:, 0], w, minlength=a.shape[0])


def first_token_chi2(tokens, marginal) -> float:
    """Pearson's χ² of the first tokens' counts against n · ``marginal`` (V − 1 = 52 degrees of freedom on the toy:
    mean 52, sd 10; P(χ² > 95) = 1e-4)."""
    counts = np.bincount(tokens[:, 0], minlength=len(marginal))
    return float(np.sum((counts - len(tokens) * marginal) ** 2 / (len(tokens) * marginal)))


def test_kernel_leaves_the_tilted_law_invariant(toy):
    """Exact draws of p_λ ∝ e^{−λφ} p_M (L = 3, φ = Log-Prob, λ = 0.8: enumerated) stay p_λ-distributed after 10
    forward-shooting moves; the moves do change the completions, and their log-probs are the model's."""
    length, lam, n = 3, 0.8, 4000
    rng = np.random.default_rng(0)
    tokens, lp, phi, _ = tilted_draws(toy, n, rng, length, lam)
    obs = prefix_observable("logprob")
    shot = shoot(toy, encode_prompt(toy, DEFAULT_PROMPT, length), tokens, lp, phi, lam,
                 draw_moves(rng, n, 10, length), obs)
    target = exact.exact_mean(toy, DEFAULT_PROMPT, length, "logprob", lam=lam)
    assert abs(shot.phi.mean() - target) < 4 * shot.phi.std() / np.sqrt(n)
    assert abs(target - exact.exact_mean(toy, DEFAULT_PROMPT, length, "logprob", lam=-lam)) > 100 * shot.phi.std() / n
    assert 0.1 < shot.accepted.mean() / 10 < 0.9 and np.mean(np.any(shot.tokens != tokens, axis=1)) > 0.5
    np.testing.assert_allclose(score(toy, DEFAULT_PROMPT, shot.tokens), shot.logp, atol=1e-5)
    assert np.all(shot.generated >= 10) and np.all(shot.generated <= 10 * length)


def _head_shot(toy, head_fraction, seed=0):
    length, lam, n = 3, 0.8, 4000
    rng = np.random.default_rng(seed)
    tokens, lp, phi, marginal = tilted_draws(toy, n, rng, length, lam)
    moves = draw_moves(rng, n, 10, length, head_fraction)
    shot = shoot(toy, encode_prompt(toy, DEFAULT_PROMPT, length), tokens, lp, phi, lam, moves,
                 prefix_observable("logprob"))
    target = exact.exact_mean(toy, DEFAULT_PROMPT, length, "logprob", lam=lam)
    return tokens, moves, shot, marginal, (shot.phi.mean() - target) / (shot.phi.std() / np.sqrt(n))


@pytest.mark.parametrize("head_fraction", [1.0, 0.5])
def test_head_moves_and_the_mixture_leave_the_tilted_law_invariant(toy, head_fraction):
    """Exact p_λ draws (as above) stay p_λ-distributed after 10 head moves (or a 50/50 mixture with forward shooting):
    mean φ within 4 SE of the exact tilted mean and the first-token law (what head moves redraw) within χ² < 95 of
    the exact marginal; tokens generated = Σ c over head moves + Σ (L − c) over forward ones, scored = Σ (L − c)
    over head moves."""
    tokens, moves, shot, marginal, z = _head_shot(toy, head_fraction)
    assert abs(z) < 4 and first_token_chi2(shot.tokens, marginal) < 95, (z, first_token_chi2(shot.tokens, marginal))
    assert first_token_chi2(tokens, marginal) < 95
    assert 0.1 < shot.accepted.mean() / 10 < 0.9 and np.mean(shot.tokens[:, 0] != tokens[:, 0]) > 0.5
    np.testing.assert_allclose(score(toy, DEFAULT_PROMPT, shot.tokens), shot.logp, atol=1e-5)
    length, head = tokens.shape[1], moves.head
    assert head.mean() == pytest.approx(head_fraction, abs=0.02)
    np.testing.assert_array_equal(shot.generated, np.sum(np.where(head, moves.cut + 1, length - moves.cut), axis=1))
    np.testing.assert_array_equal(shot.scored, np.sum(np.where(head, length - moves.cut - 1, 0), axis=1))


def test_head_moves_without_the_suffix_ratio_break_the_tilted_law(toy, monkeypatch):
    """The check above can fail: accepting head moves with e^{−λΔφ} alone (the suffix's likelihood ratio
    p_M(s | x'_{<c}) / p_M(s | x_{<c}) dropped) drives the first-token law and mean φ far from p_λ."""
    from rea.tps import kernel

    def no_ratio(logp, new_logp, cut, lam, phi, new_phi):
        return np.minimum(0.0, -np.asarray(lam) * (np.asarray(new_phi) - np.asarray(phi)))

    monkeypatch.setattr(kernel, "head_log_alpha", no_ratio)
    _, _, shot, marginal, z = _head_shot(toy, 1.0)
    assert abs(z) > 10 and first_token_chi2(shot.tokens, marginal) > 200, (z, first_token_chi2(shot.tokens, marginal))


def test_head_acceptance_equals_the_formula_by_hand(toy):
    """One head move of one completion (L = 3, cut c = 2): the proposal's head is the Gumbel-max draw of p_M with the
    move's uniforms (as forward shooting from cut 0 draws it), the suffix x_2 is kept, and log α is
    log a(x'_1, x_2) − log a(x_1, x_2) − λ(φ' − φ) with a the toy's transition matrix, φ = Log-Prob."""
    length, lam = 3, 0.3
    a, s0 = toy.transition_matrix, exact.prompt_state(toy, DEFAULT_PROMPT)
    prompt_ids, obs = encode_prompt(toy, DEFAULT_PROMPT, length), prefix_observable("logprob")
    x = np.array([[5, 7, 11]])
    lp = score(toy, DEFAULT_PROMPT, x)
    u = np.random.default_rng(1).random((1, length))
    drawn, _, _ = regenerate(toy, prompt_ids, x, np.array([0]), u)
    for accept in (0.0, 1.0 - 1e-12):
        new, new_lp, new_phi, ok = head_moves(toy, prompt_ids, x, lp, obs(x, lp), lam, np.array([2]), u,
                                              np.array([accept]), obs)
        if ok[0]:
            proposal, proposal_lp = new, new_lp
    np.testing.assert_array_equal(proposal[0], [drawn[0, 0], drawn[0, 1], 11])
    h0, h1 = proposal[0, :2]
    by_hand = np.log([a[s0, h0], a[h0, h1], a[h1, 11]])
    np.testing.assert_allclose(proposal_lp[0], by_hand, rtol=1e-5)
    phi, phi_new = np.log([a[s0, 5], a[5, 7], a[7, 11]]).sum(), by_hand.sum()
    log_alpha = min(0.0, np.log(a[h1, 11]) - np.log(a[7, 11]) - lam * (phi_new - phi))
    got = head_log_alpha(lp, proposal_lp, np.array([2]), lam, np.array([phi]), np.array([phi_new]))
    assert got[0] == pytest.approx(log_alpha, abs=1e-5) and log_alpha < -0.1  # a real rejection chance
    new, _, _, ok = head_moves(toy, prompt_ids, x, lp, obs(x, lp), lam, np.array([2]), u,
                               np.array([np.exp(log_alpha) + 1e-4]), obs)
    assert not ok[0] and np.array_equal(new, x)


def count_tilted_draws(toy, n, rng, length=3, lam=-1.5):
    """``n`` exact draws of p_λ ∝ e^{−λφ} p_M for φ = the adverb count (L = 3: enumerated) -> (tokens, per-token
    log p_M, φ, the exact first-token marginal ``[V]``, the exact mean of φ)."""
    a, s0 = toy.transition_matrix, exact.prompt_state(toy, DEFAULT_PROMPT)
    seqs = np.array(list(itertools.product(range(a.shape[0]), repeat=length)))
    obs = prefix_observable("count", toy, tokens=ADV_TOKENS)
    logp = np.log(a[s0, seqs[:, 0]]) + sum(np.log(a[seqs[:, t - 1], seqs[:, t]]) for t in range(1, length))
    phi_all = np.isin(seqs, obs.token_ids).sum(axis=1)
    log_w = logp - lam * phi_all
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    tokens = seqs[rng.choice(len(seqs), size=n, p=w)]
    lp = score(toy, DEFAULT_PROMPT, tokens)
    return tokens, lp, obs(tokens, lp), np.bincount(seqs[:, 0], w, minlength=a.shape[0]), float(w @ phi_all)


def _proposal_shot(toy, proposal, lam=-1.5, seed=0):
    length, n = 3, 4000
    rng = np.random.default_rng(seed)
    tokens, lp, phi, marginal, target = count_tilted_draws(toy, n, rng, length, lam)
    obs = prefix_observable("count", toy, tokens=ADV_TOKENS)
    q = local_tilt(obs, lam) if proposal == "tilt" else proposal
    shot = shoot(toy, encode_prompt(toy, DEFAULT_PROMPT, length), tokens, lp, phi, lam,
                 draw_moves(rng, n, 10, length), obs, proposal=q)
    return tokens, shot, marginal, (shot.phi.mean() - target) / (shot.phi.std() / np.sqrt(n))


@pytest.mark.parametrize("proposal", ["tilt", "overshoot"])
def test_proposal_moves_leave_the_tilted_law_invariant(toy, proposal):
    """Exact p_λ draws (adverb count, L = 3, λ = −1.5: enumerated) stay p_λ-distributed after 10 proposal moves, with
    the local tilt (LogitBias +1.5 on the adverbs) and with a proposal that overshoots it (+4): mean φ within 4 SE of
    the exact tilted mean, first-token law within χ² < 95 of the exact marginal; the local tilt accepts nearly every
    move and changes the first token of most completions (forward shooting from p_M rarely can at strong bias)."""
    q = "tilt" if proposal == "tilt" else LogitBias(prefix_observable("count", toy, tokens=ADV_TOKENS).token_ids, 4.0)
    tokens, shot, marginal, z = _proposal_shot(toy, q)
    assert abs(z) < 4 and first_token_chi2(shot.tokens, marginal) < 95, (z, first_token_chi2(shot.tokens, marginal))
    np.testing.assert_allclose(score(toy, DEFAULT_PROMPT, shot.tokens), shot.logp, atol=1e-5)
    if proposal == "tilt":
        assert shot.accepted.mean() / 10 > 0.8 and np.mean(shot.tokens[:, 0] != tokens[:, 0]) > 0.5
    assert np.all(shot.generated >= 10) and np.all(shot.generated <= 30)


def test_proposal_moves_without_the_proposal_ratio_break_the_tilted_law(toy, monkeypatch):
    """The check above can fail: accepting the overshooting proposal's moves with e^{−λΔφ} alone (the ratio
    p_M(s')q(s) / p_M(s)q(s') dropped) drives mean φ far from the tilted law's."""
    from rea.tps import kernel

    def no_ratio(logp, logq, new_logp, new_logq, cut, lam, phi, new_phi):
        return np.minimum(0.0, -np.asarray(lam) * (np.asarray(new_phi) - np.asarray(phi)))

    monkeypatch.setattr(kernel, "proposal_log_alpha", no_ratio)
    q = LogitBias(prefix_observable("count", toy, tokens=ADV_TOKENS).token_ids, 4.0)
    _, shot, marginal, z = _proposal_shot(toy, q)
    assert z > 10, z


def test_local_tilt_names_its_proposal_or_none(toy):
    count = prefix_observable("count", toy, tokens=ADV_TOKENS)
    q = local_tilt(count, -2.0)
    assert isinstance(q, LogitBias) and q.bias == 2.0 and q.token_ids == count.token_ids.tolist()
    assert local_tilt(prefix_observable("logprob"), 0.5).temperature == pytest.approx(2.0)
    assert local_tilt(prefix_observable("repeats"), -1.0) is None and local_tilt(count, 0.0) is None
    with pytest.raises(ValueError, match="λ < 1"):
        local_tilt(prefix_observable("logprob"), 1.0)


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


@pytest.fixture(scope="module")
def tilt_coverage_runs(toy):
    """As :func:`coverage_runs`, with moves drawn from the local tilt (``move_proposal="tilt"``), 8 replicates per
    repeat and a ladder of 10 steps of 0.5 (measured with steps of 1 and 5 replicates: coverage 0.88 and 0.80, the
    per-replicate estimates of P(φ = 6) heavier-tailed, sd 2.2× the truth against 1.1× with steps of 0.5)."""
    length, thr, r, k = 6, [3.0, 6.0], 8, 100
    with single_thread():
        res = smc_ladder_tail(toy, DEFAULT_PROMPT, length, "count", thr, lambdas=[-0.5 * j for j in range(1, 11)],
                              n_particles=150, n_moves=3, n_replicates=r * k, tokens=ADV_TOKENS, seed=5,
                              confidence=0.95, progress=False, batch_size=10**5, move_proposal="tilt")
    truth = np.exp(exact.count_distribution(toy, DEFAULT_PROMPT, length, "count", tokens=ADV_TOKENS).log_tail(thr))
    reps = [res.replicates(slice(i * r, (i + 1) * r)) for i in range(k)]
    covered = np.array([(rep.ci_low <= truth) & (truth <= rep.ci_high) for rep in reps])
    widths = np.array([np.log10(rep.ci_high / rep.ci_low) for rep in reps])
    return truth, covered.mean(axis=0), np.median(widths, axis=0)


@pytest.mark.slow
def test_tilted_moves_cover_a_tail_of_2e_7(tilt_coverage_runs):
    """Where forward shooting fails (below), moves from the local tilt refresh the whole completion: Cox's 95 %
    interval over 8 replicates covers P(φ = 6) = 1.6e-7 in ≥ 90 % of 100 repeats, and P(φ ≥ 3) too, with intervals
    under a decade wide (informative, rea.book.rules). Measured: coverage 0.94 and 0.93, median widths 0.21 and 0.53
    decades, mean of the per-replicate estimates 0.995× the truth at both."""
    truth, coverage, width = tilt_coverage_runs
    assert truth[1] < 1e-6 and np.all(coverage >= 0.9) and np.all(width < 1), (coverage, width)


@pytest.mark.slow
def test_interval_covers_a_tail_of_2e_3(coverage_runs):
    """P(count ≥ 3 in 6 tokens) = 1.7e-3: Cox's 95 % interval over 5 replicates is finite and covers it in ≥ 90 % of
    100 repeats (measured: 0.96)."""
    truth, finite, coverage = coverage_runs
    assert truth[0] < 2e-3 and finite[0] == 1 and coverage[0] >= 0.9, coverage


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="forward shooting cannot refresh the early tokens at strong bias, so N = 150 "
                   "particles rarely hold the all-adverb prefixes that carry P(φ = 6) = 1.6e-7: measured, 65 of 100 "
                   "repeats have no particle in the tail and the intervals of the other 35 cover it 4 times; with "
                   "head_fraction=0.5 (head moves propose from p_M too) 30 and 4 (rea.smc.ladder, Limits)")
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
        # φ = repeats is an integer count, so the float64 weights are functions of the same tokens on both sides:
        # no float32 model output enters this comparison, and it may stay tight
        np.testing.assert_allclose(a["log_norm"], b["log_norm"], rtol=1e-9)


def test_head_moves_through_the_hf_decoder(tiny_llama):
    """Head moves on a random llama: tokens = N·L plus, per move drawn, c + 1 for a head move (cut + 1 drawn
    tokens) and L − c for a forward one; scored = Σ L − c − 1 over head moves; continuous and lockstep batching give
    the same particles; the particles' log-probs are the model's."""
    length, n, m, lams, seed, hf = 6, 8, 4, [-0.5, -1.0], 3, 0.5
    kw = dict(lambdas=lams, n_particles=n, n_moves=m, n_replicates=2, seed=seed, progress=False, head_fraction=hf)
    res = smc_ladder_tail(tiny_llama, "Once upon", length, "repeats", [1.0, 2.0], **kw)
    expected, scored = 2 * n * length, 0
    for r in range(2):
        for k in range(1, len(lams) + 1):
            mv = draw_moves(np.random.default_rng([seed, MOVE_STREAM, 1, r, k]), n, m, length, hf)
            expected += int(np.sum(np.where(mv.head, mv.cut + 1, length - mv.cut)))
            scored += int(np.sum(np.where(mv.head, length - mv.cut - 1, 0)))
    assert res.tokens == expected and res.tokens_scored == scored > 0
    assert sum(int(np.sum(h["accepted"][1:])) for h in res.histories) > 0
    lockstep = smc_ladder_tail(tiny_llama, "Once upon", length, "repeats", [1.0, 2.0], batching="lockstep", **kw)
    for a, b in zip(res.histories, lockstep.histories):
        np.testing.assert_array_equal(a["phi"], b["phi"])


def test_head_fraction_is_recorded_and_zero_keeps_old_runs(toy, tmp_path):
    """head_fraction > 0 is in config.json and the provenance (a rerun with another value is refused); 0 leaves the
    key out, so a run directory written before head moves existed resumes; 0 draws the old moves (same particles
    as the default)."""
    kw = dict(lambdas=[-0.5, -1.0], n_particles=20, n_moves=2, n_replicates=2, tokens=ADV_TOKENS, seed=9,
              progress=False)
    head = smc_ladder_tail(toy, DEFAULT_PROMPT, 6, "count", [3.0], out_dir=tmp_path / "h", head_fraction=0.25, **kw)
    assert json.loads((tmp_path / "h" / "config.json").read_text())["head_fraction"] == 0.25
    assert head.provenance["params"]["head_fraction"] == 0.25 and head.tokens_scored > 0
    with pytest.raises(ValueError, match=r"other settings \(head_fraction\)"):
        smc_ladder_tail(toy, DEFAULT_PROMPT, 6, "count", [3.0], out_dir=tmp_path / "h", head_fraction=0.5, **kw)
    plain = smc_ladder_tail(toy, DEFAULT_PROMPT, 6, "count", [3.0], out_dir=tmp_path / "p", **kw)
    assert "head_fraction" not in json.loads((tmp_path / "p" / "config.json").read_text())
    zero = smc_ladder_tail(toy, DEFAULT_PROMPT, 6, "count", [3.0], out_dir=tmp_path / "p", head_fraction=0.0, **kw)
    np.testing.assert_array_equal(plain.log_z_reps, zero.log_z_reps)
    assert plain.tokens_scored == 0 and not np.array_equal(plain.histories[0]["phi"], head.histories[0]["phi"])
    with pytest.raises(ValueError, match="head_fraction"):
        smc_ladder_tail(toy, DEFAULT_PROMPT, 6, "count", [3.0], head_fraction=1.5, **kw)


def test_replicate_interval_is_reused(toy):
    """The pooled tail is the mean of the chosen bias's replicate estimates, with rea.smc's interval."""
    res = smc_ladder_tail(toy, DEFAULT_PROMPT, 6, "count", [2.0], lambdas=[-1.0, -2.0], n_particles=50, n_moves=2,
                          n_replicates=4, tokens=ADV_TOKENS, seed=8, progress=False)
    mean, lo, hi = replicate_interval(res.log_tail_reps[:, res.bias_index[0], 0], 0.95)
    assert res.p[0] == pytest.approx(np.exp(mean)) and res.ci_low[0] == pytest.approx(np.exp(lo))
    assert res.ci_high[0] == pytest.approx(np.exp(hi))
