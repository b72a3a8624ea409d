"""Tests for rea.single_token: single-token rare-output estimators checked against exact answers.

The exactly enumerable case is a small random llama (V=256) truncated to 1 layer, with D = 3 positions × 30 tokens
(27 000 inputs): p_t is computed by full enumeration and every estimator must agree within its own error bar.
QLD is checked on synthetic Gaussian activations, where its independence assumption holds exactly.
"""

from __future__ import annotations

import copy
import itertools
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from tolerances import FLOAT32_CROSS_KERNEL_RTOL

import rea.single_token as lp
from rea import stats as estimators
from rea.lm.tiny import tiny_model
from rea.single_token.importance import itgis_many
from rea.single_token.mhis import mhis_many

SEED = 0


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(SEED)
    return tiny_model("llama", seed=SEED, vocab_size=256, n_heads=4, n_kv_heads=2, max_positions=64,
                      tie_embeddings=True, initializer_range=0.1)


@pytest.fixture(scope="module")
def exact_case(tiny):
    scorer = lp.truncated(tiny, 1)
    rng = np.random.default_rng(SEED)
    D = lp.uniform_distribution([rng.choice(256, 30, replace=False) for _ in range(3)], None, 256)
    p = lp.exact_probabilities(scorer, D, batch_size=4096)
    return scorer, D, p


# ------------------------------------------------------------------------------------------ models


def test_truncated_matches_hf_model(tiny):
    x = torch.randint(0, 256, (3, 6), generator=torch.Generator().manual_seed(1))
    full = lp.truncated(tiny)
    ref = tiny(input_ids=x).logits[:, -1]
    assert torch.allclose(full(x), ref, atol=1e-4)
    cut = copy.deepcopy(tiny)
    cut.model.layers = cut.model.layers[:1]
    cut.config.num_hidden_layers = 1
    one = lp.truncated(tiny, 1)
    assert torch.allclose(one(x), cut(input_ids=x).logits[:, -1], atol=1e-4)
    assert not torch.allclose(one(x), ref, atol=1e-2)  # truncation changes the model


def test_onehot_gradient(tiny):
    sc = lp.truncated(tiny, 2)
    x = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(2))
    onehot = torch.nn.functional.one_hot(x, 256).float().requires_grad_(True)
    logits = sc.from_embeds(onehot @ sc.W_E)
    assert torch.allclose(logits, sc(x), atol=1e-5)
    logits[:, 7].sum().backward()
    lg, ge = sc.target_grad(x, 7)
    assert torch.allclose(lg, sc(x), atol=1e-5)
    assert torch.allclose(ge @ sc.W_E.T, onehot.grad, atol=1e-4)


def test_truncated_rejects_bad_depth(tiny):
    with pytest.raises(ValueError, match="n_layers"):
        lp.truncated(tiny, 3)


# ------------------------------------------------------------------------------------------ exact answers


def test_exact_probabilities_by_hand(tiny):
    sc = lp.truncated(tiny, 1)
    D = torch.zeros(2, 256, dtype=torch.float64)
    D[0, [3, 5, 9]] = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    D[1, [1, 2]] = torch.tensor([0.9, 0.1], dtype=torch.float64)
    p = lp.exact_probabilities(sc, D)
    ref = np.zeros(256)
    for a, b in itertools.product([3, 5, 9], [1, 2]):
        ref[int(sc(torch.tensor([[a, b]])).argmax())] += float(D[0, a] * D[1, b])
    assert np.allclose(p, ref) and abs(p.sum() - 1) < 1e-12


def test_ground_truth_wilson_covers_exact(exact_case):
    sc, D, p = exact_case
    targets = lp.select_targets(p, 4, 2e-3, 3e-2)
    gt = lp.ground_truth(sc, D, targets, n_samples=8192, batch_size=4096, seed=3)
    assert list(gt.target) == list(targets) and (gt.n == 8192).all()
    inside = (gt.ci_low <= p[targets]) & (p[targets] <= gt.ci_high)
    assert inside.sum() >= 3  # 95 % intervals: at most one miss out of four
    assert np.all(np.abs(gt.p - p[targets]) < 5 * np.sqrt(p[targets] / 8192))


# ------------------------------------------------------------------------------------------ estimators


@pytest.fixture(scope="module")
def targets(exact_case):
    _, _, p = exact_case
    t = lp.select_targets(p, 3, 2.5e-3, 2.5e-2)
    assert len(t) == 3
    return t


def test_naive_within_wilson(exact_case, targets):
    sc, D, p = exact_case
    for t in targets:
        e = lp.estimate("naive", sc, D, int(t), 2048, seed=11, confidence=0.99)
        assert e.ci_low <= p[t] <= e.ci_high and e.n_calls == 2048


def test_itgis_consistent(exact_case, targets):
    sc, D, p = exact_case
    hits = 0
    for t in targets:
        e = lp.estimate("itgis", sc, D, int(t), 1024, seed=5, temperature=1.0)
        assert e.n_calls == 1024 and e.info["hits"] > 0
        assert abs(e.p_hat - p[t]) <= 4 * e.info["se"], (t, p[t], e)
        hits += e.info["hits"]
    # the proposal must actually tilt toward the target: more hits than direct sampling would expect
    assert hits > 3 * 1024 * p[targets].sum()


def test_mhis_consistent(exact_case, targets):
    sc, D, p = exact_case
    for t in targets[1:]:
        e = lp.estimate("mhis", sc, D, int(t), 768, seed=7, temperature=1.0, n_chains=16)
        assert e.n_calls <= 1024 and 0 < e.info["acceptance"] < 1
        assert abs(e.p_hat - p[t]) <= 4 * e.info["se"] + 1e-12, (t, p[t], e)
        assert e.info["hit_fraction"] > p[t]  # the chains sit in the tilted distribution


def test_extrapolation_methods_run_on_exact_case(exact_case, targets):
    sc, D, p = exact_case
    for m in ("qld", "qld_published", "gld"):
        est = [lp.estimate(m, sc, D, int(t), 512, seed=1) for t in targets[:2]]
        assert all(0 <= e.p_hat <= 1 and e.n_calls == 512 for e in est)
    # QLD on this model is within an order of magnitude (it is not exact: activations are not Gaussian)
    q = np.array([lp.estimate("qld", sc, D, int(t), 1024, seed=2).p_hat for t in targets])
    assert np.all((q > p[targets] / 10) & (q < p[targets] * 10))


def test_zero_hits_give_finite_upper_bound_and_warning(exact_case):
    """A target that is never the argmax (p = 0 exactly): ITGIS and MHIS return p̂ = 0 with a finite positive upper
    bound (Wilson for 0 hits) instead of [0, 0], and say which assumption it rests on."""
    sc, D, p = exact_case
    t = int(np.flatnonzero(p == 0)[0])
    with pytest.warns(estimators.ISIntervalWarning, match=r"q\(A\) ≥ p_M\(A\)"):
        e = lp.estimate("itgis", sc, D, t, 256, seed=1)
    z = estimators.z_value(0.95)
    assert e.p_hat == 0 and e.ci_low == 0 and e.ci_high == pytest.approx(z**2 / (256 + z**2))
    with pytest.warns(estimators.ISIntervalWarning, match=r"mhis: no chain state hit the target.*π\(t\) ≥ p"):
        m = lp.estimate("mhis", sc, D, t, 256, seed=1, n_chains=8)
    n_ind = m.info["n_independent"]
    assert 8 <= n_ind <= 8 * m.info["steps"] and m.p_hat == 0 and m.info["chains_hit"] == 0
    assert m.ci_low == 0 and m.ci_high == pytest.approx(z**2 / (n_ind + z**2))


def test_single_token_uses_the_shared_interval_functions():
    """Wilson intervals and normal quantiles come from rea.stats only: no single_token module defines its own."""
    import ast
    import pkgutil
    from pathlib import Path

    assert lp.wilson_interval is estimators.wilson_interval
    for info in pkgutil.iter_modules(lp.__path__):
        module = __import__(f"rea.single_token.{info.name}", fromlist=["_"])
        for name in ("wilson_interval", "z_value"):
            assert getattr(module, name, estimators.__dict__[name]) is estimators.__dict__[name], (info.name, name)
        tree = ast.parse(Path(module.__file__).read_text())
        defs = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not [d for d in defs if "wilson" in d.lower() or d.lstrip("_") in ("z", "z_value")], (info.name, defs)


def test_itgis_scores_are_the_bias_corrected_ema():
    """s_b = m_b/(1 − d^b), m_b = d·m_{b−1} + (1 − d)·ḡ_b, m_0 = 0 -- equal to the reference code's
    S_b = d·S_{b−1} + ḡ_b divided by (1 − d^b)/(1 − d), and a constant ḡ is returned unchanged from batch 1."""
    d = 0.9
    g = [torch.randn(3, 5, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i in range(6)]
    ema, ref = lp.BiasCorrectedEMA(d), torch.zeros(3, 5, dtype=torch.float64)
    for b, gb in enumerate(g, start=1):
        s = ema.update(gb)
        ref = d * ref + gb
        assert torch.allclose(s, ref * (1 - d) / (1 - d**b))
        w = [(1 - d) * d ** (b - j) / (1 - d**b) for j in range(1, b + 1)]
        assert torch.allclose(s, sum(wj * gj for wj, gj in zip(w, g)))
    # after two batches the first one weighs 0.09/0.19 = 0.47 (the uncorrected running average gave it 0.9)
    two = lp.BiasCorrectedEMA(d)
    two.update(torch.ones(1))
    assert float(two.update(torch.zeros(1))) == pytest.approx(0.09 / 0.19)
    const = lp.BiasCorrectedEMA(d)
    assert all(float(const.update(torch.full((1,), 2.5))) == pytest.approx(2.5) for _ in range(5))
    with pytest.raises(ValueError, match="^decay"):
        lp.BiasCorrectedEMA(1.0)


class _GaussianMarginScorer:
    """A fake scorer whose margin ℓ_t − max_{v≠t} ℓ_v is an exact discretised N(m, s²): two input positions with
    256 tokens each index u = (256·x_0 + x_1 + ½)/65536, the 65536 equal-mass quantiles, and ℓ_t = m + s·Φ⁻¹(u),
    ℓ_3 = 0, every other logit −100."""

    vocab_size = 256

    def __init__(self, m, s, target=7):
        self.m, self.s, self.target = m, s, target

    def __call__(self, tokens):
        u = (tokens[:, 0].double() * 256 + tokens[:, 1].double() + 0.5) / 65536
        logits = torch.full((tokens.shape[0], 256), -100.0, dtype=torch.float64)
        logits[:, 3] = 0.0
        logits[:, self.target] = self.m + self.s * torch.special.ndtri(u)
        return logits


@pytest.mark.parametrize("m, s", [(-3.09, 1.0), (-7.4, 2.0)])  # P = 1.0e-3, 1.1e-4
def test_gld_recovers_an_exact_gaussian_tail(m, s):
    """GLD fits N(m, s²) to Δ and returns Φ(m/s): within 4 sd of its sampling error, sd(ln p̂) ≈ (φ/Φ)(θ)·√((1 + θ²/2)/n)
    at θ = m/s, on a scorer whose margin is exactly (discretised) Gaussian; Δ = ℓ_t − max over all v is ≤ 0."""
    D = lp.uniform_distribution([range(256), range(256)], None, 256)
    n = 4096
    e = lp.estimate("gld", _GaussianMarginScorer(m, s), D, 7, n, seed=3)
    theta = m / s
    truth = stats.norm.cdf(theta)
    sd_log = stats.norm.pdf(theta) / truth * np.sqrt((1 + theta**2 / 2) / n)
    assert abs(np.log(e.p_hat / truth)) < 4 * sd_log, (e.p_hat, truth, sd_log)
    assert e.info["mean"] <= 0 and e.ci_low <= e.p_hat <= e.ci_high
    assert abs(e.info["std"] / s - 1) < 0.1
    # the fit itself on plain Gaussian draws
    x = np.random.default_rng(0).normal(m, s, 20_000)
    p, lo, hi, mm, ss = lp.gaussian_tail_fit(x)
    assert abs(np.log(p / truth)) < 4 * stats.norm.pdf(theta) / truth * np.sqrt((1 + theta**2 / 2) / 20_000)
    assert lo <= truth <= hi and mm == pytest.approx(x.mean()) and ss == pytest.approx(x.std(ddof=1))


def test_gld_margin_is_over_all_tokens():
    """[WH] and the reference code take Δ = ℓ_t − max_v ℓ_v over all v (t included): Δ ≤ 0, Δ = 0 when t wins. With
    t winning half the time (m = 0) Δ = min(Δ', 0): mean −s/√(2π), sd s·√(1/2 − 1/(2π)), so p̂ = Φ(−1/√(π − 1))."""
    D = lp.uniform_distribution([range(256), range(256)], None, 256)
    e = lp.estimate("gld", _GaussianMarginScorer(0.0, 1.0), D, 7, 8192, seed=4)
    assert e.info["mean"] == pytest.approx(-1 / np.sqrt(2 * np.pi), abs=0.02)
    assert e.info["std"] == pytest.approx(np.sqrt(0.5 - 0.5 / np.pi), abs=0.02)
    assert e.p_hat == pytest.approx(stats.norm.cdf(-1 / np.sqrt(np.pi - 1)), abs=0.03)  # 0.25, not Φ(0) = 0.5


# ------------------------------------------------------------------------------------------ QLD, synthetic


def _gaussian_case(seed=4, H=8, V=16, n_truth=2_000_000):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(H, H)))
    L = 5.0 * Q * np.sqrt(np.exp(rng.uniform(np.log(0.05), np.log(20), H)))  # anisotropic, Σ = L Lᵀ
    mu = 3.0 * rng.normal(size=H)  # far from zero
    W = rng.normal(size=(V, H))
    top = np.concatenate([((mu + rng.normal(size=(n_truth // 4, H)) @ L.T) @ W.T).argmax(1) for _ in range(4)])
    p = np.bincount(top, minlength=V) / n_truth
    acts = mu + rng.normal(size=(4096, H)) @ L.T
    return acts, W, p


def test_qld_correct_vs_published_on_gaussian_activations():
    acts, W, p = _gaussian_case()
    targets = [v for v in np.argsort(p) if 2e-4 < p[v] < 1e-2]  # p measured to a few % by 2e6 samples
    assert len(targets) >= 3
    good, bad = [], []
    for t in targets:
        good.append(lp.qld_from_activations(acts, W, int(t)).p_hat / p[t])
        bad.append(lp.qld_from_activations(acts, W, int(t), variant="published").p_hat / p[t])
    good, bad = np.array(good), np.maximum(np.array(bad), 1e-12)
    assert np.all((good > 0.5) & (good < 2)), good
    assert np.max(np.abs(np.log(bad))) > np.log(3), bad  # at least one target off by > 3×
    assert np.mean(np.abs(np.log(bad))) > np.log(2), bad  # typically off by > 2×


def test_qld_unreachable_target_is_zero():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(5, 3))
    W = np.vstack([W, W.mean(0)])  # token 5 lies inside the convex hull: never the strict argmax
    acts = rng.normal(size=(500, 3))
    assert lp.qld_from_activations(acts, W, 5).p_hat == 0
    assert lp.qld_from_activations(acts, W, 2).p_hat > 0


# ------------------------------------------------------------------------------------------ budget and errors


@pytest.mark.parametrize("method", sorted(lp.METHODS))
@pytest.mark.parametrize("budget", [64, 203])
def test_budget_respected(exact_case, method, budget):
    sc, D, p = exact_case
    e = lp.estimate(method, sc, D, 5, budget, seed=0, **({"n_chains": 8} if method == "mhis" else {}))
    assert 0 < e.n_calls <= budget and 0 <= e.ci_low <= e.p_hat <= e.ci_high <= 1


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(method="naive", budget=0), "budget"),
        (dict(method="itgis", budget=-5), "budget"),
        (dict(method="nope", budget=10), "method"),
        (dict(method="naive", budget=10, target=256), "target"),
        (dict(method="qld", budget=10, target=-1), "target"),
        (dict(method="itgis", budget=10, decay=1.0), "decay"),
        (dict(method="naive", budget=10, D="bad_rows"), "D"),
        (dict(method="naive", budget=10, D="bad_shape"), "D"),
    ],
)
def test_bad_input(exact_case, kwargs, name):
    sc, D, _ = exact_case
    kw = dict(target=5, seed=0, D=D) | kwargs
    if kw["D"] == "bad_rows":
        kw["D"] = D * 1.1
    elif kw["D"] == "bad_shape":
        kw["D"] = D[:, :100]
    with pytest.raises(ValueError) as err:
        lp.estimate(kw.pop("method"), sc, kw.pop("D"), kw.pop("target"), kw.pop("budget"), kw.pop("seed"), **kw)
    msg = str(err.value)
    assert "\n" not in msg and msg.split()[0] == name, msg


# ------------------------------------------------------------------------------------------ lockstep runs


def _assert_same_estimate(a, b):
    """Two estimates agree: calls exactly, interval and every diagnostic to FLOAT32_CROSS_KERNEL_RTOL (a lockstep
    run scores its rows in other batches than a single run: measured 0 on the default kernels, ≤ 2.5e-7 relative
    under ``make test-portable``'s other code paths; see tests/tolerances.py)."""
    assert a.n_calls == b.n_calls and a.method == b.method
    assert np.allclose([a.p_hat, a.ci_low, a.ci_high], [b.p_hat, b.ci_low, b.ci_high],
                       rtol=FLOAT32_CROSS_KERNEL_RTOL, atol=0), (a, b)
    assert set(a.info) - {"seconds"} == set(b.info) - {"seconds"}
    for key in set(a.info) - {"seconds"}:
        assert a.info[key] == pytest.approx(b.info[key], rel=FLOAT32_CROSS_KERNEL_RTOL, abs=0), (key, a, b)


@pytest.mark.filterwarnings("ignore::rea.stats.ISIntervalWarning")
@pytest.mark.parametrize("method", ["itgis", "mhis"])
def test_lockstep_jobs_equal_single_runs(exact_case, targets, method):
    """J jobs with different targets, seeds and temperatures moved in lockstep (one model call per step for all)
    give each job's single run, warnings included (same texts, in job order, attributed to the caller): every job
    draws its own random numbers. One target is never hit, so its warning is among them."""
    sc, D, p = exact_case
    ts = [int(targets[0]), int(targets[1]), int(np.flatnonzero(p == 0)[0]), int(targets[0])]
    seeds, temps = [3, 4, 5, 6], [1.0, 0.5, 2.0, 0.7]
    one, many = {"itgis": (lp.itgis, itgis_many), "mhis": (lp.mhis, mhis_many)}[method]
    kw = {"n_chains": 8} if method == "mhis" else {"batch_size": 32}
    with warnings.catch_warnings(record=True) as single_w:
        warnings.simplefilter("always")
        single = [one(sc, D, t, 160, s, T, **kw) for t, s, T in zip(ts, seeds, temps)]
    with warnings.catch_warnings(record=True) as many_w:
        warnings.simplefilter("always")
        batched = many(sc, D, ts, 160, seeds, temps, **kw)
    assert len(batched) == len(ts) and sum(e.p_hat > 0 for e in single) >= 2
    for a, b in zip(single, batched):
        _assert_same_estimate(a, b)
    assert many_w and [str(w.message) for w in many_w] == [str(w.message) for w in single_w]
    assert {w.filename for w in single_w + many_w} == {__file__}
    shared = many(sc, D, ts[:2], 64, 9, 0.8, **kw)  # one seed and one temperature for every job
    for t, est in zip(ts[:2], shared):
        _assert_same_estimate(est, one(sc, D, t, 64, 9, 0.8, **kw))


@pytest.mark.filterwarnings("ignore::rea.stats.ISIntervalWarning")
@pytest.mark.parametrize("method", sorted(lp.METHODS))
def test_estimate_many_matches_estimate(exact_case, targets, method):
    """estimate_many returns estimate's results in job order; for ITGIS and MHIS jobs carry their own temperature (or
    take the default), and jobs whose other hyper-parameters differ run in a lockstep group of their own."""
    sc, D, _ = exact_case
    t0, t1, t2 = (int(t) for t in targets)
    hyper = {"n_chains": 8} if method == "mhis" else {}
    jobs = [(t0, 1), (t2, 3, {"confidence": 0.9})]
    if method in ("itgis", "mhis"):
        jobs = [(t0, 1, {"temperature": 0.5}), (t1, 2, {"temperature": 2.0}), (t2, 3, {"confidence": 0.9,
                "temperature": 1.0}), (t0, 4), (t2, 5, {"temperature": 0.7})]
    batched = lp.estimate_many(method, sc, D, jobs, 96, **hyper)
    assert len(batched) == len(jobs)
    for (t, s, *h), est in zip(jobs, batched):
        _assert_same_estimate(est, lp.estimate(method, sc, D, t, 96, s, **hyper, **(h[0] if h else {})))
        assert est.info["seconds"] > 0
    assert lp.estimate_many(method, sc, D, [], 128) == []


@pytest.mark.filterwarnings("ignore::rea.stats.ISIntervalWarning")
def test_compare_methods_seeds_follow_the_job_list(exact_case, targets):
    """Row j of compare_methods (methods outer) is estimate(..., seed + j), ITGIS and MHIS run in lockstep."""
    sc, D, p = exact_case
    hyper = {"mhis": {"n_chains": 8, "temperature": 0.5}}
    df = lp.compare_methods(sc, D, targets[:2], p[targets[:2]], ["naive", "mhis", "itgis"], 128, seed=10,
                            hyper=hyper, progress=False)
    assert list(df.method) == ["naive"] * 2 + ["mhis"] * 2 + ["itgis"] * 2
    for j, row in enumerate(df.itertuples()):
        est = lp.estimate(row.method, sc, D, row.target, 128, 10 + j, **hyper.get(row.method, {}))
        assert row.p_hat == pytest.approx(est.p_hat, rel=FLOAT32_CROSS_KERNEL_RTOL, abs=0)
        assert row.n_calls == est.n_calls


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda sc, D: lp.estimate_many("nope", sc, D, [(5, 0)], 64), "method"),
        (lambda sc, D: lp.estimate_many("itgis", sc, D, [(5,)], 64), "jobs"),
        (lambda sc, D: lp.estimate_many("naive", sc, D, [(5, 0, 1.0)], 64), "jobs"),
        (lambda sc, D: lp.estimate_many("mhis", sc, D, [(5, 0), (6, 1, {"temperature": 0})], 64), "temperature"),
        (lambda sc, D: lp.estimate_many("itgis", sc, D, [(5, 0), (256, 1)], 64), "target"),
        (lambda sc, D: itgis_many(sc, D, [], 64), "targets"),
        (lambda sc, D: itgis_many(sc, D, 5, 64), "targets"),
        (lambda sc, D: itgis_many(sc, D, [5, 6, 7], 64, seed=[1, 2]), "seed"),
        (lambda sc, D: itgis_many(sc, D, [5, 6], 64, seed=[1, 2.5]), "seed"),
        (lambda sc, D: mhis_many(sc, D, [5, 6], 64, temperature=[1.0, 2.0, 3.0]), "temperature"),
        (lambda sc, D: mhis_many(sc, D, [5, 6], 64, temperature=[1.0, -1.0]), "temperature"),
        (lambda sc, D: mhis_many(sc, D, [5, 6], 64, n_chains=1), "n_chains"),
        (lambda sc, D: mhis_many(sc, D, [5, 6], 64, n_chains=64), "budget"),
        (lambda sc, D: itgis_many(sc, D, [5, 6], 64, batch_size=0), "batch_size"),
        (lambda sc, D: lp.itgis(sc, D, 5, 64, decay=-0.1), "decay"),
    ],
)
def test_lockstep_bad_input(exact_case, call, name):
    sc, D, _ = exact_case
    with pytest.raises(ValueError) as err:
        call(sc, D)
    msg = str(err.value)
    assert "\n" not in msg and msg.split()[0] == name, msg


# ------------------------------------------------------------------------------------------ evaluation


def test_is_loss_and_fit():
    p = np.array([1e-3, 2e-3, 5e-3, 1e-2, 3e-2, 4e-3])
    assert np.allclose(lp.is_loss(p, p), 0)
    assert np.all(lp.is_loss(p, 2 * p) > 0) and np.isinf(lp.is_loss(1e-3, 0.0))
    q = (p / 3.0) ** (1 / 0.7)  # p = 3 q^0.7
    a, c = lp.fit_log_affine(p, q)
    assert abs(a - 3) < 1e-3 and abs(c - 0.7) < 1e-4
    assert lp.fitted_is_loss(p, q) < 1e-6 < float(np.mean(lp.is_loss(p, q)))
    assert lp.optimal_constant(p) == pytest.approx(p.mean())
    grid = np.linspace(0.5, 2, 31) * p.mean()  # the IS-optimal constant beats its neighbours
    assert np.argmin([lp.is_loss(p, c).mean() for c in grid]) == 10  # grid[10] = mean(p)
    assert lp.sq_log_error(p, p).max() == 0


def test_results_table():
    import pandas as pd

    rng = np.random.default_rng(0)
    p = 10 ** rng.uniform(-3, -2, 6)
    rec = pd.DataFrame([{"depth": d, "method": m, "target": i, "p_true": p[i],
                         "p_hat": p[i] * (1 if m == "good" else 10 ** rng.normal(0, 1)), "ci_low": 0, "ci_high": 1,
                         "n_calls": 8, "seconds": 0.1, "covered": True}
                        for d in (1, 2) for m in ("good", "noisy") for i in range(6)])
    tab = lp.results_table(rec)
    assert set(tab.method) == {"good", "noisy", "constant"} and set(tab.depth) == {1, 2}
    good = tab[tab.method == "good"]
    noisy = tab[tab.method == "noisy"]
    assert (good.sq_log_err.to_numpy() < 1e-20).all() and (noisy.sq_log_err.to_numpy() > 0.1).all()
    assert (good.is_loss_fit.to_numpy() < 1e-6).all()


def test_temperature_grid():
    g = lp.temperature_grid(-4, 4)
    assert np.allclose(g, 5 ** (np.arange(-4, 5) / 4)) and g[4] == 1


# ------------------------------------------------------------------------------------------ real tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    from rea.lm import ModelError, load_model

    try:
        return load_model(device="cpu").tokenizer
    except ModelError as err:  # pragma: no cover - the embedded model is part of `make setup`
        pytest.skip(str(err))


@pytest.mark.slow
def test_distribution_builders(tokenizer):
    V = len(tokenizer)
    for build, rx in [(lp.hex_distribution, r"[0-9a-fA-F]{1,4}"), (lp.camel_distribution, r"[A-Za-z]+"),
                      (lp.english_distribution, r"Ġ[a-z]{2,}")]:
        D = lp.check_distribution(build(tokenizer, 4), V)
        support = np.flatnonzero(D[0].numpy())
        assert D.shape == (4, V) and len(support) > 100
        import re

        toks = tokenizer.convert_ids_to_tokens(support.tolist())
        assert all(re.fullmatch(rx, t) for t in toks)
    S = lp.story_distribution(tokenizer)
    free = (S > 0).sum(1)
    assert (free > 1).sum() == 4 and int(free.prod()) > 27_000 / 1.1
    fixed = [int(S[i].argmax()) for i in range(S.shape[0])]
    text = tokenizer.decode(fixed[:7])
    assert text == "Once upon a time, in a"
    three = lp.story_distribution(tokenizer, slots=("adjective", "place", "animal"))
    assert int((three > 0).sum(1).prod()) == 27_000
