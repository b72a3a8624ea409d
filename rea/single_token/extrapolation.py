"""The extrapolation estimators [WH]: fit a model to plain samples of D and read the target's tail off the fit.

* **QLD** (quadratic logit decomposition) models the final pre-unembedding activations as ``μ + A(a d̂ + b)`` with the
  component ``a`` along the direction that makes t the argmax independent of the rest ``b``, and counts the pairs
  ``(a_i, b_j)`` that make t the argmax: :func:`qld_from_activations` (on given activations, with the steps
  :func:`_whiten`, :func:`_shortest_direction`, :func:`_target_direction`, :func:`_acceptance_intervals`,
  :func:`_accepted_fractions`) and :func:`qld` (on ``budget`` samples of D).
* **GLD** (Gaussian logit difference) fits a normal distribution to ``Δ = ℓ_t − max_v ℓ_v`` and returns its mass
  above zero: :func:`gaussian_tail_fit` (the fit and its interval) and :func:`gld`.

Both intervals are statistical only: they do not cover the error of the model (independence, Gaussianity).
Budget: plain forwards of samples from D; solving for QLD's direction touches only the unembedding and is not counted.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rea.single_token.inputs import sample_inputs
from rea.single_token.scorer import Scorer
from rea.single_token.target_estimate import TargetEstimate, check_estimator_arguments
from rea.stats import z_value

# ============================================================================================ QLD


def _constraint_slack(W: torch.Tensor, bias: torch.Tensor | None, mu: torch.Tensor, A: torch.Tensor, d: torch.Tensor,
                      target: int) -> tuple[torch.Tensor, float]:
    """Slack of "t is the argmax" at activation ``μ + A d``: ``(ℓ_t − ℓ_v [V], +inf at v = t)`` and the logit scale
    ``max(1, max_v |ℓ_v|)`` that tolerances are relative to."""
    act = mu + A @ d
    logits = W @ act + (bias if bias is not None else 0)
    viol = logits[target] - logits  # c_v + G_v·d
    viol[target] = math.inf
    return viol, max(1.0, float(logits.abs().max()))


def _shortest_direction(W: torch.Tensor, bias: torch.Tensor | None, mu: torch.Tensor, A: torch.Tensor, target: int,
                        block: int = 64, max_rounds: int = 60, tol: float = 1e-9) -> tuple[torch.Tensor, bool]:
    """Shortest whitened ``d`` with ``t = argmax`` at activation ``μ + A d``.

    ``min ½‖d‖²  s.t.  c_v + G_v·d ≥ 0  ∀v≠t``, ``G_v = (W_t − W_v) A``, ``c_v = (W_t − W_v)·μ + b_t − b_v``.
    Active-set loop: solve the dual ``min_{λ≥0} ½λᵀGGᵀλ + cᵀλ`` (L-BFGS-B, ``d = Gᵀλ``) on a working set of
    constraints, add the ``block`` most violated ones, repeat until none is violated. Returns ``(d, feasible)``.
    """
    from scipy.optimize import minimize

    d = torch.zeros(A.shape[1], dtype=torch.float64)
    work: list[int] = []
    feasible = False
    for _ in range(max_rounds):
        viol, scale = _constraint_slack(W, bias, mu, A, d, target)
        if float(viol.min()) >= -tol * scale and work:
            feasible = True
            break
        cand = [int(v) for v in torch.argsort(viol)[: block] if viol[v] < 0 and int(v) not in work]
        if not cand:  # the working set is solved but its own constraints still fail: infeasible (checked below)
            break
        work.extend(cand)
        idx = torch.tensor(work)
        G = (W[target][None] - W[idx]) @ A  # [m, H]
        c = (W[target][None] - W[idx]) @ mu
        if bias is not None:
            c = c + bias[target] - bias[idx]
        K = (G @ G.T).numpy()
        cn = c.numpy()
        res = minimize(lambda lam, K=K, cn=cn: (0.5 * lam @ K @ lam + cn @ lam, K @ lam + cn), np.zeros(len(work)),
                       jac=True, method="L-BFGS-B", bounds=[(0, None)] * len(work),
                       options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12})
        d = G.T @ torch.from_numpy(res.x)
        if not np.isfinite(res.fun) or res.fun < -1e12:
            break  # dual unbounded: t cannot be the argmax anywhere
    if not feasible:  # final check
        viol, scale = _constraint_slack(W, bias, mu, A, d, target)
        feasible = bool(float(viol.min()) >= -1e-6 * scale)
    return d, feasible


def _whiten(X: torch.Tensor, ridge: float, variant: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(μ [H], A [H, H], z [n, H])`` for activations ``X[n, H]`` (float64).

    ``Σ = cov(X) + ridge·tr(Σ)/H·I = A Aᵀ`` (Cholesky) and ``z = (X − μ) A^{-T}``, so that ``X = μ + z Aᵀ``;
    ``variant="published"`` computes ``z = X − μ A^{-T}`` as the reference code does (operator precedence).
    """
    n, H = X.shape
    mu = X.mean(0)
    Xc = X - mu
    S = Xc.T @ Xc / (n - 1)
    S = S + ridge * float(S.diagonal().mean()) * torch.eye(H, dtype=torch.float64)
    A = torch.linalg.cholesky(S)
    AinvT = torch.linalg.inv(A.T)
    Z = X - mu @ AinvT if variant == "published" else Xc @ AinvT
    return mu, A, Z


def _target_direction(W: torch.Tensor, bias: torch.Tensor | None, mu: torch.Tensor, A: torch.Tensor,
                      target: int) -> tuple[torch.Tensor | None, float]:
    """Unit whitened direction ``d̂ [H]`` towards "t is the argmax" and the distance ``‖d‖`` to it.

    ``d`` is :func:`_shortest_direction`'s; where t is already the argmax at the mean (``d = 0``) it is the direction
    ``Aᵀ(W_t − W_r)`` that widens t's lead over the runner-up r. Returns ``(None, inf)`` where t is the argmax nowhere
    (``W_t`` inside the convex hull of the other rows).
    """
    d, feasible = _shortest_direction(W, bias, mu, A, target)
    if not feasible:
        return None, math.inf
    norm = float(d.norm())
    if norm == 0:  # t is already the argmax at the mean: use the direction that widens its lead over the runner-up
        logits = W @ mu + (bias if bias is not None else 0)
        logits[target] = -math.inf
        d = A.T @ (W[target] - W[int(logits.argmax())])
    return d / float(d.norm()), norm


def _acceptance_intervals(base: torch.Tensor, mu: torch.Tensor, A: torch.Tensor, dhat: torch.Tensor, W: torch.Tensor,
                          bias: torch.Tensor | None, target: int,
                          chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """For each whitened ``base_j [n, H]``, the interval ``[lo_j, hi_j]`` of ``a`` with t the argmax at
    ``base_j + a d̂``.

    At activation ``x_j + a·e`` (``x_j = μ + A base_j``, ``e = A d̂``) the margin over v is
    ``Δ_v(x_j) + a·s_v`` with ``Δ_v(x) = (W_t − W_v)·x + b_t − b_v`` and slope ``s_v = (W_t − W_v)·e``. The interval
    is the intersection of the half-lines ``Δ_v + a·s_v ≥ 0`` over v ≠ t:

        lo_j = max_{s_v > 0} −Δ_v(x_j)/s_v,    hi_j = min_{s_v < 0} −Δ_v(x_j)/s_v,

    empty (``hi = −inf``) when some ``s_v = 0`` has ``Δ_v < 0``. Each bound is affine in ``x_j``:
    ``−Δ_v(x)/s_v = x·(W_v − W_t)/s_v + (b_v − b_t)/s_v``, so one product of ``x_j`` with the rows
    ``(W_v − W_t)/s_v`` of each sign, plus ``(b_v − b_t)/s_v``, gives every bound (float64, ``chunk`` rows at a
    time). Returns ``(lo [n], hi [n])``.
    """
    slope = (W[target][None] - W) @ (A @ dhat)  # s_v [V]
    pos, neg, zero = slope > 1e-12, slope < -1e-12, slope.abs() <= 1e-12
    pos[target] = neg[target] = zero[target] = False
    b = torch.zeros(W.shape[0], dtype=W.dtype) if bias is None else bias

    def bound_rows(keep: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``((W_v − W_t)·scale_v [m, H], (b_v − b_t)·scale_v [m])`` for the m tokens v of ``keep``."""
        idx = torch.nonzero(keep).flatten()
        return (W.index_select(0, idx).sub_(W[target]).mul_(scale[idx, None]),
                (b.index_select(0, idx) - b[target]).mul_(scale[idx]))

    rows_lo, rows_hi = bound_rows(pos, 1 / slope), bound_rows(neg, 1 / slope)
    rows_flat = bound_rows(zero, torch.ones_like(slope))  # −Δ_v itself where the slope is zero
    X = mu + base @ A.T  # [n, H]
    lo = torch.full((X.shape[0],), -math.inf, dtype=torch.float64)
    hi = torch.full((X.shape[0],), math.inf, dtype=torch.float64)
    for s in range(0, X.shape[0], chunk):
        x = X[s:s + chunk]
        if len(rows_lo[0]):
            lo[s:s + chunk] = torch.nn.functional.linear(x, *rows_lo).amax(1)
        if len(rows_hi[0]):
            hi[s:s + chunk] = torch.nn.functional.linear(x, *rows_hi).amin(1)
        if len(rows_flat[0]):
            hi[s:s + chunk][(torch.nn.functional.linear(x, *rows_flat) > 0).any(1)] = -math.inf  # −Δ_v > 0
    return lo, hi


def _accepted_fractions(a: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> np.ndarray:
    """``f_j = (1/n) #{i : lo_j ≤ a_i ≤ hi_j}`` ``[n]``, counted with a sorted search over ``a [n]``."""
    n = a.shape[0]
    a_sorted = np.sort(a.numpy())
    cnt = np.searchsorted(a_sorted, hi.numpy(), "right") - np.searchsorted(a_sorted, lo.numpy(), "left")
    return np.clip(cnt, 0, None) / n


def qld_from_activations(acts, W_U, target: int, bias=None, variant: str = "correct", ridge: float = 1e-6,
                         confidence: float = 0.95) -> TargetEstimate:
    """Quadratic logit decomposition on given activations ``acts[n, H]`` and unembedding ``W_U[V, H]``.

    1. Whiten (:func:`_whiten`): ``μ = mean(acts)``, ``Σ = cov(acts) + ridge·tr(Σ)/H·I = A Aᵀ`` (Cholesky),
       ``z = (act − μ) A^{-T}`` (rows), so that ``act = μ + A z``.
    2. ``d`` = the shortest whitened vector that makes ``t`` the argmax (:func:`_shortest_direction`),
       ``d̂ = d/‖d‖`` (:func:`_target_direction`).
    3. Split ``z_j = a_j d̂ + b_j`` (``a_j = z_j·d̂``, ``b_j ⟂ d̂``) and assume ``a ⟂⟂ b``. For each ``b_j`` the set
       ``{a : t = argmax ℓ(μ + A(b_j + a d̂))}`` is an interval ``[lo_j, hi_j]`` (:func:`_acceptance_intervals`). Then
       ``p̂ = (1/n²) Σ_{i,j} 1[lo_j ≤ a_i ≤ hi_j]``, counted with a sorted search over ``a``
       (:func:`_accepted_fractions`).

    ``variant="published"`` reproduces the two bugs of the public reference code: the whitening is computed as
    ``act − μ @ inv(Aᵀ)`` (operator precedence: only the mean is transformed) and the interval bounds use the full
    whitened sample ``z_j`` instead of its orthogonal part ``b_j`` (the interval then refers to ``z_j + a d̂``).
    The interval ``[ci_low, ci_high]`` is statistical only (``p̂ ± z·sd_j(f_j)/√n`` with ``f_j`` the fraction of
    ``a`` accepted for ``b_j``, z at ``confidence``, default 0.95, Wu & Hilton's level); it does not cover the error
    of the independence assumption.
    """
    if variant not in ("correct", "published"):
        raise ValueError(f"variant must be 'correct' or 'published', got {variant!r}")
    X = torch.as_tensor(acts).to(torch.float64).cpu()
    W = torch.as_tensor(W_U).detach().to(torch.float64).cpu()
    b_ = None if bias is None else torch.as_tensor(bias).detach().to(torch.float64).cpu()
    n, _ = X.shape
    if n < 2:
        raise ValueError(f"acts must hold at least 2 samples, got {n}")
    mu, A, Z = _whiten(X, ridge, variant)
    name = "qld" if variant == "correct" else "qld_published"
    dhat, norm = _target_direction(W, b_, mu, A, int(target))
    if dhat is None:  # t is the argmax nowhere (W_t inside the convex hull of the other rows)
        return TargetEstimate(0.0, 0.0, 0.0, n, name, {"feasible": False, "d_norm": math.inf})
    a = Z @ dhat
    Bz = Z - a[:, None] * dhat[None]
    lo, hi = _acceptance_intervals(Z if variant == "published" else Bz, mu, A, dhat, W, b_, int(target))
    f = _accepted_fractions(a, lo, hi)
    p = float(f.mean())
    se = float(f.std(ddof=1) / math.sqrt(n))
    z = z_value(confidence)
    return TargetEstimate(p, max(0.0, p - z * se), min(1.0, p + z * se), n, name,
                          {"d_norm": norm, "feasible": True, "se": se})


def _sample_hidden(scorer: Scorer, D: torch.Tensor, n: int, seed: int, batch_size: int = 512) -> torch.Tensor:
    """Final pre-unembedding activations ``[n, H]`` (float64, CPU) of ``n`` inputs drawn from D with ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for s in range(0, n, batch_size):
        out.append(scorer.hidden(sample_inputs(D, min(batch_size, n - s), g)).double().cpu())
    return torch.cat(out)


def qld(scorer: Scorer, D, target: int, budget: int, seed: int = 0, variant: str = "correct",
        batch_size: int = 512, confidence: float = 0.95) -> TargetEstimate:
    """QLD [WH] on ``budget`` samples of the final pre-unembedding activations (see :func:`qld_from_activations`;
    ``confidence`` defaults to 0.95, Wu & Hilton's level)."""
    D = check_estimator_arguments(scorer, D, target, budget, seed)
    if budget < 2:
        raise ValueError(f"budget must be at least 2 for qld, got {budget}")
    acts = _sample_hidden(scorer, D, budget, seed, batch_size)
    return qld_from_activations(acts, scorer.unembedding_float64(), int(target), scorer.bias, variant=variant,
                                confidence=confidence)


# ============================================================================================ GLD


def gaussian_tail_fit(deltas, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float, float, float]:
    """GLD's fit: ``N(m, s²)`` to ``deltas[n]`` (mean, sd with ddof 1), tail mass ``p̂ = P(N(m, s²) ≥ 0) = Φ(m/s)``.

    ``s = 0`` gives ``p̂ = 1[m ≥ 0]``. Interval: percentiles of ``Φ(m'/s')`` over the sampling distribution of the
    fitted parameters (``m' ~ N(m, s²/n)``, ``s' ~ N(s, s²/2n)``, 2000 draws from ``seed``) at ``confidence``
    (default 0.95, Wu & Hilton's level); statistical only.
    Returns ``(p̂, ci_low, ci_high, m, s)``.
    """
    from scipy.stats import norm

    dl = np.asarray(deltas, dtype=np.float64).ravel()
    n = dl.size
    if n < 2 or not np.all(np.isfinite(dl)):
        raise ValueError(f"deltas must hold at least 2 finite values, got {n} values ({int(np.sum(~np.isfinite(dl)))} "
                         f"non-finite)")
    m, s = float(dl.mean()), float(dl.std(ddof=1))
    if s == 0:
        p = float(m >= 0)
        return p, p, p, m, s
    p = float(norm.cdf(m / s))
    rng = np.random.default_rng(seed)
    ms = rng.normal(m, s / math.sqrt(n), 2000)
    ss = np.abs(rng.normal(s, s / math.sqrt(2 * n), 2000)) + 1e-300
    lo, hi = np.quantile(norm.cdf(ms / ss), [(1 - confidence) / 2, (1 + confidence) / 2])
    return p, float(min(lo, p)), float(max(hi, p)), m, s


def gld(scorer: Scorer, D, target: int, budget: int, seed: int = 0, batch_size: int = 512,
        confidence: float = 0.95) -> TargetEstimate:
    """Gaussian logit difference [WH]: fit ``N(m, s²)`` to ``Δ = ℓ_t − max_v ℓ_v`` (over all v, t included, as the
    paper and the reference code: ``Δ ≤ 0``, and ``Δ = 0`` exactly when t is the argmax) over ``budget`` samples of
    D; ``p̂ = P(N(m, s²) ≥ 0) = Φ(m/s)`` (:func:`gaussian_tail_fit`, which also gives the statistical interval at
    ``confidence``, default 0.95, Wu & Hilton's level).

    Where t is rare the margin ``Δ' = ℓ_t − max_{v≠t} ℓ_v`` (an earlier version of this function) equals Δ on all but
    the few hits, and both fits agree; measured on the test model (``rea.lm.tiny.tiny_model``, 3 positions × 30 tokens,
    4096 samples, 195–212 targets with p in [1e-4, 3e-2]), the two estimates differ by a median 1 % (max 18 %) and
    their mean squared log errors against the exact p are 1.24 vs 1.24 (1 layer) and 1.22 vs 1.22 (2 layers).
    """
    D = check_estimator_arguments(scorer, D, target, budget, seed)
    if budget < 2:
        raise ValueError(f"budget must be at least 2 for gld, got {budget}")
    g = torch.Generator().manual_seed(int(seed))
    deltas = []
    for s in range(0, budget, batch_size):
        logits = scorer(sample_inputs(D, min(batch_size, budget - s), g)).double()
        deltas.append((logits[:, target] - logits.max(1).values).cpu())
    p, lo, hi, m, s = gaussian_tail_fit(torch.cat(deltas).numpy(), confidence, seed)
    return TargetEstimate(p, lo, hi, budget, "gld", {"mean": m, "std": s})
