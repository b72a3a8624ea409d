"""rea.exact against brute-force enumeration of all V^L completions, transfer-matrix powers and Monte Carlo."""

import numpy as np
import pytest

from rea import exact
from rea.lm import DEFAULT_PROMPT, ToyLM
from rea.observables import ari_text, repeats_tokens
from rea.sampling import sample

LAMS = np.array([-2.0, -0.5, 0.3, 2.0])
COUNTED = ["!", " ha", "very"]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def lm():
    return ToyLM()


def brute(lm, prompt, length):
    """All completions with exact probabilities and every observable computed by rea.observables."""
    tokens, logp = exact.enumerate_completions(lm, prompt, length)
    a = lm.transition_matrix
    x0 = lm.encode(prompt)[-1]
    prev = np.concatenate([np.full((len(tokens), 1), x0), tokens[:, :-1]], axis=1)
    p = np.prod(a[prev, tokens], axis=1)  # the product, independently of the log-sum
    counted = exact.token_ids(lm, COUNTED)
    phis = {
        "logprob": logp,
        "repeats": repeats_tokens(tokens),
        "count": np.isin(tokens, counted).sum(axis=1).astype(float),
    }
    return tokens, p, phis


@pytest.fixture(scope="module")
def bf3(lm):
    tokens, p, phis = brute(lm, DEFAULT_PROMPT, 3)
    phis["ari"] = ari_text([DEFAULT_PROMPT + lm.decode(row) for row in tokens])
    return tokens, p, phis


def rel(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.maximum(np.abs(np.asarray(b)), 1e-300))


def brute_dist(values, p):
    vals, inv = np.unique(values, return_inverse=True)
    return vals, np.bincount(inv, weights=p)


def test_enumeration_is_a_distribution(lm, bf3):
    tokens, p, phis = bf3
    assert tokens.shape == (53**3, 3)
    assert abs(p.sum() - 1) < 1e-12
    np.testing.assert_allclose(np.log(p), phis["logprob"], rtol=1e-12)


@pytest.mark.parametrize("obs", ["logprob", "repeats", "count"])
def test_log_partition_and_mean_match_enumeration(lm, bf3, obs):
    _, p, phis = bf3
    phi = phis[obs]
    z = np.array([np.sum(p * np.exp(-lam * phi)) for lam in LAMS])
    mean = np.array([np.sum(p * np.exp(-lam * phi) * phi) for lam in LAMS]) / z
    kw = {"tokens": COUNTED} if obs == "count" else {}
    got = exact.log_partition(lm, DEFAULT_PROMPT, 3, LAMS, obs, **kw)
    assert got.shape == LAMS.shape
    assert rel(got, np.log(z)) < 1e-10
    assert rel(exact.exact_mean(lm, DEFAULT_PROMPT, 3, obs, lam=LAMS, **kw), mean) < 1e-10
    assert isinstance(exact.log_partition(lm, DEFAULT_PROMPT, 3, 0.0, obs, **kw), float)
    assert abs(exact.log_partition(lm, DEFAULT_PROMPT, 3, 0.0, obs, **kw)) < 1e-12  # Z(0) = 1
    # d log Z / dλ = −E_λ[φ] (central difference)
    h = 1e-5
    lz = exact.log_partition(lm, DEFAULT_PROMPT, 3, np.array([0.3 - h, 0.3 + h]), obs, **kw)
    assert abs((lz[1] - lz[0]) / (2 * h) + exact.exact_mean(lm, DEFAULT_PROMPT, 3, obs, lam=0.3, **kw)) < 1e-6


@pytest.mark.parametrize("obs", ["repeats", "count"])
def test_count_pmf_matches_enumeration(lm, bf3, obs):
    _, p, phis = bf3
    want = np.bincount(phis[obs].astype(int), weights=p, minlength=4)
    d = exact.count_distribution(lm, DEFAULT_PROMPT, 3, obs, tokens=COUNTED if obs == "count" else None)
    np.testing.assert_array_equal(d.values, np.arange(4.0))
    nz = want > 0
    assert rel(d.probs[nz], want[nz]) < 1e-10
    assert np.all(d.probs[~nz] == 0)  # repeats: at most L − 1 = 2 (the prompt boundary is not counted)
    for a in range(5):
        assert rel(d.tail(a), max(want[a:].sum(), 1e-300)) < 1e-10 or want[a:].sum() == d.tail(a) == 0


def test_logprob_atoms_match_enumeration(lm, bf3):
    _, p, phis = bf3
    vals, probs = brute_dist(phis["logprob"], p)
    d = exact.logprob_distribution(lm, DEFAULT_PROMPT, 3)
    np.testing.assert_array_equal(d.values, vals)
    assert rel(d.probs, probs) < 1e-10
    assert abs(d.probs.sum() - 1) < 1e-12
    assert rel(d.log_partition(LAMS), exact.log_partition(lm, DEFAULT_PROMPT, 3, LAMS, "logprob")) < 1e-10
    a = np.quantile(vals, [0.001, 0.5, 0.99])
    assert rel(d.tail(a), [p[phis["logprob"] >= x].sum() for x in a]) < 1e-10
    assert rel(d.cdf(a), [p[phis["logprob"] <= x].sum() for x in a]) < 1e-10
    edges = np.linspace(vals[0], vals[-1], 31)
    assert abs(d.bin_probs(edges).sum() - 1) < 1e-12
    b = np.histogram(phis["logprob"], bins=edges, weights=p)[0]
    assert rel(d.bin_probs(edges)[b > 0], b[b > 0]) < 1e-10


def test_ari_distribution_matches_enumeration(lm, bf3):
    _, p, phis = bf3
    vals, probs = brute_dist(phis["ari"], p)
    d = exact.ari_distribution(lm, DEFAULT_PROMPT, 3)
    np.testing.assert_allclose(d.values, vals, rtol=0, atol=1e-12)
    assert rel(d.probs, probs) < 1e-10
    for a in (-5.0, 0.0, 3.0, 10.0):
        assert rel(d.tail(a), p[phis["ari"] >= a].sum()) < 1e-10


@pytest.mark.parametrize(
    "prompt",
    [
        "The cat sat.",  # ends a sentence: a completion "!" continues the run
        "oh!! ha ha",  # prompt with a run in the middle
        "The enormous hippopotamus, the dog",
        "oh?\n",  # newline after a run: the next "." opens a new run
        "A",
    ],
)
def test_ari_distribution_other_prompts(lm, prompt):
    tokens, p, _ = brute(lm, prompt, 2)
    vals, probs = brute_dist(ari_text([prompt + lm.decode(row) for row in tokens]), p)
    d = exact.ari_distribution(lm, prompt, 2)
    np.testing.assert_allclose(d.values, vals, rtol=0, atol=1e-12)
    assert rel(d.probs, probs) < 1e-10


def test_log_partition_long_completion_matches_matrix_power(lm):
    a = lm.transition_matrix
    x0 = lm.encode(DEFAULT_PROMPT)[-1]
    length = 1000
    for obs, g, first_g in [
        ("repeats", np.eye(53), np.zeros((53, 53))),
        ("logprob", np.log(a), np.log(a)),
    ]:
        for lam in (-1.0, -0.2, 0.5, 1.0):
            m = a * np.exp(-lam * g)
            m1 = a * np.exp(-lam * first_g)
            rho = np.max(np.abs(np.linalg.eigvals(m)))
            direct = np.log(m1[x0] @ np.linalg.matrix_power(m / rho, length - 1) @ np.ones(53)) + (length - 1) * np.log(
                rho
            )
            got = exact.log_partition(lm, DEFAULT_PROMPT, length, lam, obs)
            assert np.isfinite(got) and abs(got) > 1  # far outside float64 range as a plain Z for logprob
            assert abs(got - direct) <= 1e-10 * max(1.0, abs(direct))
            # the scaled cumulant generating function is the per-token growth rate
            theta = exact.scgf(lm, lam, obs)
            step = exact.log_partition(lm, DEFAULT_PROMPT, length + 100, lam, obs) - got
            assert abs(step / 100 - theta) < 1e-10
    assert np.isfinite(exact.log_partition(lm, DEFAULT_PROMPT, 100, np.linspace(-3, 3, 13), "count", tokens="!")).all()


def test_count_pmf_resolves_tiny_tails(lm):
    a = lm.transition_matrix
    x0 = lm.encode(DEFAULT_PROMPT)[-1]
    length = 300
    d = exact.count_distribution(lm, DEFAULT_PROMPT, length, "repeats")
    # P(all L completion tokens equal) = Σ_j A[x0, j] A[j, j]^{L−1}, computed in log space
    want = np.logaddexp.reduce(np.log(a[x0]) + (length - 1) * np.log(np.diag(a)))
    assert abs(d.log_probs[length - 1] - want) < 1e-10 * abs(want)
    assert d.log_probs[length] == -np.inf
    assert abs(d.log_tail(length - 1) - want) < 1e-10 * abs(want)
    assert abs(np.exp(d.log_tail(0)) - 1) < 1e-12
    # the pmf reproduces the transfer-matrix Z(λ) for both signs of λ, and the forward-backward mean
    lams = np.array([-3.0, -1.0, 1.0, 3.0])
    assert rel(d.log_partition(lams), exact.log_partition(lm, DEFAULT_PROMPT, length, lams, "repeats")) < 1e-10
    assert abs(d.mean() - exact.exact_mean(lm, DEFAULT_PROMPT, length, "repeats")) < 1e-9
    # token counts: P(every token is " extraordinarily") = A[x0, e] A[e, e]^{L−1}, far below 1e-300
    e = lm.encode("extraordinarily")[0]
    c = exact.count_distribution(lm, DEFAULT_PROMPT, length, "count", tokens=[e])
    want = np.log(a[x0, e]) + (length - 1) * np.log(a[e, e])
    assert want < np.log(1e-320)  # below even the smallest subnormal float64
    assert abs(c.log_probs[length] - want) < 1e-10 * abs(want)
    assert abs(c.log_tail(length) - want) < 1e-10 * abs(want)
    assert np.all(np.diff(c.log_probs[5:]) < 0) and np.isfinite(c.log_probs).all()


def test_monte_carlo_agrees_with_exact(lm):
    n, length = 5000, 20
    s = sample(lm, DEFAULT_PROMPT, n, length, seed=123, batch_size=2500, progress=False)
    rep = repeats_tokens(s.tokens)
    mean = exact.exact_mean(lm, DEFAULT_PROMPT, length, "repeats")
    assert abs(rep.mean() - mean) < 4 * rep.std(ddof=1) / np.sqrt(n)
    pmf = exact.count_distribution(lm, DEFAULT_PROMPT, length, "repeats")
    assert abs(pmf.mean() - mean) < 1e-10
    assert abs(np.mean(rep >= 3) - pmf.tail(3)) < 4 * np.sqrt(pmf.tail(3) * (1 - pmf.tail(3)) / n)
    lp = s.logp.sum(1)
    assert abs(lp.mean() - exact.exact_mean(lm, DEFAULT_PROMPT, length, "logprob")) < 4 * lp.std(ddof=1) / np.sqrt(n)
    s10 = sample(lm, DEFAULT_PROMPT, n, 10, seed=7, batch_size=2500, progress=False)
    phi = ari_text([s10.prompt + t for t in s10.texts])
    d = exact.ari_distribution(lm, DEFAULT_PROMPT, 10)
    assert abs(phi.mean() - d.mean()) < 4 * np.sqrt(d.var() / n)
    assert abs(np.mean(phi >= 10) - d.tail(10)) < 4 * np.sqrt(d.tail(10) * (1 - d.tail(10)) / n)


def test_errors(lm):
    with pytest.raises(ValueError, match="max_sequences"):
        exact.logprob_distribution(lm, DEFAULT_PROMPT, 5)
    with pytest.raises(ValueError, match="tokens="):
        exact.log_partition(lm, DEFAULT_PROMPT, 5, 0.1, "count")
    with pytest.raises(ValueError, match="'rhinoc'") as err:
        exact.log_partition(lm, "there lived a rhinoc", 5, 0.1)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="ari_distribution"):
        exact.log_partition(lm, DEFAULT_PROMPT, 5, 0.1, "ari")
    with pytest.raises(ValueError, match="0/1"):
        exact.count_distribution(lm, DEFAULT_PROMPT, 5, "logprob")
    with pytest.raises(ValueError, match="max_states"):
        exact.ari_distribution(lm, DEFAULT_PROMPT, 8, max_states=100)
    with pytest.raises(ValueError, match="length"):
        exact.log_partition(lm, DEFAULT_PROMPT, 0, 0.1)
