r"""MBAR over exponentially tilted ensembles [REA §3.3, §4–6; Shirts & Chodera 2008]: :class:`TiltedMBAR`.

States k = 1..K are the tilted distributions p_{λ_k}(x) = Z(λ_k)^{-1} e^{-λ_k φ(x)} p_M(x); λ = 0 is p_M itself
(direct samples). With reduced potentials u_k(x) = λ_k φ(x) and N_k samples from state k, the free energies
f_k = −ln Z(λ_k) (relative to f at λ = 0, which is 0) solve

.. math:: f_i = -\ln \sum_{n=1}^{N} \frac{e^{-\lambda_i \phi_n}}{\sum_j N_j e^{f_j - \lambda_j \phi_n}},

and any expectation under p_M follows from the pooled samples, e.g. the tail probability

.. math:: \hat P_0(\phi \ge a) = \sum_n \frac{1[\phi_n \ge a]}{\sum_j N_j e^{f_j - \lambda_j \phi_n}}.

:class:`TiltedMBAR` solves the equations with its own damped Newton solver (:mod:`rea.stats.mbar_solver`; identical
φ merged, since u_kn = λ_k φ_n depends on a sample only through φ_n; converged to max_k |Σ_n W_nk − 1| < 1e-10; about
10× faster than ``pymbar.MBAR(..., solver_protocol="robust")``, which remains available), checks that they
converged, checks the overlap of neighbouring biases, and computes everything else in log space, so that
probabilities far below 1e-30 stay representable (the ``log_p`` columns are exact down to 1e-300 and beyond); the
asymptotic errors are those of :mod:`rea.stats.mbar_errors`.

Sign convention: λ > 0 favours low φ, λ < 0 favours high φ.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from rea.arguments import as_1d_finite, check_confidence
from rea.stats.intervals import z_value
from rea.stats.mbar_errors import asymptotic_covariance, difference_sigma
from rea.stats.mbar_events import EventQueries
from rea.stats.mbar_solver import chunk_slices, fast_logsumexp, integration_start, merge_identical, solve_tilted_mbar
from rea.stats.pymbar_compat import captured_pymbar_output, import_pymbar, quiet_pymbar_mbar

__all__ = ["OverlapWarning", "MBARConvergenceError", "TiltedMBAR"]


class OverlapWarning(UserWarning):
    """Neighbouring biases overlap less than the threshold (0.03 in [REA]); the reconstruction may be unreliable."""


class MBARConvergenceError(RuntimeError):
    """The MBAR self-consistent equations did not converge (non-finite f_k or Σ_n W_nk ≠ 1)."""


# --------------------------------------------------------------------------------------------- input checks


def _checked_samples(phi, lam, counts):
    """(phi ``[N]``, lam ``[N]``, counts ``[N]`` float or None) checked, rows with zero count dropped."""
    phi = as_1d_finite("phi", phi)
    lam = np.asarray(lam, dtype=np.float64)
    if lam.ndim == 0:
        lam = np.full(phi.size, float(lam))
    if lam.ndim != 1 or lam.size != phi.size:
        raise ValueError(f"lam must give one λ per sample: length {lam.size}, but phi has length {phi.size}")
    lam = as_1d_finite("lam", lam)
    if counts is None:
        return phi, lam, None
    counts = np.asarray(counts)
    numeric = np.issubdtype(counts.dtype, np.integer) or np.issubdtype(counts.dtype, np.floating)
    if counts.shape != phi.shape or not numeric or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(
            f"counts must give a non-negative finite multiplicity per sample (length {phi.size}), got "
            f"dtype {counts.dtype} and shape {counts.shape}"
        )
    keep = counts > 0
    phi, lam, counts = phi[keep], lam[keep], counts[keep].astype(np.float64)
    if phi.size == 0:
        raise ValueError("counts are all zero: no samples left")
    return phi, lam, counts


def _state_grid(lam: np.ndarray, lambdas) -> np.ndarray:
    """The sorted state grid ``[K]``: the distinct ``lam``, or ``lambdas`` checked against them; must contain 0."""
    if lambdas is None:
        grid = np.unique(lam)
    else:
        grid = np.unique(as_1d_finite("lambdas", lambdas))
        missing = grid[~np.isin(grid, lam)]
        if missing.size:
            raise ValueError(
                f"lambdas: state(s) λ = {missing.tolist()} have no samples; drop them from the grid or sample them"
            )
        extra = np.setdiff1d(np.unique(lam), grid)
        if extra.size:
            raise ValueError(f"lam: values {extra.tolist()} are not in lambdas; add them to the grid")
    if not np.any(grid == 0.0):
        raise ValueError(
            f"lambdas {grid.tolist()} do not include 0: add direct samples of p_M (λ = 0), the reference "
            f"state that fixes the normalisation"
        )
    return grid


# --------------------------------------------------------------------------------------------- TiltedMBAR


class TiltedMBAR(EventQueries):
    r"""MBAR reconstruction of p_M from samples of exponentially tilted ensembles [REA §4–6].

    State k is p_{λ_k}(x) ∝ e^{−λ_k φ(x)} p_M(x) with reduced potential u_k(x) = λ_k φ(x) and N_k samples; the
    state λ = 0 (direct samples of p_M) must be among them and is the reference, f(λ=0) = 0. The free energies
    f_k = −ln Z(λ_k)/Z(0) solve the MBAR equations (module docstring), by default with
    :func:`rea.stats.mbar_solver.solve_tilted_mbar` (Newton–Raphson on the convex MBAR objective over the distinct φ
    values, to max_k |Σ_n W_nk − 1| < ``newton_tolerance``), or with ``pymbar.MBAR(u_kn, N_k, solver_protocol=...)``
    when ``solver_protocol`` is given (e.g. ``"robust"``); the solution is then checked:

    * convergence: every f_k finite and |Σ_n W_nk − 1| ≤ ``tolerance`` for every state, else
      :class:`MBARConvergenceError`;
    * overlap: the overlap matrix O_ij = N_j Σ_n W_ni W_nj [Klimovich 2015] between neighbouring biases (sorted
      by λ) must be ≥ ``min_overlap`` (0.03 in [REA]) both ways, else an :class:`OverlapWarning` naming the pair.

    The weight of sample n in a target λ_t (sampled or not) is

    .. math:: W_{nt} = \frac{e^{-\lambda_t \phi_n}}{Z_t \sum_j N_j e^{f_j - \lambda_j \phi_n}},\qquad
              Z_t = \sum_n \frac{e^{-\lambda_t \phi_n}}{\sum_j N_j e^{f_j - \lambda_j \phi_n}},

    and P̂_t(s) = Σ_n 1[φ_n ∈ s] W_nt. Uncertainties are MBAR's asymptotic ones: Θ = Cov(ln c) from the augmented
    Gram matrix W^T W of states, targets and normalised event columns W_ns = 1[φ_n ∈ s] W_nt / P̂_t(s), then
    Var(ln P̂_t(s)) = Θ_ss + Θ_tt − 2Θ_st (the formula of ``pymbar.MBAR.compute_expectations``, computed for all
    events at once and in log space). Intervals for probabilities are log-normal, P̂·e^{±zσ_ln}; for ln Z normal.

    The analytic errors assume independent samples: subsample correlated MCMC output first
    (:func:`rea.stats.diagnostics.subsample`) or use :func:`rea.stats.bootstrap.bootstrap_over_chains`.

    Parameters
    ----------
    phi : float ``[N]`` observable values of all pooled samples
    lam : float ``[N]`` the bias λ each sample was drawn at (0 for direct samples)
    lambdas : optional float ``[K]`` the intended grid; every value must have samples and every ``lam`` be in it
    confidence : interval level (0.96)
    min_overlap : neighbour overlap below which an :class:`OverlapWarning` is issued (0.03)
    tolerance : allowed |Σ_n W_nk − 1| in the final check (1e-4, pymbar's own check)
    solver_protocol : None (our Newton solver) or a pymbar protocol (``"robust"``, a tuple of dicts) to solve with
        ``pymbar.MBAR`` instead
    maximum_iterations : iteration cap of either solver (10000)
    newton_tolerance : convergence target of the Newton solver, max_k |Σ_n W_nk − 1| (1e-10)
    chunk_size : samples per block in the O(N K) passes (memory ≈ 8·K·chunk_size bytes)
    counts : optional int ``[N]`` multiplicity of each (φ, λ) row -- identical to repeating the row that many times
        (zeros are dropped); lets callers aggregate tied samples or bootstrap by multinomial counts. Not available
        with the pymbar solver, :meth:`expectation` or :attr:`mbar`. Fractional counts are allowed (effective counts
        of correlated samples, e.g. 1/g per sample with g the statistical inefficiency): the MBAR equations and the
        asymptotic covariance then use N_k = Σ_{n∈k} c_n, as for c_n-fold independent samples.

    Attributes
    ----------
    lambdas : float ``[K]`` sorted grid; K : number of states; n_k : int ``[K]``; f_k : float ``[K]`` (−ln Z, f = 0
    at λ = 0); ref : index of λ = 0 in ``lambdas``; overlap_matrix : ``[K, K]``; neighbour_overlap : ``[K−1]``
    (min of O[k, k+1] and O[k+1, k]); min_overlap : the threshold it is checked against; N : stored rows (those with
    a positive count); phi : float ``[N]`` the rows' φ, sorted by state; state : int ``[N]`` their state index;
    counts : float ``[N]`` their multiplicities (1 without ``counts``); log_den : float ``[N]``
    ln Σ_j N_j e^{f_j − λ_j φ_n}; mbar : a ``pymbar.MBAR`` object (samples sorted by state; with the Newton solver
    built lazily on first access, started from our f_k); solver : ``"newton"`` or ``"pymbar"``; solver_messages :
    what the solver reported; solver_info : the Newton solver's (iterations, error, converged).

    Methods: free energies :meth:`log_partition`, :meth:`log_partition_at`; events (from
    :class:`rea.stats.mbar_events.EventQueries`) :meth:`tail`, :meth:`density`, :meth:`interval_log_p` (fast, without
    errors), :meth:`interval_counts`; overlap :meth:`overlap`, :meth:`neighbours`, :meth:`min_neighbour_overlap`;
    weights :meth:`log_weight_block`, :meth:`target_free_energies`, :meth:`gram_pass`, :meth:`sample_log_weights`;
    :meth:`expectation`; :attr:`total_count`.
    """

    def __init__(
        self,
        phi,
        lam,
        lambdas=None,
        *,
        confidence: float = 0.96,
        min_overlap: float = 0.03,
        tolerance: float = 1e-4,
        solver_protocol=None,
        maximum_iterations: int = 10000,
        newton_tolerance: float = 1e-10,
        chunk_size: int = 1 << 16,
        counts=None,
    ):
        phi, lam, counts = _checked_samples(phi, lam, counts)
        self.confidence = check_confidence(confidence)
        self.z = z_value(confidence)
        self.lambdas = _state_grid(lam, lambdas)
        self.K = self.lambdas.size
        self.ref = int(np.flatnonzero(self.lambdas == 0.0)[0])
        self._store_samples(phi, lam, counts)
        self.chunk_size = int(chunk_size)
        self.min_overlap = float(min_overlap)
        self.tolerance = float(tolerance)
        self.newton_tolerance = float(newton_tolerance)

        self._solve(solver_protocol, int(maximum_iterations))
        self._compute_overlap()

    def _store_samples(self, phi, lam, counts):
        """Sort the rows by state (stable) and count the samples N_k of each state."""
        state = np.searchsorted(self.lambdas, lam)
        self._order = np.argsort(state, kind="stable")  # sorted position -> original index
        self.phi = phi[self._order]
        self.state = state[self._order]
        self.weighted = counts is not None
        self.counts = counts[self._order] if self.weighted else np.ones(phi.size)
        n_k = np.bincount(self.state, weights=self.counts, minlength=self.K)
        # integer counts give integer N_k; fractional (effective) counts keep fractional N_k
        self.n_k = np.rint(n_k).astype(np.int64) if np.all(self.counts == np.rint(self.counts)) else n_k
        self.N = phi.size

    @classmethod
    def from_states(cls, phis, lambdas, **kwargs) -> TiltedMBAR:
        """Build from per-state arrays: ``phis[k]`` float ``[N_k]`` drawn at ``lambdas[k]`` (λ = 0 for direct)."""
        lambdas = as_1d_finite("lambdas", lambdas)
        if len(phis) != lambdas.size:
            raise ValueError(f"phis has {len(phis)} arrays but lambdas has {lambdas.size} values")
        if np.unique(lambdas).size != lambdas.size:
            raise ValueError("lambdas contains repeated values; concatenate their samples into one state")
        parts = []
        for k, p in enumerate(phis):
            p = np.asarray(p, dtype=np.float64).ravel()
            if p.size == 0:
                raise ValueError(f"phis[{k}] (state λ = {lambdas[k]:g}) is empty; give every state samples")
            parts.append(p)
        lam = np.concatenate([np.full(p.size, lambdas[k]) for k, p in enumerate(parts)])
        return cls(np.concatenate(parts), lam, **kwargs)

    # ------------------------------------------------------------------ solving

    def _solve(self, solver_protocol, maximum_iterations):
        """Free energies by the Newton solver (``solver_protocol`` None) or pymbar, then the convergence check."""
        if solver_protocol is None:
            self.solver = "newton"
            f, self.solver_messages = self._solve_newton(maximum_iterations)
            self._mbar = None
        else:
            self.solver = "pymbar"
            f, self.solver_messages = self._solve_pymbar(solver_protocol, maximum_iterations)
        if not np.all(np.isfinite(f)):
            raise MBARConvergenceError(
                f"MBAR gave non-finite free energies at λ = {self.lambdas[~np.isfinite(f)].tolist()}; add "
                f"intermediate λ between the biases or more samples per bias"
            )
        self._finish_solve(f, self.solver_messages)

    def _solve_newton(self, maximum_iterations):
        """Our solver: identical φ merged (weights = multiplicities), warm start by thermodynamic integration,
        damped Newton on the convex MBAR objective to max_k |Σ_n W_nk − 1| < ``newton_tolerance``."""
        phi_u, count_u = merge_identical(self.phi, self.counts if self.weighted else None)
        f0 = integration_start(self.lambdas, self.state, self.phi, self.counts, self.n_k)
        f, info = solve_tilted_mbar(
            phi_u, count_u, self.lambdas, self.n_k.astype(np.float64), self.ref, f0,
            tol=self.newton_tolerance, max_iter=maximum_iterations,
        )
        self.solver_info = info
        msgs = [f"newton: {info['iterations']} iterations on {phi_u.size} distinct φ, "
                f"max |Σ W - 1| = {info['error']:.2g}"]
        if not info["converged"]:
            msgs.append(f"newton stopped after {info['iterations']} iterations without converging")
        return f, msgs

    def _solve_pymbar(self, solver_protocol, maximum_iterations):
        """Free energies from ``pymbar.MBAR(u_kn, N_k, solver_protocol=...)``; its failures as MBARConvergenceError."""
        self._no_counts("the pymbar solver")
        pymbar = import_pymbar()
        try:
            mbar, messages = quiet_pymbar_mbar(
                pymbar, self._u_kn(), self.n_k, solver_protocol=solver_protocol, maximum_iterations=maximum_iterations
            )
        except Exception as err:  # pymbar raises its own errors on hopeless inputs
            raise MBARConvergenceError(
                f"pymbar.MBAR failed ({type(err).__name__}: {err}); add intermediate λ between the biases "
                f"or more samples per bias"
            ) from err
        self._mbar = mbar
        return np.asarray(mbar.f_k, dtype=np.float64), messages

    def _u_kn(self) -> np.ndarray:
        """Reduced potentials u_kn = λ_k φ_n ``[K, N]`` of the state-sorted samples (pymbar's input)."""
        return self.lambdas[:, None] * self.phi[None, :]

    @property
    def mbar(self):
        """A ``pymbar.MBAR`` object on the state-sorted samples (built on first use, started from our f_k)."""
        if self._mbar is None:
            self._no_counts("a pymbar.MBAR object")
            self._mbar, _ = quiet_pymbar_mbar(
                import_pymbar(), self._u_kn(), self.n_k, initial_f_k=self.f_k.copy(),
                solver_protocol=(dict(method="adaptive", tol=1e-12, options=dict(min_sc_iter=0)),),
            )
        return self._mbar

    def _no_counts(self, what):
        """ValueError when rows carry counts: ``what`` needs one row per sample."""
        if self.weighted:
            raise ValueError(f"counts: {what} needs one row per sample; build TiltedMBAR without counts")

    def _finish_solve(self, f, messages):
        """Store f (f_ref = 0) and ln D_n, the states' W^T W and Σ_n W_nk; MBARConvergenceError if Σ_n W_nk ≠ 1."""
        self.f_k = f - f[self.ref]
        self._log_nk_f = np.log(self.n_k) + self.f_k
        self.log_den = np.concatenate([
            fast_logsumexp(self._log_nk_f[:, None] - self.lambdas[:, None] * self.phi[None, sl], axis=0)
            for sl in chunk_slices(self.N, self.chunk_size)
        ])
        col = np.zeros(self.K)

        def add_column_sums(sl, log_w, w, weighted_w):
            np.add(col, weighted_w.sum(axis=1), out=col)

        # column sums Σ_n W_nk and the Gram matrix W^T W of the states (for the overlap), in one pass
        self._wtw_states = self.gram_pass(self.lambdas, self.f_k, add_column_sums)
        self._check_convergence(col, messages)

    def _check_convergence(self, col, messages):
        """MBARConvergenceError unless |Σ_n W_nk − 1| ≤ ``tolerance`` for every state (``col`` ``[K]``)."""
        with np.errstate(divide="ignore"):
            log_col = np.log(col)
        err = np.abs(np.expm1(log_col))
        if not np.all(err <= self.tolerance):
            bad = np.flatnonzero(~(err <= self.tolerance))
            detail = "; ".join(messages[-3:])
            raise MBARConvergenceError(
                f"MBAR did not converge: Σ_n W_nk deviates from 1 by up to {np.nanmax(err):.2g} at λ = "
                f"{self.lambdas[bad].tolist()} (tolerance {self.tolerance:g}). Add intermediate λ between "
                f"poorly overlapping biases or more samples per bias." + (f" Solver: {detail}" if detail else "")
            )
        self.convergence_error = float(err.max())

    # ------------------------------------------------------------------ weights

    def log_weight_block(self, lams, f, sl) -> np.ndarray:
        r"""ln W_nt = f_t − λ_t φ_n − ln Σ_j N_j e^{f_j − λ_j φ_n} for targets ``lams`` ``[T]`` with free energies
        ``f`` ``[T]`` on the (state-sorted) samples of the slice ``sl`` -> ``[T, n]``."""
        return f[:, None] - np.outer(lams, self.phi[sl]) - self.log_den[None, sl]

    def target_free_energies(self, lams: np.ndarray) -> np.ndarray:
        """f_t = −ln Σ_n c_n e^{−λ_t φ_n} / Σ_j N_j e^{f_j − λ_j φ_n} for targets ``lams`` ``[T]``, so that
        Σ_n c_n W_nt = 1 -> ``[T]``."""
        parts = [fast_logsumexp(self.log_weight_block(lams, np.zeros(lams.size), sl), axis=1,
                                b=self.counts[None, sl] if self.weighted else None)
                 for sl in chunk_slices(self.N, self.chunk_size)]
        return -logsumexp(np.stack(parts), axis=0)

    def gram_pass(self, lams: np.ndarray, f: np.ndarray, visit=None) -> np.ndarray:
        r"""The Gram matrix W^T W ``[T, T]`` of the columns (``lams``, ``f``) ``[T]``, accumulated in blocks:

        .. math:: (W^TW)_{ij} = \sum_n c_n W_{ni} W_{nj}.

        ``visit(sl, log_w, w, cw)`` (optional) sees every block: log W and W ``[T, n]`` of the samples ``sl`` and
        c_n W (W itself without counts), for sums the caller accumulates in the same pass.
        """
        g = np.zeros((lams.size, lams.size))
        for sl in chunk_slices(self.N, self.chunk_size):
            log_w = self.log_weight_block(lams, f, sl)
            w = np.exp(log_w)
            cw = (w * self.counts[None, sl]) if self.weighted else w
            g += cw @ w.T
            if visit is not None:
                visit(sl, log_w, w, cw)
        return g

    def _gram(self, target_lams: np.ndarray, target_f: np.ndarray):
        """W^T W ``[K+T, K+T]`` of the state and target columns, accumulated in blocks."""
        return self.gram_pass(np.concatenate([self.lambdas, target_lams]), np.concatenate([self.f_k, target_f]))

    # ------------------------------------------------------------------ overlap

    def _compute_overlap(self):
        """O_ij = N_j (W^T W)_ij and the neighbours' min(O[k, k+1], O[k+1, k]); OverlapWarning below min_overlap."""
        wtw = self._wtw_states
        self.overlap_matrix = wtw * self.n_k[None, :]
        k = np.arange(self.K - 1)
        self.neighbour_overlap = np.minimum(self.overlap_matrix[k, k + 1], self.overlap_matrix[k + 1, k])
        for i in np.flatnonzero(self.neighbour_overlap < self.min_overlap):
            warnings.warn(
                f"biases λ = {self.lambdas[i]:g} and λ = {self.lambdas[i + 1]:g} overlap only "
                f"{self.neighbour_overlap[i]:.3g} < {self.min_overlap:g}: add intermediate λ between them or "
                f"sample them longer",
                OverlapWarning,
                stacklevel=3,
            )

    def overlap(self) -> np.ndarray:
        """Overlap matrix O ``[K, K]``: O_ij = N_j Σ_n W_ni W_nj (rows sum to 1), states in ``lambdas`` order."""
        return self.overlap_matrix.copy()

    def neighbours(self) -> pd.DataFrame:
        """Overlap of neighbouring biases: DataFrame ``lam_i, lam_j, overlap, ok`` (ok: ≥ ``min_overlap``)."""
        return pd.DataFrame({
            "lam_i": self.lambdas[:-1], "lam_j": self.lambdas[1:], "overlap": self.neighbour_overlap,
            "ok": self.neighbour_overlap >= self.min_overlap,
        })

    def min_neighbour_overlap(self) -> float:
        """The smallest overlap of neighbouring biases (NaN with a single state)."""
        return float(self.neighbour_overlap.min()) if self.K > 1 else np.nan

    # ------------------------------------------------------------------ free energies

    def log_partition(self) -> pd.DataFrame:
        r"""ln Z(λ_k)/Z(0) = −f_k at the sampled biases with asymptotic errors.

        Var(f_k − f_0) = Θ_kk + Θ_00 − 2Θ_k0 with Θ from the states' W^T W (as
        ``pymbar.MBAR.compute_free_energy_differences``).

        Returns
        -------
        DataFrame with K rows: ``lam, n, log_z, sigma, ci_low, ci_high`` (normal interval ± z·sigma).
        """
        theta = asymptotic_covariance(self._wtw_states, self.n_k.astype(float))
        sigma = difference_sigma(theta, np.arange(self.K), self.ref)
        sigma[self.ref] = 0.0
        log_z = -self.f_k
        return pd.DataFrame({
            "lam": self.lambdas, "n": self.n_k, "log_z": log_z, "sigma": sigma,
            "ci_low": log_z - self.z * sigma, "ci_high": log_z + self.z * sigma,
        })

    def log_partition_at(self, lams) -> pd.DataFrame:
        r"""ln Z(λ)/Z(0) at any λ by reweighting the pooled samples (perturbation):

        .. math:: \ln \hat Z(\lambda) = \ln \sum_n \frac{e^{-\lambda\phi_n}}{\sum_j N_j e^{f_j - \lambda_j\phi_n}}.

        Errors from the augmented Θ (as ``pymbar.MBAR.compute_perturbed_free_energies``). Only trustworthy inside
        (or slightly beyond) the sampled λ range.

        Parameters
        ----------
        lams : float ``[T]``

        Returns
        -------
        DataFrame with T rows: ``lam, log_z, sigma, ci_low, ci_high``.
        """
        lams = as_1d_finite("lams", lams)
        tf = self.target_free_energies(lams)
        wtw = self._gram(lams, tf)
        n_aug = np.concatenate([self.n_k, np.zeros(lams.size)])
        theta = asymptotic_covariance(wtw, n_aug)
        sigma = difference_sigma(theta, self.K + np.arange(lams.size), self.ref)
        log_z = -tf
        return pd.DataFrame({
            "lam": lams, "log_z": log_z, "sigma": sigma,
            "ci_low": log_z - self.z * sigma, "ci_high": log_z + self.z * sigma,
        })

    # ------------------------------------------------------------------ events (tails, bins)

    @property
    def total_count(self) -> float:
        """Σ_n c_n: all pooled samples (the effective number with fractional ``counts``)."""
        return float(self.counts.sum())

    # ------------------------------------------------------------------ other

    def sample_log_weights(self, lam: float = 0.0) -> np.ndarray:
        """ln W_{nλ} for every sample, in the caller's original order ``[N]`` (LSE = 0): reweight to p_λ."""
        self._no_counts("sample_log_weights")
        lam_arr = np.array([float(lam)])
        lw = np.concatenate([self.log_weight_block(lam_arr, self.target_free_energies(lam_arr), sl)[0]
                             for sl in chunk_slices(self.N, self.chunk_size)])
        out = np.empty_like(lw)
        out[self._order] = lw
        return out

    def expectation(self, values, lam: float = 0.0) -> tuple[float, float]:
        """E_{p_λ}[A] for per-sample values ``[N]`` (caller's order) -> (mean, sd) via ``compute_expectations``."""
        self._no_counts("expectation")
        a = as_1d_finite("values", values)
        if a.size != self.N:
            raise ValueError(f"values has length {a.size}, expected one per sample ({self.N})")
        with captured_pymbar_output():
            res = self.mbar.compute_expectations(a[self._order], u_kn=float(lam) * self.phi)
        return float(res["mu"][0]), float(res["sigma"][0])

    def __repr__(self) -> str:
        return (f"TiltedMBAR(K={self.K}, N={self.N}, lambdas=[{self.lambdas[0]:g} … {self.lambdas[-1]:g}], "
                f"min neighbour overlap={self.min_neighbour_overlap():.3g})")
