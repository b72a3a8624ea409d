"""Scoring single-token estimates against the truth, as [WH] do, and running every method on many targets.

Losses: :func:`is_loss` (Itakura–Saito-inspired, [WH]'s main loss), :func:`sq_log_error`; :func:`fit_log_affine` and
:func:`fitted_is_loss` score an estimator after the best affine map in log space chosen on held-out targets (it
forgives a systematic factor, the extrapolation methods' typical error); :func:`optimal_constant` is the best single
constant guess. :func:`compare_methods` runs methods × targets, :func:`results_table` summarises the runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rea.single_token.registry import estimate_many
from rea.single_token.scorer import Scorer


def is_loss(p, p_hat) -> np.ndarray:
    """Itakura–Saito-inspired loss ``L(p, p̂) = p/p̂ − ln(p/p̂) − 1`` (elementwise; ``inf`` when ``p̂ = 0 < p``)."""
    p = np.asarray(p, float)
    q = np.asarray(p_hat, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = p / q
        out = r - np.log(r) - 1
    return np.where(q == p, 0.0, np.where(q <= 0, np.inf, out))


def sq_log_error(p, p_hat, floor: float = 1e-12) -> np.ndarray:
    """``(ln p − ln max(p̂, floor))²`` (elementwise)."""
    return (np.log(np.asarray(p, float)) - np.log(np.maximum(np.asarray(p_hat, float), floor))) ** 2


def _log_is_loss(lp, lq):
    """IS loss with ``ln p`` and ``ln p̂`` given: ``e^{lp−lq} − (lp−lq) − 1``."""
    d = np.clip(lp - lq, -700, 700)
    return np.exp(d) - d - 1


def fit_log_affine(p, p_hat, floor: float = 1e-12) -> tuple[float, float]:
    """``(a, c)`` minimising ``mean L(p, a·p̂^c)`` (an affine map in log space), zeros replaced by ``floor``."""
    from scipy.optimize import minimize

    lp = np.log(np.asarray(p, float))
    lq = np.log(np.maximum(np.asarray(p_hat, float), floor))
    obj = lambda th: float(np.mean(_log_is_loss(lp, th[0] + th[1] * lq)))  # noqa: E731
    best = None
    for c0 in (1.0, 0.5, 0.0):
        res = minimize(obj, np.array([float(np.mean(lp - c0 * lq)), c0]), method="Nelder-Mead",
                       options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 4000})
        if best is None or res.fun < best.fun:
            best = res
    return float(np.exp(best.x[0])), float(best.x[1])


def held_out_is_losses(p, p_hat, folds: int = 2, seed: int = 0, floor: float = 1e-12) -> np.ndarray:
    """Per-target IS losses ``[n]`` after a log-affine fit ``p̂ → a·p̂^c`` chosen on held-out targets: the targets are
    split into ``folds`` folds (``default_rng(seed).permutation``), and each target is scored by the fit of the other
    folds. Zeros in ``p_hat`` are replaced by ``floor``."""
    p = np.asarray(p, float)
    q = np.maximum(np.asarray(p_hat, float), floor)
    n = len(p)
    if n < 2 * folds:
        raise ValueError(f"need at least 2·folds = {2 * folds} targets for a held-out fit, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    losses = np.empty(n)
    for f in range(folds):
        test = perm[f::folds]
        train = np.setdiff1d(perm, test)
        a, c = fit_log_affine(p[train], q[train], floor)
        losses[test] = _log_is_loss(np.log(p[test]), np.log(a) + c * np.log(q[test]))
    return losses


def fitted_is_loss(p, p_hat, folds: int = 2, seed: int = 0, floor: float = 1e-12) -> float:
    """Mean IS loss after a log-affine fit ``p̂ → a·p̂^c`` chosen on held-out targets (``folds``-fold cross-fit): the
    mean of :func:`held_out_is_losses`."""
    return float(held_out_is_losses(p, p_hat, folds, seed, floor).mean())


def optimal_constant(p, loss: str = "is") -> float:
    """The single constant estimate best under the loss: ``mean(p)`` for IS loss (``∂/∂c Σ L = 0``),
    ``exp(mean ln p)`` for squared log error."""
    p = np.asarray(p, float)
    if loss == "is":
        return float(p.mean())
    if loss == "sq_log":
        return float(np.exp(np.log(p).mean()))
    raise ValueError(f"loss must be 'is' or 'sq_log', got {loss!r}")


def compare_methods(scorer: Scorer, D, targets: Sequence[int], p_true: Sequence[float], methods: Sequence[str],
                    budget: int, seed: int = 0, hyper: dict[str, dict] | None = None, label: dict | None = None,
                    progress: bool = True):
    """Run every method on every target; return one row per (method, target) as a DataFrame with columns
    ``method, target, p_true, p_hat, ci_low, ci_high, n_calls, seconds, covered`` plus ``label``'s entries.

    Row j of the (method, target) list, methods outer, uses seed ``seed + j``; each method runs its targets through
    :func:`rea.single_token.registry.estimate_many` (ITGIS and MHIS in lockstep, ``seconds`` then the lockstep's wall
    time per target)."""
    import pandas as pd
    from tqdm.auto import tqdm

    hyper = hyper or {}
    rows = []
    n = len(targets)
    for i, m in enumerate(tqdm(methods, desc="methods", disable=not progress)):
        jobs = [(int(t), seed + i * n + j) for j, t in enumerate(targets)]
        for (t, _), pt, est in zip(jobs, p_true, estimate_many(m, scorer, D, jobs, budget, **hyper.get(m, {}))):
            rows.append({**(label or {}), "method": m, "target": t, "p_true": float(pt), "p_hat": est.p_hat,
                         "ci_low": est.ci_low, "ci_high": est.ci_high, "n_calls": est.n_calls,
                         "seconds": est.info["seconds"], "covered": est.ci_low <= pt <= est.ci_high})
    return pd.DataFrame(rows)


def results_table(records, by: Sequence[str] = ("depth",), folds: int = 2, seed: int = 0):
    """Summary per method × ``by`` (e.g. model depth) from :func:`compare_methods` rows.

    Columns: ``n_targets``, ``is_loss_raw`` (mean IS loss of raw estimates), ``is_loss_fit`` (after the held-out
    log-affine fit; needs ≥ 2·folds targets, else NaN), ``sq_log_err`` (mean squared error of ln p̂, zeros floored at
    1e-12), ``coverage`` (fraction of intervals containing the truth), ``zero_frac``, ``sec_per_target``. A row
    ``constant`` per group gives the optimal constant's losses (IS loss of ``mean p``; squared log error of the
    geometric mean).
    """
    import pandas as pd

    df = pd.DataFrame(records)
    by = [b for b in by if b in df.columns]
    out = _method_rows(df, by, folds, seed) + _constant_rows(df, by)
    return pd.DataFrame(out).sort_values(by + ["method"]).reset_index(drop=True)


def _method_rows(df, by: list[str], folds: int, seed: int) -> list[dict]:
    """One summary row per (``by`` group, method): losses, coverage, zero fraction and seconds per target."""
    out = []
    for key, grp in df.groupby(by + ["method"], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        p, q = grp["p_true"].to_numpy(), grp["p_hat"].to_numpy()
        fit = fitted_is_loss(p, q, folds, seed) if len(p) >= 2 * folds else float("nan")
        out.append({**dict(zip(by + ["method"], key)), "n_targets": len(p),
                    "is_loss_raw": float(np.mean(is_loss(p, q))), "is_loss_fit": fit,
                    "sq_log_err": float(np.mean(sq_log_error(p, q))), "coverage": float(grp["covered"].mean()),
                    "zero_frac": float(np.mean(q == 0)), "sec_per_target": float(grp["seconds"].mean())})
    return out


def _constant_rows(df, by: list[str]) -> list[dict]:
    """One ``constant`` row per ``by`` group: the losses of :func:`optimal_constant` over the group's targets."""
    out = []
    for key, grp in df.groupby(by, sort=False) if by else [((), df)]:
        key = key if isinstance(key, tuple) else (key,)
        p = grp.drop_duplicates("target")["p_true"].to_numpy()
        out.append({**dict(zip(by, key)), "method": "constant", "n_targets": len(p),
                    "is_loss_raw": float(np.mean(is_loss(p, optimal_constant(p, "is")))),
                    "is_loss_fit": float(np.mean(is_loss(p, optimal_constant(p, "is")))),
                    "sq_log_err": float(np.mean(sq_log_error(p, optimal_constant(p, "sq_log")))),
                    "coverage": float("nan"), "zero_frac": 0.0, "sec_per_target": 0.0})
    return out
