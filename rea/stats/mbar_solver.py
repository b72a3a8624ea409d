r"""The MBAR equations of exponentially tilted states and their solution by damped Newton–Raphson [Shirts & Chodera
2008], in the style of ``pymbar.mbar_solvers``: pure functions of arrays, no state.

States k = 1..K are p_{λ_k}(x) ∝ e^{−λ_k φ(x)} p_M(x) with reduced potentials u_k(x) = λ_k φ(x) and N_k samples.
Since u_kn depends on a sample only through φ_n, samples with equal φ are merged into U distinct values φ_u with
multiplicities c_u (:func:`merge_identical`), exactly. The free energies f_k = −ln Z(λ_k)/Z(0) minimise the convex
objective

.. math:: F(f) = \sum_u c_u \ln \sum_k N_k e^{f_k - \lambda_k \phi_u} - \sum_k N_k f_k, \qquad f_\mathrm{ref} = 0,

whose stationarity conditions are the MBAR equations Σ_u c_u W_uk = 1, with the weights

.. math:: W_{uk} = \frac{e^{f_k - \lambda_k \phi_u}}{\sum_j N_j e^{f_j - \lambda_j \phi_u}}.

With responsibilities P_ku = N_k W_uk (Σ_k P_ku = 1) the gradient is g_k = N_k(Σ_u c_u W_uk − 1) and the Hessian
H = diag(P c) − (P ∘ c) Pᵀ. :func:`solve_tilted_mbar` minimises F by Newton steps with a backtracking (Armijo) line
search, around a base f̄ whose exponentials E (:func:`scaled_exponentials`) are built once and reused while the
step d = f − f̄ stays small:

* :func:`mbar_objective` -- F(f̄ + d) up to a constant, with s = e^d and the denominators den_u = Σ_k s_k E_ku;
* :func:`mbar_weight_sums` -- Σ_u c_u W_uk; :func:`mbar_gradient` -- g; :func:`mbar_hessian` -- H;
* :func:`newton_direction` -- the Newton step on the free coordinates (f_ref fixed);
* :func:`backtracking_line_search` -- the Armijo step length;
* :func:`newton_iterations` -- Newton steps around one base; :func:`solve_tilted_mbar` -- the solver loop;
* :func:`integration_start` -- the warm start by thermodynamic integration.

Also here: :func:`fast_logsumexp` and :func:`chunk_slices`, numerical helpers shared with
:class:`rea.stats.mbar.TiltedMBAR`. The asymptotic errors of the solution are in :mod:`rea.stats.mbar_errors`.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "fast_logsumexp",
    "chunk_slices",
    "merge_identical",
    "integration_start",
    "scaled_exponentials",
    "mbar_objective",
    "mbar_weight_sums",
    "mbar_gradient",
    "mbar_hessian",
    "newton_direction",
    "backtracking_line_search",
    "newton_iterations",
    "solve_tilted_mbar",
]


# --------------------------------------------------------------------------------------------- numerical helpers


def fast_logsumexp(a, axis=None, b=None):
    """``scipy.special.logsumexp(a, axis, b)`` for real a and b ≥ 0, without scipy's per-call overhead (~4× faster)."""
    a = np.asarray(a)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(a - m)
    if b is not None:
        e *= b
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(e, axis=axis))
    return out + (np.squeeze(m, axis=axis) if axis is not None else m.reshape(()))


def chunk_slices(n: int, size: int):
    """Consecutive slices of at most ``size`` of range(n): the blocks of the O(N K) passes over the samples."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


# --------------------------------------------------------------------------------------------- inputs, warm start


def merge_identical(phi: np.ndarray, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values φ_u ``[U]`` (sorted) of ``phi`` ``[N]`` and their multiplicities c_u ``[U]`` (float64).

    With ``counts`` ``[N]`` (weighted rows) c_u = Σ_{n: φ_n = φ_u} counts_n, else the number of such n.
    """
    if counts is not None:
        phi_u, inv = np.unique(phi, return_inverse=True)
        count_u = np.bincount(inv.ravel(), weights=counts, minlength=phi_u.size)
    else:
        phi_u, count_u = np.unique(phi, return_counts=True)
    return phi_u, count_u.astype(np.float64)


def integration_start(lambdas, state, phi, counts, n_k) -> np.ndarray:
    r"""Warm start f⁰ ``[K]`` by thermodynamic integration over the sorted grid ``lambdas`` ``[K]``.

    .. math:: \frac{df}{d\lambda} = E_\lambda[\phi] \;\Rightarrow\; f^0_k = \sum_{i<k} (\lambda_{i+1} - \lambda_i)
              \frac{\bar\phi_{i+1} + \bar\phi_i}{2}, \qquad \bar\phi_k = \frac{1}{N_k}\sum_{n \in k} c_n \phi_n,

    from each sample's state index ``state`` ``[N]``, value ``phi`` ``[N]``, multiplicity ``counts`` ``[N]`` and the
    states' sizes ``n_k`` ``[K]`` (f⁰ = 0 at the first λ; the solver shifts it to f_ref = 0).
    """
    sums = np.bincount(state, weights=phi * counts, minlength=lambdas.size)
    mean = sums / n_k
    return np.concatenate([[0.0], np.cumsum(np.diff(lambdas) * (mean[1:] + mean[:-1]) / 2)])


# -------------------------------------------------------------------------------------------- objective and derivatives


def scaled_exponentials(phi, lambdas, log_n, base, chunk: int) -> np.ndarray:
    r"""E ``[K, U]`` around the base free energies f̄ = ``base`` ``[K]``, built in blocks of ``chunk`` values:

    .. math:: E_{ku} = N_k\, e^{\bar f_k - \lambda_k \phi_u - m_u}, \qquad m_u = \max_k (\ln N_k + \bar f_k -
              \lambda_k \phi_u),

    so that every column's largest entry is 1 (``log_n`` = ln N_k ``[K]``, ``phi`` ``[U]``).
    """
    E = np.empty((lambdas.size, phi.size))
    for sl in chunk_slices(phi.size, chunk):
        a = (log_n + base)[:, None] - lambdas[:, None] * phi[None, sl]
        a -= a.max(axis=0, keepdims=True)
        np.exp(a, out=E[:, sl])
    return E


def mbar_objective(E, count, n_k, d):
    r"""The objective at f = f̄ + d, up to a constant: (s ``[K]``, den ``[U]``, F) with

    .. math:: s_k = e^{d_k}, \qquad \mathrm{den}_u = \sum_k s_k E_{ku}, \qquad
              F = \sum_u c_u \ln \mathrm{den}_u - \sum_k N_k d_k.

    ``E`` ``[K, U]`` from :func:`scaled_exponentials`, ``count`` c_u ``[U]``, ``n_k`` ``[K]``, ``d`` ``[K]``.
    """
    s = np.exp(d)
    den = s @ E
    return s, den, float(count @ np.log(den) - n_k @ d)


def mbar_weight_sums(E, count, n_k, s, den) -> np.ndarray:
    r"""Σ_u c_u W_uk ``[K]`` at f̄ + d (all 1 at the solution):

    .. math:: \sum_u c_u W_{uk} = \frac{s_k}{N_k} \sum_u E_{ku} \frac{c_u}{\mathrm{den}_u}.
    """
    r = count / den
    return s * (E @ r) / n_k


def mbar_gradient(n_k, weight_sums) -> np.ndarray:
    r"""Gradient of the objective ``[K]``: g_k = ∂F/∂f_k = N_k (Σ_u c_u W_uk − 1)."""
    return n_k * (weight_sums - 1.0)


def mbar_hessian(E, count, n_k, s, den, weight_sums, work: np.ndarray) -> np.ndarray:
    r"""Hessian of the objective ``[K, K]``:

    .. math:: H_{kl} = \delta_{kl} N_k \sum_u c_u W_{uk} - s_k s_l \sum_u \frac{c_u E_{ku} E_{lu}}{\mathrm{den}_u^2},

    computed as Q Qᵀ with Q_ku = E_ku √c_u / den_u written into ``work`` ``[K, U]`` (a reused buffer).
    """
    np.multiply(E, (np.sqrt(count) / den)[None, :], out=work)
    return np.diag(n_k * weight_sums) - np.outer(s, s) * (work @ work.T)


def newton_direction(H, g, free) -> np.ndarray:
    r"""Newton step ``[K]`` on the free coordinates ``free`` (bool ``[K]``; f_ref stays 0): solve H_ff δ_f = −g_f.

    A singular H_ff falls back to least squares; a step that is not finite or not a descent direction (δ·g ≥ 0)
    to the scaled gradient step δ_f = −g_f / diag(H_ff).
    """
    Hf, gf = H[np.ix_(free, free)], g[free]
    try:
        step_f = np.linalg.solve(Hf, -gf)
    except np.linalg.LinAlgError:
        step_f = np.linalg.lstsq(Hf, -gf, rcond=None)[0]
    if not np.all(np.isfinite(step_f)) or step_f @ gf >= 0:
        step_f = -gf / np.maximum(np.diag(Hf), 1e-300)  # fall back to a scaled gradient step
    step = np.zeros(g.size)
    step[free] = step_f
    return step


def backtracking_line_search(E, count, n_k, d, step, obj, slope):
    r"""Armijo backtracking from t = 1, halving t until

    .. math:: F(\bar f + d + t\,\delta) \le F(\bar f + d) + 10^{-4}\, t\, g\cdot\delta + 10^{-13} |F(\bar f + d)|

    with F finite, or t < 1e-10. ``obj`` = F at d, ``slope`` = g·δ. Returns (t, (s, den, F) at d + tδ).
    """
    t = 1.0
    while True:
        new = mbar_objective(E, count, n_k, d + t * step)
        obj_new = new[2]
        if (np.isfinite(obj_new) and obj_new <= obj + 1e-4 * t * slope + 1e-13 * abs(obj)) or t < 1e-10:
            return t, new
        t *= 0.5


# --------------------------------------------------------------------------------------------- the solver


def _anchored(f, ref):
    """f − f_ref: free energies relative to the reference state."""
    return f - f[ref]


def newton_iterations(E, count, n_k, base, ref, it, tol, max_iter, rebuild_at):
    r"""Newton steps d on f = f̄ + d with E fixed (:func:`scaled_exponentials` around f̄ = ``base``).

    Stops when max_k |Σ_u c_u W_uk − 1| < ``tol`` or after ``max_iter`` iterations in all (``it`` counts them across
    bases), or when the objective is no longer finite: returns (f, it, info) with f = f̄ + d − (f̄ + d)_ref. Stops as
    well when max_k |d_k| > ``rebuild_at`` (E would lose precision): returns (f, it, None), the caller rebuilds E.
    """
    free = np.arange(n_k.size) != ref
    d = np.zeros(n_k.size)
    work = np.empty_like(E)
    s, den, obj = mbar_objective(E, count, n_k, d)
    while True:
        col = mbar_weight_sums(E, count, n_k, s, den)
        err = float(np.max(np.abs(col - 1.0)))
        if err < tol or it >= max_iter:
            return _anchored(base + d, ref), it, {"iterations": it, "error": err, "converged": err < tol}
        it += 1
        g = mbar_gradient(n_k, col)
        H = mbar_hessian(E, count, n_k, s, den, col, work)
        step = newton_direction(H, g, free)
        t, (s_new, den_new, obj_new) = backtracking_line_search(E, count, n_k, d, step, obj, float(g @ step))
        if not np.isfinite(obj_new):
            return _anchored(base + d, ref), it, {"iterations": it, "error": np.inf, "converged": False}
        d = d + t * step
        s, den, obj = s_new, den_new, obj_new
        if np.max(np.abs(d)) > rebuild_at:
            return _anchored(base + d, ref), it, None


def solve_tilted_mbar(phi, count, lambdas, n_k, ref, f0, tol=1e-10, max_iter=200, rebuild_at=30.0):
    r"""Solve the MBAR equations of tilted states by damped Newton–Raphson on the convex objective (module docstring).

    Parameters
    ----------
    phi : float ``[U]`` distinct observable values; count : float ``[U]`` their multiplicities c_u
    lambdas : float ``[K]`` the states' biases; n_k : float ``[K]`` samples per state; ref : index of the reference
    f0 : float ``[K]`` starting free energies (e.g. :func:`integration_start`)
    tol : convergence target max_k |Σ_u c_u W_uk − 1|; max_iter : Newton iterations at most
    rebuild_at : the exponentials E (:func:`scaled_exponentials`) are rebuilt around the current f when |f − f̄|
        exceeds this, so an iteration is two K×U mat-vecs and one K×K×U product

    Returns
    -------
    f ``[K]`` (f_ref = 0) and a dict (iterations, error = max_k |Σ_u c_u W_uk − 1|, converged).
    """
    log_n = np.log(n_k)
    f = np.asarray(f0, dtype=np.float64) - f0[ref]
    it = 0
    chunk = max(1, (1 << 24) // lambdas.size)  # ≈ 128 MB of float64 per block when building E
    while True:
        base = f.copy()
        E = scaled_exponentials(phi, lambdas, log_n, base, chunk)
        f, it, info = newton_iterations(E, count, n_k, base, ref, it, tol, max_iter, rebuild_at)
        if info is not None:
            return f, info
