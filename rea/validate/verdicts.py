"""Pass rules of the checks: the :class:`Check` row, the ln Z bound (:func:`log_z_within`) and the coverage verdict
(:func:`coverage_verdict`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rea.stats import z_value


@dataclass
class Check:
    """One row of the ``make validate`` table: the check's name, whether it passed, and a one-line detail."""

    name: str
    passed: bool
    detail: str


LOG_Z_K = z_value(0.999)
"""ln Z checks allow |ln Ẑ − ln Z| ≤ max(LOG_Z_K·σ, 1/√N_eff): z at 99.9 %, since each check compares ~10 λ at once."""


def log_z_within(lz: pd.DataFrame, truth, n_eff: float) -> tuple[np.ndarray, str]:
    r"""|ln Ẑ(λ) − ln Z(λ)| ≤ max(k·σ_λ, 1/√N_eff) per λ, k = z_{99.9 %} ≈ 3.29 -> (ok ``[T]``, one-line detail).

    σ_λ is MBAR's asymptotic standard error (with effective counts for correlated chains). The floor 1/√N_eff nats
    (N_eff: effective pooled sample size, 0.005–0.02 nats here) is the resolution of a ratio estimated from N_eff
    samples; it only matters near λ = 0, where σ_λ → 0 (exactly 0 at the reference) and round-off (~1e-15) or the
    solver's tolerance (1e-10) would otherwise decide. It replaces the old "within 2 % of |ln Z| or inside the 96 %
    CI", which at ln Z ≈ 7–25 allowed 0.14–0.5 nats. Measured over seeds (see the tests): worst |err|/σ ≈ 1.5–3.1.
    """
    err = np.abs(lz.log_z.to_numpy() - np.asarray(truth, dtype=np.float64))
    sigma = lz.sigma.to_numpy()
    floor = 1.0 / np.sqrt(float(n_eff))
    bound = np.maximum(LOG_Z_K * sigma, floor)
    ok = err <= bound
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sigma > 0, err / sigma, 0.0)
    i = int(np.argmax(err - bound))
    return ok, (f"{int(ok.sum())}/{ok.size} with |Δln Z| ≤ max({LOG_Z_K:.2f}σ, {floor:.3f} nats); worst "
                f"|Δ| = {err.max():.3f} nats, max |Δ|/σ = {ratio.max():.2f} (tightest at λ = {lz.lam.iloc[i]:g}: "
                f"{err[i]:.3f} vs {bound[i]:.3f})")


def coverage_verdict(covered) -> tuple[bool, float, np.ndarray]:
    """Pass rule of the coverage checks for a boolean ``covered[R, S]`` (R repeats, S tails; a failed run = miss).

    The headline rate pools all R·S intervals; the check passes when it is ≥ 0.90 and no single tail is
    significantly below 0.90 (one-sided binomial test, p < 0.01: with 50 repeats a tail fails at ≤ 39/50).
    Requiring every tail ≥ 0.90 would fail a perfectly calibrated 96 % interval in ~5 % of checks per tail (binomial
    noise of 50 repeats), ~25 % over six rows. Returns (passed, pooled rate, per-tail rates).
    """
    from scipy import stats

    covered = np.asarray(covered, dtype=bool)
    R = covered.shape[0]
    per = covered.mean(axis=0)
    low = stats.binom.cdf(covered.sum(axis=0), R, 0.90) < 0.01
    pooled = float(covered.mean())
    return bool(pooled >= 0.90 and not low.any()), pooled, per
