"""rea.tps: annealed forward-shooting TPS -- the move, the bookkeeping, resumption, and exactness on ToyLM."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from rea import storage
from rea.lm.tiny import char_llama
from rea.observables import evaluate
from rea.sampling import Samples, score
from rea.tps import (
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    RECORD_COLUMNS,
    TPSConfig,
    load_tps,
    metropolis_accept,
    read_checkpoint,
    run_tps,
    run_tps_many,
    select_shooting_points,
)

PROMPT = "Once upon"


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def lm():
    return char_llama(initializer_range=0.3)


def cfg(**kw):
    base = dict(prompt=PROMPT, length=8, lambdas_pos=[0.0, 0.5, 1.5], n_steps=5, n_chains=3, seed=11,
                observable="repeats", checkpoint_every=4)
    base.update(kw)
    return TPSConfig(**base)


# --------------------------------------------------------------------------------------------- bookkeeping


def test_records_shape_columns_and_final(lm, tmp_path):
    c = cfg()
    res = run_tps(lm, c, tmp_path, progress=False)
    rec = res.records
    assert res.complete and list(rec.columns) == list(RECORD_COLUMNS)
    assert len(rec) == c.total_steps * 2 * c.n_chains == 3 * 5 * 6
    # step-major order, every chain once per step
    assert (rec.groupby("t").size() == 6).all() and rec["t"].is_monotonic_increasing
    assert sorted(rec["chain"].unique()) == list(range(6))
    assert set(rec.loc[rec.chain < 3, "direction"]) == {1} and set(rec.loc[rec.chain >= 3, "direction"]) == {-1}
    assert np.array_equal(rec["bias_index"].to_numpy(), rec["t"].to_numpy() // 5)
    assert np.array_equal(rec["step"].to_numpy(), rec["t"].to_numpy() % 5)
    lam_expected = np.where(rec.direction > 0, 1, -1) * np.array([0.0, 0.5, 1.5])[rec.bias_index]
    assert np.array_equal(rec["lam"].to_numpy(), lam_expected)
    assert rec["cut"].between(0, c.length - 1).all()
    # φ after a step is the proposal's value iff accepted
    acc = rec["accepted"].to_numpy()
    assert np.array_equal(rec["phi"].to_numpy()[acc], rec["phi_proposed"].to_numpy()[acc])
    # the final state per (bias, chain) is the state after the last step of the segment
    assert len(res.final) == 3 * 6
    last = rec[rec.step == 4].sort_values(["bias_index", "t", "chain"])
    assert res.final.meta["chain"] == last["chain"].tolist()
    assert np.array_equal(res.final.meta["phi"], last["phi"].to_numpy())
    assert np.array_equal(evaluate("repeats", res.final), last["phi"].to_numpy())
    assert np.allclose(res.final.logp.sum(1), last["logp"].to_numpy())
    # files on disk, with provenance
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.pkl", "records.parquet", "final.parquet"}
    disk, prov = storage.load_table(tmp_path / "records.parquet")
    pd.testing.assert_frame_equal(disk.astype(rec.dtypes.to_dict()), rec)
    assert prov["model"] == "char-llama" and prov["seed"] == 11 and prov["params"]["n_steps"] == 5
    loaded = load_tps(tmp_path)
    pd.testing.assert_frame_equal(loaded.records, rec)
    assert np.array_equal(loaded.final.tokens, res.final.tokens)


def test_acceptance_is_one_at_zero_bias(lm, tmp_path):
    res = run_tps(lm, cfg(lambdas_pos=[0.0], n_steps=6, observable="logprob"), tmp_path, progress=False)
    assert res.records["accepted"].all()
    assert np.array_equal(res.records["phi"], res.records["phi_proposed"])


def test_moves_keep_the_prefix_and_logprob_is_exact(lm, tmp_path):
    """With snapshots every step: tokens before the cut are kept, rejected moves change nothing, and φ_LP equals
    a teacher-forced rescoring of the state."""
    c = cfg(lambdas_pos=[0.05], lambdas_neg=[-0.05], n_steps=8, observable="logprob", record_tokens_every=1)
    res = run_tps(lm, c, tmp_path, progress=False)
    snap = res.snapshots.sort_values(["chain", "t"])
    rec = res.records.set_index(["chain", "t"])
    assert len(snap) == len(res.records)
    assert 0 < res.records["accepted"].mean() < 1  # both branches are exercised
    for chain, g in snap.groupby("chain"):
        toks = np.array(g["tokens"].tolist())
        for i in range(1, len(toks)):
            r = rec.loc[(chain, g["t"].iloc[i])]
            assert np.array_equal(toks[i, : r.cut], toks[i - 1, : r.cut])
            if not r.accepted:
                assert np.array_equal(toks[i], toks[i - 1])
    tokens = np.array(snap["tokens"].tolist())
    rescored = score(lm, PROMPT, tokens).sum(1)
    assert np.allclose(rescored, snap["phi"].to_numpy(), atol=1e-3)
    assert np.allclose(snap["phi"].to_numpy(), snap["logp"].to_numpy())
    assert snap["text"].tolist() == [lm.decode(t) for t in tokens]


def test_unequal_schedules_and_single_direction(lm, tmp_path):
    c = cfg(lambdas_pos=[0.1, 0.2, 0.3], lambdas_neg=[-0.1], n_steps=3)
    rec = run_tps(lm, c, tmp_path / "a", progress=False).records
    assert len(rec) == 3 * 6 + 3 * 3 + 3 * 3
    assert set(rec.loc[rec.bias_index > 0, "direction"]) == {1}
    rec = run_tps(lm, cfg(lambdas_neg=[], n_steps=2), tmp_path / "b", progress=True).records
    assert set(rec["direction"]) == {1} and len(rec) == 3 * 2 * 3


def test_user_callable_observable(lm, tmp_path):
    def n_vowels(s: Samples):
        return np.array([sum(ch in "aeiou" for ch in t) for t in s.texts], dtype=float)

    res = run_tps(lm, cfg(observable=n_vowels, lambdas_pos=[-0.0, 2.0], lambdas_neg=[]), tmp_path, progress=False)
    assert np.array_equal(n_vowels(res.final), res.final.meta["phi"])
    assert res.config.observable_name == "callable:n_vowels"


# --------------------------------------------------------------------------------------------- checkpoints


def test_resume_is_bit_identical(lm, tmp_path):
    c = cfg(record_tokens_every=2)
    full = run_tps(lm, c, tmp_path / "a", progress=False)
    part = run_tps(lm, c, tmp_path / "b", progress=False, max_steps=7)
    assert not part.complete and len(part.records) == 7 * 6
    ck = read_checkpoint(tmp_path / "b")
    assert [chain["t"] for chain in ck["chains"]] == [7] * 6 and not ck["done"]
    assert all(chain["tokens"].shape == (c.length,) for chain in ck["chains"])
    assert not (tmp_path / "b" / "records.parquet").exists()
    part2 = run_tps(lm, c, tmp_path / "b", resume=True, progress=False, max_steps=3)  # a second interruption
    assert len(part2.records) == 10 * 6
    done = run_tps(lm, c, tmp_path / "b", resume=True, progress=False)
    pd.testing.assert_frame_equal(done.records, full.records)
    pd.testing.assert_frame_equal(done.snapshots, full.snapshots)
    assert np.array_equal(done.final.tokens, full.final.tokens) and done.final.meta == full.final.meta
    # resuming a finished run loads it
    again = run_tps(lm, c, tmp_path / "b", resume=True, progress=False)
    pd.testing.assert_frame_equal(again.records, full.records)


def test_runs_batched_together_equal_each_run_alone(tmp_path):
    """run_tps_many: each run draws from its own RNG and writes its own files, so on the toy LM (whose logits do not
    depend on the batch) runs batched together -- other observables, seeds and schedule lengths, one interrupted and
    resumed -- give records identical to each run alone."""
    from rea.lm import DEFAULT_PROMPT, load_model

    toy = load_model("toy", device="cpu")
    configs = [TPSConfig(prompt=DEFAULT_PROMPT, length=10, lambdas_pos=[0.3, 0.6], n_steps=6, n_chains=3, seed=1,
                         observable="repeats", checkpoint_every=4),
               TPSConfig(prompt=DEFAULT_PROMPT, length=10, lambdas_pos=[0.1], lambdas_neg=[-0.1, -0.2, -0.3],
                         n_steps=6, n_chains=2, seed=2, observable="logprob", checkpoint_every=5)]
    alone = [run_tps(toy, c, tmp_path / f"alone{i}", progress=False) for i, c in enumerate(configs)]
    dirs = [tmp_path / "a", tmp_path / "b"]
    part = run_tps_many(toy, configs, dirs, progress=False, max_steps=5)
    assert [len(r.records) for r in part] == [5 * 6, 5 * 4]
    together = run_tps_many(toy, configs, dirs, resume=True, progress=False)
    for a, b in zip(alone, together):
        assert b.complete
        pd.testing.assert_frame_equal(a.records, b.records)
        assert np.array_equal(a.final.tokens, b.final.tokens)
    with pytest.raises(ValueError, match="share prompt and length"):
        run_tps_many(toy, [configs[0], TPSConfig(prompt="Oh, ha", length=10, lambdas_pos=[0.3])],
                     [tmp_path / "c", tmp_path / "d"], progress=False)
    with pytest.raises(ValueError, match="out_dirs must be distinct"):
        run_tps_many(toy, configs, [tmp_path / "e", tmp_path / "e"], progress=False)


def fast_char_llama():
    """The tests' char-level llama through the fast decoder, whose per-row positions allow continuous batching."""
    from rea.lm.models import HFLanguageModel

    base = char_llama(initializer_range=0.3)
    return HFLanguageModel(base.model, base.tokenizer, name="char-llama", fast_decode=True)


def test_continuous_batching_equals_lockstep(tmp_path):
    """Each chain draws its moves from its own RNG, so continuous batching (rows on their own moves, kept keys and
    values restored per move) gives the lockstep run's records -- here with a stop and resume in the middle of the
    continuous run, schedules of unequal length and two runs in one batch."""
    from rea.tps.shooting import ContinuousShooter, make_shooter

    lm = fast_char_llama()
    configs = [cfg(length=12, n_steps=6, n_chains=4, checkpoint_every=3),
               cfg(length=12, lambdas_pos=[0.2], lambdas_neg=[-0.2, -0.6], n_steps=6, n_chains=2, seed=3,
                   observable="logprob", checkpoint_every=5)]
    assert isinstance(make_shooter(lm, [1, 2], np.zeros((2, 12), int), np.zeros((2, 12))), ContinuousShooter)
    lockstep = run_tps_many(lm, configs, [tmp_path / "l0", tmp_path / "l1"], progress=False, batching="lockstep")
    dirs = [tmp_path / "c0", tmp_path / "c1"]
    part = run_tps_many(lm, configs, dirs, progress=False, max_steps=7, batching="continuous")
    assert [len(r.records) for r in part] == [7 * 8, 6 * 2 + 7 * 2]
    continuous = run_tps_many(lm, configs, dirs, resume=True, progress=False, batching="continuous")
    for a, b in zip(lockstep, continuous):
        assert b.complete and 0.2 < b.records["accepted"].mean() < 1
        pd.testing.assert_frame_equal(a.records, b.records, check_exact=False, rtol=1e-5, atol=1e-5)
        assert np.array_equal(a.final.tokens, b.final.tokens)
    with pytest.raises(ValueError, match="batching must be one of"):
        run_tps(lm, configs[0], tmp_path / "x", progress=False, batching="eager")
    with pytest.raises(ValueError, match="batching='continuous' needs a decoder with per-row positions"):
        run_tps(char_llama(), configs[0], tmp_path / "y", progress=False, batching="continuous")


def test_keyboard_interrupt_checkpoints_a_valid_state(lm, tmp_path):
    calls = {"n": 0, "raise_at": 9}

    def flaky_repeats(s):
        calls["n"] += 1
        if calls["n"] == calls["raise_at"]:
            raise KeyboardInterrupt
        return evaluate("repeats", s)

    c = cfg(observable=flaky_repeats)
    with pytest.raises(KeyboardInterrupt):
        run_tps(lm, c, tmp_path / "b", progress=False)
    ck = read_checkpoint(tmp_path / "b")  # loads: a complete, consistent checkpoint
    # call 1 is the initial samples, calls 2..8 are the (lockstep) moves 0..6, move 7 was interrupted
    assert [chain["t"] for chain in ck["chains"]] == [7] * 6
    calls["raise_at"] = -1
    resumed = run_tps(lm, c, tmp_path / "b", resume=True, progress=False)
    full = run_tps(lm, c, tmp_path / "a", progress=False)
    pd.testing.assert_frame_equal(resumed.records, full.records)


def test_resume_refuses_a_different_config(lm, tmp_path):
    run_tps(lm, cfg(), tmp_path, progress=False, max_steps=2)
    with pytest.raises(ValueError, match=r"config differs.*n_steps"):
        run_tps(lm, cfg(n_steps=6), tmp_path, resume=True, progress=False)
    with pytest.raises(FileExistsError, match="resume=True"):
        run_tps(lm, cfg(), tmp_path, progress=False)
    # checkpoint_every may change; overwrite starts afresh
    run_tps(lm, cfg(checkpoint_every=1), tmp_path, resume=True, progress=False, max_steps=1)
    res = run_tps(lm, cfg(n_steps=2), tmp_path, progress=False, overwrite=True)
    assert res.complete and len(res.records) == 3 * 2 * 6
    with pytest.raises(FileNotFoundError):
        run_tps(lm, cfg(), tmp_path / "nothing", resume=True, progress=False)


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_damaged_checkpoint_is_a_one_line_error(lm, tmp_path, damage):
    run_tps(lm, cfg(), tmp_path, progress=False, max_steps=2)
    path = tmp_path / CHECKPOINT
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"\x80\x05not a pickle"}[damage])
    for call in (lambda: read_checkpoint(tmp_path), lambda: load_tps(tmp_path),
                 lambda: run_tps(lm, cfg(), tmp_path, resume=True, progress=False)):
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert "\n" not in msg and str(path) in msg and "truncated or corrupt" in msg and "delete it" in msg


def test_old_checkpoint_format_is_a_one_line_error(lm, tmp_path):
    """A checkpoint of format /2 (one RNG per run, chains in lockstep) is not resumed by per-chain RNGs."""
    run_tps(lm, cfg(), tmp_path, progress=False, max_steps=2)
    ckpt = read_checkpoint(tmp_path)
    assert ckpt["format"] == CHECKPOINT_FORMAT == "rea.tps.checkpoint/3"
    storage.atomic_pickle({**ckpt, "format": "rea.tps.checkpoint/2"}, tmp_path / CHECKPOINT)
    for call in (lambda: load_tps(tmp_path), lambda: run_tps(lm, cfg(), tmp_path, resume=True, progress=False)):
        with pytest.raises(ValueError, match="is not a TPS checkpoint of format rea.tps.checkpoint/3") as info:
            call()
        assert "\n" not in str(info.value)


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / CHECKPOINT
    storage.atomic_pickle({"format": "old"}, path)
    # fails while pickling, after part of the file was written (a local lambda: AttributeError or PicklingError,
    # by Python version)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        storage.atomic_pickle({"format": "new", "data": list(range(10_000)), "bad": lambda: None}, path)
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT]  # no temporary file left behind
    with open(path, "rb") as fh:
        assert pickle.load(fh) == {"format": "old"}  # the previous checkpoint is intact


# --------------------------------------------------------------------------------------------- the move


def test_metropolis_acceptance_and_shooting_points():
    """α = min(1, e^{−λ(φ' − φ)}): always accepted at λ = 0 or when the bias favours the proposal; otherwise
    accepted iff u < e^{−λΔφ}. Cuts are uniform on {0, …, L−1}."""
    lam = np.array([0.0, 1.0, -1.0, 1.0, 1.0])
    phi, phi_new = np.array([0.0, 2.0, 2.0, 0.0, 0.0]), np.array([5.0, 1.0, 3.0, 1.0, 1.0])
    u = np.array([0.999, 0.999, 0.999, np.exp(-1.0) - 1e-9, np.exp(-1.0) + 1e-9])
    assert metropolis_accept(lam, phi, phi_new, u).tolist() == [True, True, True, True, False]
    cut = select_shooting_points(np.random.default_rng(0), 10_000, 7)
    assert cut.min() == 0 and cut.max() == 6 and np.all(np.bincount(cut) > 1300)


# --------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(lambdas_pos=[], lambdas_neg=[]), "both empty"),
        (dict(lambdas_pos=[0.2, 0.1]), "lambdas_pos"),
        (dict(lambdas_pos=[0.1, 0.1]), "lambdas_pos"),
        (dict(lambdas_pos=[0.1, -0.2]), "lambdas_pos"),
        (dict(lambdas_neg=[-0.2, -0.1]), "lambdas_neg"),
        (dict(lambdas_neg=[0.1]), "lambdas_neg"),
        (dict(lambdas_pos=[float("nan")]), "lambdas_pos"),
        (dict(lambdas_pos="0.1"), "lambdas_pos"),
        (dict(n_steps=0), "n_steps"),
        (dict(n_chains=-1), "n_chains"),
        (dict(n_chains=2.5), "n_chains"),
        (dict(length=0), "length"),
        (dict(seed=-1), "seed"),
        (dict(prompt=""), "prompt"),
        (dict(observable="nope"), "observable"),
        (dict(checkpoint_every=0), "checkpoint_every"),
        (dict(record_tokens_every=0), "record_tokens_every"),
    ],
)
def test_bad_config(kw, name):
    with pytest.raises(ValueError, match=name):
        cfg(**kw)


def test_bad_run_arguments(lm, tmp_path):
    with pytest.raises(ValueError, match="config.model"):
        run_tps(lm, cfg(model="someone-else"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="max_steps"):
        run_tps(lm, cfg(), tmp_path, progress=False, max_steps=0)
    with pytest.raises(ValueError, match="context window"):
        run_tps(lm, cfg(length=1000), tmp_path, progress=False)


def test_mirrored_default():
    c = TPSConfig(prompt="x", length=3, lambdas_pos=[0.01, 0.02])
    assert c.lambdas_neg == (-0.01, -0.02) and c.directions == [1, -1] and c.total_steps == 2 * c.n_steps


# --------------------------------------------------------------------------------------------- exactness on ToyLM


@pytest.mark.parametrize("observable, lam", [("repeats", 0.5), ("logprob", 0.3)])
def test_tilted_mean_matches_exact_toy(tmp_path, observable, lam):
    """On the Markov ToyLM, the post-burn-in mean of φ at fixed biases ±λ agrees with the exact tilted mean
    E_λ[φ] = −d log Z/dλ within 4 standard errors over 32 independent chains per direction -- and the tilt moves
    the mean by many standard errors, so the test has power. For repeats E_λ[φ] is also computed from the exact
    pmf P as Σ_k k P(k) e^{−λk} / Σ_k P(k) e^{−λk}; for Log-Prob this also checks the proposal's φ_LP bookkeeping."""
    exact = pytest.importorskip("rea.exact")
    from rea.lm import DEFAULT_PROMPT, load_model

    lm = load_model("toy", device="cpu")
    length = 10

    def tilted_mean(lam):
        return exact.exact_mean(lm, DEFAULT_PROMPT, length, observable, lam=lam)

    if observable == "repeats":
        pmf = exact.count_distribution(lm, DEFAULT_PROMPT, length, "repeats")
        k, logp = pmf.values, pmf.log_probs
        for x in (lam, -lam):
            w = np.exp(logp - x * k - np.max(logp - x * k))
            assert float(np.sum(k * w) / np.sum(w)) == pytest.approx(tilted_mean(x), rel=1e-9)
    c = TPSConfig(prompt=DEFAULT_PROMPT, length=length, lambdas_pos=[lam], lambdas_neg=[-lam], n_steps=800,
                  n_chains=32, seed=1, observable=observable, checkpoint_every=10_000)
    res = run_tps(lm, c, tmp_path, progress=False)
    rec = res.post_burn_in(0.2)
    assert set(rec["lam"]) == {lam, -lam}
    for x, g in rec.groupby("lam"):
        chain_means = g.groupby("chain")["phi"].mean()
        se = chain_means.std(ddof=1) / np.sqrt(len(chain_means))
        target = tilted_mean(x)
        assert abs(chain_means.mean() - target) < 4 * se, (x, chain_means.mean(), target, se)
        assert abs(tilted_mean(0.0) - target) > 10 * se  # the bias matters at this precision
        assert 0.3 < g["accepted"].mean() < 1


# --------------------------------------------------------------------------------------------- replica exchange


def test_swap_acceptance_and_round_pairs():
    """α = min(1, e^{(λ_a − λ_b)(φ_a − φ_b)}); even rounds pair (m0, m1), (m2, m3), odd rounds (m1, m2)."""
    from rea.tps.exchange import round_pairs, swap_accept

    lam_a, lam_b = np.array([0.0, -1.0, 0.5, 0.5]), np.array([1.0, 0.0, 1.0, 1.0])
    phi_a, phi_b = np.array([1.0, 2.0, 0.0, 0.0]), np.array([3.0, 1.0, 2.0, 2.0])
    u = np.array([0.999, 0.999, np.exp(-1.0) - 1e-9, np.exp(-1.0) + 1e-9])
    # (0−1)(1−3) = 2 > 0: always; (−1−0)(2−1) = −1 at u≈1: no; (0.5−1)(0−2) = 1 > 0 ... all but the second
    assert swap_accept(lam_a, lam_b, phi_a, phi_b, u).tolist() == [True, False, True, True]
    assert swap_accept([0.0], [1.0], [3.0], [1.0], [np.exp(-2.0) - 1e-9]).tolist() == [True]
    assert swap_accept([0.0], [1.0], [3.0], [1.0], [np.exp(-2.0) + 1e-9]).tolist() == [False]
    ladder = np.array([5, 3, 9, 1, 7])
    assert round_pairs(ladder, 0) == [(5, 3), (9, 1)] and round_pairs(ladder, 1) == [(3, 9), (1, 7)]


def test_replica_exchange_resume_and_batching(tmp_path):
    """Replica exchange on the toy: rows are (ladder, bias) replicas that keep their bias; swap rounds follow every
    M moves; stopping between and at a round and resuming gives the uninterrupted run's records and swaps, under
    continuous batching and in lockstep alike."""
    from rea.lm import DEFAULT_PROMPT, load_model

    toy = load_model("toy", device="cpu")
    c = TPSConfig(prompt=DEFAULT_PROMPT, length=10, lambdas_pos=[0.2, 0.6, 1.2], lambdas_neg=[-0.4], n_steps=20,
                  n_chains=3, seed=5, observable="repeats", checkpoint_every=3, exchange_every=5)
    full = run_tps(toy, c, tmp_path / "full", progress=False)
    rec = full.records
    assert full.complete and len(rec) == 20 * 3 * 4 and c.total_steps == 20
    assert np.array_equal(rec["step"], rec["t"]) and set(rec["chain"]) == set(range(6))
    assert rec.groupby(["direction", "bias_index"])["lam"].nunique().eq(1).all()
    swaps = full.swaps
    assert len(swaps) == 3 * (2 + 1 + 2) and swaps["t"].isin([5, 10, 15]).all()  # rounds after 5, 10, 15 moves
    assert (swaps["lam_low"] < swaps["lam_high"]).all() and 0 < swaps["accepted"].mean() < 1
    rates = full.swap_rates()
    assert list(rates.columns) == ["lam_low", "lam_high", "swap_rate", "n"] and rates["n"].sum() == len(swaps)
    assert len(full.final) == 12 and (tmp_path / "full" / "swaps.parquet").exists()
    for batching in ("continuous", "lockstep"):
        out = tmp_path / batching
        run_tps(toy, c, out, progress=False, max_steps=7, batching=batching)
        run_tps(toy, c, out, resume=True, progress=False, max_steps=3, batching=batching)  # stops at a round
        done = run_tps(toy, c, out, resume=True, progress=False, batching=batching)
        pd.testing.assert_frame_equal(done.records, rec)
        pd.testing.assert_frame_equal(done.swaps, swaps)
        assert np.array_equal(done.final.tokens, full.final.tokens)
    assert load_tps(tmp_path / "full").swaps.equals(swaps)


def test_replica_exchange_tilted_means_match_exact_toy(tmp_path):
    """Every replica of a replica-exchange ladder samples its own p_λ: the post-burn-in mean of φ = repeats at each
    bias agrees with the exact E_λ[φ] within 4 standard errors over 12 independent ladders, and swaps happen."""
    from rea import exact
    from rea.lm import DEFAULT_PROMPT, load_model

    lm = load_model("toy", device="cpu")
    lams = [0.0, 0.4, 0.8]
    c = TPSConfig(prompt=DEFAULT_PROMPT, length=10, lambdas_pos=lams, n_steps=300, n_chains=12, seed=2,
                  observable="repeats", checkpoint_every=10_000, exchange_every=4)
    res = run_tps(lm, c, tmp_path, progress=False)
    rec = res.post_burn_in(0.2)
    for x, g in rec.groupby("lam"):
        chain_means = g.groupby("chain")["phi"].mean()
        se = chain_means.std(ddof=1) / np.sqrt(len(chain_means))
        target = exact.exact_mean(lm, DEFAULT_PROMPT, 10, "repeats", lam=x)
        assert abs(chain_means.mean() - target) < 4 * se, (x, chain_means.mean(), target, se)
    assert abs(rec.query("lam == 0.8")["phi"].mean() - rec.query("lam == -0.8")["phi"].mean()) > 0.5
    assert (res.swap_rates()["swap_rate"].between(0.05, 1.0)).all()


# --------------------------------------------------------------------------------------------- adaptive ladder


def test_adaptive_ladder_places_overlapping_biases_and_is_reused(tmp_path):
    """lambdas_neg='auto' toward a target: pilots place biases of growing |λ| whose neighbours overlap at least the
    band's lower edge (or the hard minimum 0.03 after retries), stop once the pilot's median reaches the target,
    record the ladder in the config and provenance, and a resumed run reuses it; MBAR on the run then brackets the
    exact tail of the toy."""
    from rea import exact
    from rea.lm import DEFAULT_PROMPT, load_model
    from rea.sampling import sample
    from rea.tps import tps_mbar

    toy = load_model("toy", device="cpu")
    c = TPSConfig(prompt=DEFAULT_PROMPT, length=12, lambdas_pos=[], lambdas_neg="auto", target=3.0, n_steps=150,
                  n_chains=8, seed=4, observable="repeats", checkpoint_every=60)
    part = run_tps(toy, c, tmp_path, progress=False, max_steps=50)
    ladder = part.config.ladder
    lams = ladder["lambdas"]
    assert lams == list(part.config.lambdas_neg) and all(b < a <= 0 for a, b in zip([0.0] + lams, lams))
    assert all(o >= 0.03 for o in ladder["overlaps"]) and ladder["reached"] and ladder["pilot_tokens"] > 0
    assert (tmp_path / "ladder.json").exists() and part.provenance["params"]["ladder"] == ladder
    done = run_tps(toy, c, tmp_path, resume=True, progress=False)  # "auto" resolves to the stored ladder
    assert done.complete and done.config.ladder == ladder
    direct = evaluate("repeats", sample(toy, DEFAULT_PROMPT, 400, 12, seed=9, progress=False))
    est = tps_mbar(done, direct, [3.0])
    p = float(np.exp(exact.count_distribution(toy, DEFAULT_PROMPT, 12, "repeats").log_tail(3.0)))
    assert est.ci_low.iloc[0] <= p <= est.ci_high.iloc[0], (est.p.iloc[0], p)
    with pytest.raises(ValueError, match="needs target"):
        TPSConfig(prompt=DEFAULT_PROMPT, length=12, lambdas_pos=[], lambdas_neg="auto")
    with pytest.raises(ValueError, match="cannot both be 'auto'"):
        TPSConfig(prompt=DEFAULT_PROMPT, length=12, lambdas_pos="auto", lambdas_neg="auto", target=1.0)


def test_ladder_step_is_finite_when_samples_tie_at_the_extreme():
    """A discrete φ whose largest value holds more than the aimed ESS fraction of the samples cannot lose more ESS
    than that share: the step aims above the floor and stays finite (it used to run to the bracket's end, 1e3), and
    a pair of pilots MBAR cannot join has overlap 0 instead of an error."""
    from rea.stats import OverlapWarning
    from rea.tps.ladder import _pilot_overlap, ess_fraction, next_step

    phi = np.array([12.0] * 36 + [13.0] * 144 + [14.0] * 108)  # 37.5 % at the maximum, above the aim 0.17
    step = next_step(phi, -1, 0.17)
    floor = 108 / len(phi)
    assert 0 < step < 10 and ess_fraction(phi, -step) == pytest.approx(floor + (1 - floor) * 0.17, rel=1e-3)
    cont = np.random.default_rng(0).normal(size=4000)  # no ties: the floor is 1/n and the aim is met as before
    assert ess_fraction(cont, -next_step(cont, -1, 0.17)) == pytest.approx(0.17, rel=0.01)
    assert next_step(cont, +1, 0.17) == pytest.approx(next_step(-cont, -1, 0.17), rel=1e-6)
    with pytest.warns(OverlapWarning):
        assert _pilot_overlap(np.zeros(50), np.full(50, 5.0), -1000.0) == 0.0


def test_replica_exchange_continuous_equals_lockstep_on_llama(tmp_path):
    """Swapped replicas swap their kept keys and values too: on the fast-decoder llama, replica exchange under
    continuous batching gives the lockstep records and swaps."""
    lm = fast_char_llama()
    c = cfg(length=10, lambdas_pos=[0.3, 1.0, 2.0], lambdas_neg=[], n_steps=12, n_chains=2, exchange_every=3)
    runs = {b: run_tps(lm, c, tmp_path / b, progress=False, batching=b) for b in ("continuous", "lockstep")}
    a, b = runs["continuous"], runs["lockstep"]
    assert a.swaps["accepted"].any()
    pd.testing.assert_frame_equal(a.records, b.records, check_exact=False, rtol=1e-5, atol=1e-5)
    pd.testing.assert_frame_equal(a.swaps, b.swaps, check_exact=False, rtol=1e-5, atol=1e-5)
