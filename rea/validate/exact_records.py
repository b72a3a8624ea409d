r"""Exact tilted samples of the toy and TPS-shaped records made of them (where TPS itself would be too slow).

For an additive pair observable φ = Σ_τ g(x_τ, x_{τ+1}) the tilted law p_λ ∝ e^{−λφ} p_M of the Markov toy is itself a
(time-inhomogeneous) Markov chain, the Doob transform of M_λ = A ∘ e^{−λG} with backward messages β_τ = M_λ β_{τ+1};
:func:`exact_tilted_phi` samples it exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rea import exact
from rea.validate.toy import PROMPT


def exact_tilted_phi(lm, prompt, length: int, lam: float, n: int, rng, observable="repeats") -> np.ndarray:
    """φ of ``n`` exact samples of p_λ ∝ e^{−λφ} p_M for an additive pair observable of the toy -> float ``[n]``."""
    a = lm.transition_matrix
    g, g1 = exact.pair_observable(lm, observable)
    x0 = exact.prompt_state(lm, prompt)
    m, m1 = a * np.exp(-lam * g), a * np.exp(-lam * g1)
    betas = [np.ones(a.shape[0])]  # betas[k] = message after position L − k
    for _ in range(length - 1):
        b = m @ betas[-1]
        betas.append(b / b.max())
    betas = betas[::-1]  # betas[t] for completion position t = 0..L−1
    x = np.full(n, x0)
    phi = np.zeros(n)
    for t in range(length):
        mat = m1 if t == 0 else m
        gg = g1 if t == 0 else g
        p = mat * betas[t][None, :]
        cum = np.cumsum(p / p.sum(1, keepdims=True), axis=1)
        u = rng.random(n)
        nxt = np.minimum((cum[x] < u[:, None]).sum(1), a.shape[0] - 1)
        phi += gg[x, nxt]
        x = nxt
    return phi


def records_from_exact(lm, prompt, length, lambdas, n_chains, n_steps, rng, observable="repeats") -> pd.DataFrame:
    """A TPS-shaped records table (chain, direction, lam, step, phi, cut) of exact tilted samples.

    Every nonzero λ gets ``n_chains`` chains of ``n_steps`` i.i.d. exact samples (direction = sign of λ).
    """
    rows = []
    for lam in lambdas:
        if lam == 0:
            continue
        d = 1 if lam > 0 else -1
        phi = exact_tilted_phi(lm, prompt, length, lam, n_chains * n_steps, rng, observable)
        rows.append(pd.DataFrame({
            "chain": np.repeat(np.arange(n_chains) + (0 if d > 0 else n_chains), n_steps), "direction": d,
            "lam": float(lam), "step": np.tile(np.arange(n_steps), n_chains), "phi": phi, "cut": 0,
        }))
    return pd.concat(rows, ignore_index=True)


def exact_pipeline(lm, L, lambdas, n_chains, n_steps, n_direct, rng) -> tuple[pd.DataFrame, np.ndarray]:
    """Exact stand-ins for a TPS run on the toy (Repeats, :data:`rea.validate.toy.PROMPT`): records of
    :func:`records_from_exact` and then ``n_direct`` exact samples of p_M (λ = 0)
    -> (records, direct φ ``[n_direct]``)."""
    rec = records_from_exact(lm, PROMPT, L, lambdas, n_chains, n_steps, rng)
    direct = exact_tilted_phi(lm, PROMPT, L, 0.0, n_direct, rng)
    return rec, direct
