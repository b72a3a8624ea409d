"""rea.tps.equilibrium: TPS chain means against an independent SMC estimate of E_λ[φ], judged by the exact toy,
and tps_mbar(keep=...) choosing biases by it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rea import exact
from rea.lm import DEFAULT_PROMPT
from rea.observables import evaluate
from rea.sampling import encode_prompt, sample, score
from rea.tps import TPSConfig, equilibrium_check, run_tps, smc_tilted_means, tps_mbar
from rea.tps.records import as_samples
from rea.validate.toy import ADV_TOKENS, token_count

pytestmark = pytest.mark.usefixtures("single_thread")

L = 20
LADDER = [-0.5, -1.0, -1.5, -2.0, -2.5, -3.0]  # adverb count: exact E_λ[φ] from 1.5 to 13.5 over the ladder
SMC = dict(n_particles=400, n_replicates=10, seed=0)


def exact_mean(toy, lam):
    return exact.exact_mean(toy, DEFAULT_PROMPT, L, "count", tokens=ADV_TOKENS, lam=np.asarray(lam, float))


@pytest.fixture(scope="module")
def smc_table(toy):
    return smc_tilted_means(toy, DEFAULT_PROMPT, L, "count", LADDER, tokens=ADV_TOKENS, **SMC)


@pytest.fixture(scope="module")
def annealed(toy, tmp_path_factory):
    """The paper's annealing with a short budget (60 moves per bias, 8 chains): strong-bias chains lag behind."""
    c = TPSConfig(prompt=DEFAULT_PROMPT, length=L, lambdas_pos=[], lambdas_neg=LADDER, n_steps=60, n_chains=8,
                  seed=3, observable=token_count(ADV_TOKENS), checkpoint_every=10**6)
    return run_tps(toy, c, tmp_path_factory.mktemp("annealed"), progress=False)


def exact_tilted_samples(toy, lam: float, n: int, seed: int):
    """n exact draws of p_λ ∝ e^{−λφ} p_M for the adverb count on the Markov toy (backward messages, forward
    sampling): β_L = 1, β_t = A_λ β_{t+1} with A_λ[i, j] = A[i, j] e^{−λ 1[j ∈ S]}; x_t ~ A_λ[x_{t−1}, ·] ∘ β_t."""
    a = exact.transition_matrix(toy)
    g, _ = exact.pair_observable(toy, "count", ADV_TOKENS)
    a_lam = a * np.exp(-lam * g)
    beta = [np.ones(a.shape[0])]
    for _ in range(L - 1):
        b = a_lam @ beta[-1]
        beta.append(b / b.max())
    beta = beta[::-1]  # beta[t]: messages for position t (0-based), beta[L-1] = 1
    rng = np.random.default_rng(seed)
    x = np.full(n, exact.prompt_state(toy, DEFAULT_PROMPT))
    tokens = np.empty((n, L), dtype=np.int64)
    for t in range(L):
        p = a_lam[x] * beta[t][None, :]
        p /= p.sum(axis=1, keepdims=True)
        x = np.array([rng.choice(p.shape[1], p=row) for row in p])
        tokens[:, t] = x
    logp = score(toy, DEFAULT_PROMPT, tokens)
    return as_samples(toy, DEFAULT_PROMPT, encode_prompt(toy, DEFAULT_PROMPT, L), tokens, logp)


# --------------------------------------------------------------------------------------------- the SMC reference


def test_smc_tilted_mean_matches_exact_on_strong_ladder(toy, smc_table):
    """The independent estimate is right at every bias of the ladder (within 3 SE of the exact tilted mean), and
    precise enough to tell: the tilted means of neighbouring biases differ by many SMC standard errors."""
    truth = exact_mean(toy, LADDER)
    z = (smc_table["smc_mean"].to_numpy() - truth) / smc_table["smc_se"].to_numpy()
    assert np.all(np.abs(z) <= 3), z
    assert np.all(np.diff(truth) > 3 * smc_table["smc_se"].to_numpy()[1:])
    assert smc_table["smc_tokens"].tolist() == [400 * L * 10] * len(LADDER)


def test_exact_sampler_of_the_test_is_exact(toy):
    """The test's exact tilted sampler: its mean of φ matches exact E_λ[φ] (so chains started from it are right)."""
    s = exact_tilted_samples(toy, -2.5, 400, seed=0)
    phi = evaluate(token_count(ADV_TOKENS), s)
    assert abs(phi.mean() - exact_mean(toy, -2.5)) < 3 * phi.std(ddof=1) / np.sqrt(phi.size)
    assert np.allclose(s.logp.sum(1), score(toy, DEFAULT_PROMPT, s.tokens).sum(1))


# --------------------------------------------------------------------------------------------- the check


def test_check_flags_stuck_annealed_biases(toy, annealed, smc_table):
    """Biases whose chain mean exact shows > 5 SE off are flagged; R̂ is reported beside it (on this toy the stuck
    strong biases also fail R̂ < 1.1: chains stuck at different counts, see rea.tps.equilibrium)."""
    chk = equilibrium_check(annealed, smc=smc_table)
    assert chk["lam"].tolist() == sorted(LADDER)
    exact_z = (chk["chain_mean"] - exact_mean(toy, chk["lam"].to_numpy())) / chk["chain_se"]
    stuck = np.abs(exact_z) > 5
    assert stuck.sum() >= 2, exact_z  # the short budget leaves the strongest biases behind
    assert not chk.loc[stuck, "equilibrated"].any(), chk
    assert (chk.loc[stuck, "z"] < -3).all()  # behind the tilted law (too few adverbs), as exact says
    right = np.abs(exact_z) < 2
    assert right.any() and chk.loc[right, "equilibrated"].all(), chk
    assert chk.attrs["tokens"] == len(LADDER) * 400 * L * 10 and (chk["gelman_rubin"] > 0).all()


def test_chains_started_from_exact_tilted_samples_are_kept(toy, tmp_path):
    """Chains at a strong bias started from exact draws of p_λ are right (exact: within 3 SE) and kept, whatever R̂
    says; the check runs its own SMC here (``lm=``) and counts its tokens."""
    lam = -2.5
    c = TPSConfig(prompt=DEFAULT_PROMPT, length=L, lambdas_pos=[], lambdas_neg=[lam], n_steps=60, n_chains=16,
                  seed=5, observable=token_count(ADV_TOKENS), checkpoint_every=10**6)
    res = run_tps(toy, c, tmp_path, progress=False, initial=exact_tilted_samples(toy, lam, 16, seed=1))
    chk = equilibrium_check(res, toy, observable="count", tokens=ADV_TOKENS, **SMC)
    row = chk.iloc[0]
    assert row["lam"] == lam and row["n_chains"] == 16
    assert abs(row["chain_mean"] - exact_mean(toy, lam)) < 3 * row["chain_se"]
    assert row["equilibrated"] and abs(row["z"]) <= 3
    assert chk.attrs["tokens"] == 400 * L * 10


def test_chain_se_by_statistical_inefficiency(annealed, smc_table):
    """chain_se="inefficiency" (√(g s²/N)) also flags the strongest stuck bias; a bad chain_se is refused."""
    chk = equilibrium_check(annealed, smc=smc_table, chain_se="inefficiency")
    assert not chk.set_index("lam").loc[-3.0, "equilibrated"]
    assert (chk["chain_se"] > 0).all()
    with pytest.raises(ValueError, match="chain_se"):
        equilibrium_check(annealed, smc=smc_table, chain_se="bogus")
    with pytest.raises(ValueError, match="smc"):
        equilibrium_check(annealed)


# --------------------------------------------------------------------------------------------- tps_mbar(keep=...)


def test_tps_mbar_keeps_only_equilibrated_biases(toy, annealed, smc_table):
    chk = equilibrium_check(annealed, smc=smc_table)
    direct = evaluate(token_count(ADV_TOKENS), sample(toy, DEFAULT_PROMPT, 400, L, seed=9, progress=False))
    kw = dict(thresholds=[3.0], method="analytic")
    by_eq = tps_mbar(annealed, direct, keep=chk, **kw)
    flagged = chk.loc[~chk["equilibrated"], "lam"].tolist()
    assert flagged and by_eq.attrs["lambdas"] == sorted([0.0] + chk.loc[chk["equilibrated"], "lam"].tolist())
    assert sorted(by_eq.attrs["dropped"]) == sorted(flagged)
    assert not set(flagged) & set(by_eq.attrs["lambdas"])
    # the default is unchanged (Gelman–Rubin), and an explicit list (bootstrap: the same biases in every replica)
    default = tps_mbar(annealed, direct, **kw)
    pd.testing.assert_frame_equal(default, tps_mbar(annealed, direct, keep="gelman_rubin", **kw))
    assert default.attrs["keep"] == "gelman_rubin"
    assert set(default.attrs["dropped"]) == {k for k, v in default.attrs["gelman_rubin"].items() if not v < 1.1}
    listed = tps_mbar(annealed, direct, thresholds=[3.0], keep=[-0.5, -1.0], n_boot=20)
    assert listed.attrs["lambdas"] == [-1.0, -0.5, 0.0] and listed["p"].iloc[0] > 0


@pytest.mark.parametrize("keep, match", [
    ("equilibrium", "keep must be one of"), ([-0.7], r"biases \[-0.7\] are not in the records"),
    (pd.DataFrame({"lam": [-0.5]}), "needs columns lam, equilibrated"), (object(), "keep must be one of"),
])
def test_bad_keep_is_one_line_error(annealed, keep, match):
    with pytest.raises(ValueError, match=match) as err:
        tps_mbar(annealed, np.zeros(10), thresholds=[1.0], method="analytic", keep=keep)
    assert "\n" not in str(err.value)
