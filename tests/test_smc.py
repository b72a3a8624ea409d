"""SMC on prefixes (rea.smc) against exact answers of the toy LM, and the decoders' cache reorder on a tiny llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rea import exact
from rea.lm import DEFAULT_PROMPT
from rea.lm.models import HFLanguageModel
from rea.lm.tiny import char_llama
from rea.observables import ari, log_prob, repeats
from rea.sampling import sample, score
from rea.smc import prefix_observable, replicate_interval, run_group, smc_tail, systematic_resample
from rea.validate.toy import ADV_TOKENS, token_count

pytestmark = pytest.mark.usefixtures("single_thread")  # the toy's tiny ops (tests/conftest.py)


def ratio_z_score(log_x, log_truth):
    """(mean of X_r/truth − 1) in standard errors of that mean, from replicates' log-estimates ``[R]``."""
    x = np.exp(np.asarray(log_x) - log_truth)
    return (x.mean() - 1.0) / (x.std(ddof=1) / np.sqrt(len(x)))


CASES = [  # observable, tokens, L, λ, thresholds, side
    ("count", ADV_TOKENS, 20, -2.6, [8.0, 10.0], "upper"),
    ("repeats", None, 12, -1.0, [3.0, 5.0], "upper"),
    ("logprob", None, 3, 0.5, [-12.0, -15.0], "lower"),
]


@pytest.mark.parametrize("obs, tokens, L, lam, thr, side", CASES, ids=[c[0] for c in CASES])
def test_log_z_and_tails_match_exact(toy, obs, tokens, L, lam, thr, side):
    res = smc_tail(toy, DEFAULT_PROMPT, L, obs, lam, thr, n_particles=200, n_replicates=20, tokens=tokens, seed=1,
                   side=side, progress=False)
    log_z = exact.log_partition(toy, DEFAULT_PROMPT, L, lam, obs, tokens=tokens)
    assert abs(ratio_z_score(res.log_z, log_z)) < 4
    assert res.z_lo < np.exp(log_z) < res.z_hi
    dist = (exact.logprob_distribution(toy, DEFAULT_PROMPT, L) if obs == "logprob"
            else exact.count_distribution(toy, DEFAULT_PROMPT, L, obs, tokens=tokens))
    for s, truth in enumerate(dist.log_tail(thr) if side == "upper" else dist.log_cdf(thr)):
        assert abs(ratio_z_score(res.log_tail[:, s], truth)) < 4, (thr[s], res.tail[s], np.exp(truth))
    assert res.tokens == 200 * L * 20 and res.ess.shape == (20, L)


def test_ari_prefix_observable_matches_exact(toy):
    """ARI is not additive: the prefix observable decodes prompt + prefix at every step; still exact telescoping."""
    L, lam = 6, 0.3
    res = smc_tail(toy, DEFAULT_PROMPT, L, "ari", lam, [8.0], n_particles=200, n_replicates=10, seed=2, progress=False)
    dist = exact.ari_distribution(toy, DEFAULT_PROMPT, L)
    log_z = np.log(np.sum(np.exp(dist.log_probs - lam * dist.values)))
    assert abs(ratio_z_score(res.log_z, log_z)) < 4
    assert abs(ratio_z_score(res.log_tail[:, 0], dist.log_tail(8.0))) < 4


def test_z_hat_is_unbiased_though_log_z_hat_is_not(toy):
    """Mean of Ẑ over many replicates matches Z; the mean of log Ẑ sits below log Z (Jensen), visibly at small N."""
    L, lam = 12, -1.5
    res = smc_tail(toy, DEFAULT_PROMPT, L, "count", lam, [6.0], n_particles=20, n_replicates=1000, tokens=ADV_TOKENS,
                   seed=3, progress=False)
    log_z = exact.log_partition(toy, DEFAULT_PROMPT, L, lam, "count", tokens=ADV_TOKENS)
    assert abs(ratio_z_score(res.log_z, log_z)) < 3.5
    log_bias = res.log_z.mean() - log_z
    assert log_bias < -6 * res.log_z.std() / np.sqrt(len(res.log_z))
    assert res.n_resamplings.mean() > 0.5


def test_deep_tail_that_direct_sampling_cannot_see(toy):
    """P(adverb count ≥ 10 in 20 tokens) = 1.4e-8 from 8e4 tokens: direct sampling would expect 6e-5 hits."""
    dist = exact.count_distribution(toy, DEFAULT_PROMPT, 20, "count", tokens=ADV_TOKENS)
    p = float(dist.tail(10.0))
    res = smc_tail(toy, DEFAULT_PROMPT, 20, "count", -2.6, [10.0], n_particles=400, n_replicates=10,
                   tokens=ADV_TOKENS, seed=4, progress=False)
    assert p < 1e-6 and res.tokens / 20 * p < 1e-3
    assert res.tail_lo[0] < p < res.tail_hi[0]
    assert abs(res.tail[0] / p - 1) < 0.5


def test_interval_covers_at_nominal_rate(toy):
    """Cox's log-normal interval over R = 8 replicates, 100 independent repeats, log Z and two tails."""
    L, lam, thr, R, K = 10, -2.0, [4.0, 6.0], 8, 100
    res = smc_tail(toy, DEFAULT_PROMPT, L, "count", lam, thr, n_particles=100, n_replicates=R * K,
                   tokens=ADV_TOKENS, seed=5, progress=False)
    dist = exact.count_distribution(toy, DEFAULT_PROMPT, L, "count", tokens=ADV_TOKENS)
    truth = np.concatenate([[exact.log_partition(toy, DEFAULT_PROMPT, L, lam, "count", tokens=ADV_TOKENS)],
                            dist.log_tail(thr)])
    logs = np.column_stack([res.log_z, res.log_tail])
    covered = []
    for k in range(K):
        _, lo, hi = replicate_interval(logs[k * R:(k + 1) * R], 0.95)
        covered.append((lo <= truth) & (truth <= hi))
    margin = 3 * np.sqrt(0.95 * 0.05 / K)
    assert (np.mean(covered, axis=0) >= 0.95 - margin).all(), np.mean(covered, axis=0)


def test_replicates_depend_on_seed_and_index_only(toy):
    kw = dict(n_particles=50, tokens=ADV_TOKENS, seed=9, progress=False)
    one = smc_tail(toy, DEFAULT_PROMPT, 10, "count", -1.0, [4.0], n_replicates=4, batch_size=50, **kw)
    many = smc_tail(toy, DEFAULT_PROMPT, 10, "count", -1.0, [4.0], n_replicates=6, batch_size=300, **kw)
    np.testing.assert_array_equal(one.log_z, many.log_z[:4])
    assert len(set(many.log_z)) == 6


def test_resume_from_out_dir(toy, tmp_path):
    kw = dict(n_particles=50, tokens=ADV_TOKENS, seed=1, progress=False, out_dir=tmp_path)
    first = smc_tail(toy, DEFAULT_PROMPT, 10, "count", -1.0, [4.0], n_replicates=3, **kw)
    assert len(list(tmp_path.glob("replicate_*.npz"))) == 3
    (tmp_path / "replicate_00001.npz").unlink()  # as if interrupted before replicate 1 was saved
    again = smc_tail(toy, DEFAULT_PROMPT, 10, "count", -1.0, [4.0, 5.0], n_replicates=5, **kw)
    np.testing.assert_array_equal(first.log_z, again.log_z[:3])
    assert len(list(tmp_path.glob("replicate_*.npz"))) == 5
    with pytest.raises(ValueError, match="out_dir .* other settings .*lam"):
        smc_tail(toy, DEFAULT_PROMPT, 10, "count", -2.0, [4.0], n_replicates=5, **kw)


def test_prefix_observables_equal_full_observables(toy):
    s = sample(toy, DEFAULT_PROMPT, 16, 7, seed=0, progress=False)
    for name, full in [("repeats", repeats), ("logprob", log_prob), ("ari", ari)]:
        np.testing.assert_allclose(prefix_observable(name, toy, DEFAULT_PROMPT)(s.tokens, s.logp), full(s))
    counted = prefix_observable("count", toy, tokens=ADV_TOKENS)(s.tokens, s.logp)
    np.testing.assert_array_equal(counted, token_count(ADV_TOKENS)(s))


def test_systematic_resampling_keeps_expected_offspring():
    w = np.random.default_rng(0).exponential(size=50) ** 3
    for u in (0.0, 0.37, 0.999):
        counts = np.bincount(systematic_resample(w, u), minlength=50)
        assert counts.sum() == 50 and np.all(np.abs(counts - 50 * w / w.sum()) < 1)


@pytest.mark.parametrize("kw, match", [
    (dict(lam=float("nan")), "lam"), (dict(n_particles=0), "n_particles"), (dict(n_replicates=1.5), "n_replicates"),
    (dict(ess_threshold=2), "ess_threshold"), (dict(thresholds=[]), "thresholds"), (dict(observable="x"), "observable"),
    (dict(interval="wald"), "interval"), (dict(side="both"), "side"), (dict(length=0), "length"),
    (dict(observable="count", tokens=["the a"]), "tokens"),
    (dict(observable="count", tokens=["zebra"]), "tokens"), (dict(confidence=1.0), "confidence"),
])
def test_bad_inputs_raise_one_line_errors(toy, kw, match):
    args = dict(length=5, observable="repeats", lam=-1.0, thresholds=[2.0], n_particles=10, n_replicates=2,
                progress=False) | kw
    with pytest.raises(ValueError, match=match) as err:
        smc_tail(toy, DEFAULT_PROMPT, **args)
    assert "\n" not in str(err.value)


def test_interval_of_all_zero_replicates_is_unbounded():
    est, lo, hi = replicate_interval([-np.inf] * 4)
    assert est == -np.inf and lo == -np.inf and hi == np.inf


# --------------------------------------------------------------------------------------------- tiny llama


def llama(fast: bool):
    base = char_llama(initializer_range=0.3)
    return HFLanguageModel(base.model, base.tokenizer, name="char-llama", fast_decode=fast)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "hf"])
def test_reorder_keeps_logits_equal_to_a_fresh_forward(fast):
    lm = llama(fast)
    prompt = torch.tensor(lm.encode("The sky is"))
    rows = torch.randint(1, 60, (5, 4), generator=torch.Generator().manual_seed(0))
    dec = lm.decoder(5)
    assert type(dec).__name__ == ("LlamaDecoder" if fast else "HFDecoder")
    dec.prefill(prompt.expand(5, -1))
    for t in range(3):
        dec.step(rows[:, t])
    index = torch.tensor([3, 3, 0, 4, 1])
    dec.reorder(index)
    got = dec.step(rows[index, 3])
    ids = torch.cat([prompt.expand(5, -1), rows[index]], dim=1)
    torch.testing.assert_close(got, lm.logits(ids)[:, -1], rtol=1e-4, atol=1e-4)


def test_smc_on_a_llama_keeps_histories_consistent():
    """λ = 0: weights stay 1, so Ẑ = 1 exactly; λ ≠ 0 with resampling at every step: the particles' recorded
    per-token log p_M equal a teacher-forced score of their tokens (the KV cache followed the ancestors)."""
    lm = llama(True)
    res = smc_tail(lm, "The sky is", 8, "repeats", 0.0, [1.0], n_particles=16, n_replicates=2, progress=False)
    assert (res.log_z == 0.0).all() and res.z == 1.0 and res.n_resamplings.sum() == 0
    obs = prefix_observable("logprob")
    ids = lm.encode("The sky is")
    (rep,) = run_group(lm, ids, obs, -0.5, 8, 16, [0], seed=0, ess_threshold=1.0, keep_particles=True)
    assert rep.resampled[:-1].all() and len({tuple(r) for r in rep.tokens}) > 1
    np.testing.assert_allclose(rep.logp, score(lm, ids, rep.tokens), atol=2e-4)
    np.testing.assert_allclose(rep.phi, rep.logp.sum(1))
