r"""Pooling replicates of the SMC sampler across a bias ladder: Ẑ(λ_k), tails, and the stuck-chain diagnostic.

Each replicate r (:class:`rea.smc.ladder.LadderReplicate`) gives, at every bias λ_k of the common ladder, an
unbiased Ẑ_r(λ_k) and unbiased tail estimates (:mod:`rea.smc.ladder`)

    X_{r,k}(a) = Ẑ_r(λ_k) Σ_i W^i_{r,k} e^{λ_k φ^i_{r,k}} 1[φ^i_{r,k} ≥ a]      (≤ a for ``side="lower"``).

Which bias serves a threshold: every k is unbiased, but only a bias whose particles reach a, with weights not too
uneven, is precise. Rule: the bias with the largest *effective number of hits* pooled over the replicates, the Kish
size of the terms that make up the pooled estimate,

    H_k(a) = (Σ_{r,i} c_{r,i})² / Σ_{r,i} c_{r,i}²,      c_{r,i} = Ẑ_r(λ_k) W^i_{r,k} e^{λ_k φ^i} 1[φ^i beyond a],

which counts the hits, discounts those whose factor e^{λ_k φ} (deep in the tail of a strong bias) or Ẑ_r makes a few
of them dominate, and is 0 where no particle reaches a (ties: the weakest bias). The same k serves every replicate,
so the pooled estimate is the mean of R independent unbiased X_{r,k}(a); its interval is
:func:`rea.smc.estimate.replicate_interval` (Cox's log-normal interval by default).

Stuck-chain diagnostic (:meth:`LadderResult.per_bias`): at each λ_k, the weighted mean of φ over the moved particles
(consistent for E_{λ_k}[φ]), the plain mean of the same particles, and -- when the run carried them -- the plain mean
of the annealed chains (the paper's estimate), each gap from the weighted mean in standard errors. A gap of many
standard errors says the moves have not equilibrated the population: the weights are doing the work. The plain mean of
the particles can differ only between resamplings (a resampling sets the weights equal); the annealed chains show
the paper's method at every bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from rea.smc.estimate import replicate_interval
from rea.smc.filter import Replicate


def _stack(histories: list[dict], name: str, n_biases: int) -> np.ndarray:
    """``name`` of every replicate's history, cut to the first ``n_biases`` biases -> ``[R, K+1, …]``."""
    return np.stack([h[name][:n_biases] for h in histories])


def log_tails(log_norm, log_w, phi, lams, thresholds, side: str) -> np.ndarray:
    """Per replicate and bias, log X_{r,k}(a) ``[R, K+1, S]`` from log_norm ``[R, K+1]``, log_w and φ
    ``[R, K+1, N]``, λ ``[K+1]`` and thresholds ``[S]`` (:meth:`rea.smc.filter.Replicate.log_tail`)."""
    n_rep, n_bias = log_norm.shape
    out = np.empty((n_rep, n_bias, len(thresholds)))
    for r in range(n_rep):
        for k in range(n_bias):
            rep = Replicate(r, log_norm[r, k], log_w[r, k], phi[r, k], np.empty(0), np.empty(0))
            out[r, k] = rep.log_tail(thresholds, lams[k], side)
    return out


def effective_hits(log_norm, log_w, phi, lams, thresholds, side: str) -> np.ndarray:
    """H_k(a) ``[K+1, S]`` (module docstring) from the arrays of :func:`log_tails`."""
    sign = 1.0 if side == "upper" else -1.0
    n_particles = log_w.shape[-1]
    log_c = (log_norm[..., None] + log_w + np.asarray(lams)[None, :, None] * phi - np.log(n_particles))
    out = np.zeros((log_norm.shape[1], len(thresholds)))
    for s, a in enumerate(thresholds):
        c = np.where(sign * phi >= sign * a, log_c, -np.inf)  # [R, K+1, N]
        flat = np.moveaxis(c, 1, 0).reshape(c.shape[1], -1)  # [K+1, R N]
        with np.errstate(invalid="ignore"):
            h = np.exp(2 * logsumexp(flat, axis=1) - logsumexp(2 * flat, axis=1))
        out[:, s] = np.nan_to_num(h, nan=0.0)
    return out


def _gap_in_se(diff: np.ndarray, within_se: np.ndarray) -> np.ndarray:
    """mean_r d_r / SE ``[K+1]`` for per-replicate differences ``d [R, K+1]``: SE from the replicates' spread
    (R ≥ 2), else ``within_se``; 0/0 (no difference at all) is 0."""
    mean = diff.mean(axis=0)
    se = diff.std(axis=0, ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else within_se
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mean == 0, 0.0, mean / se)


@dataclass
class LadderResult:
    """Replicates of an SMC-ladder run, pooled.

    Attributes
    ----------
    settings : dict of the run's settings (length, n_particles, n_moves, tau, ladder, …); ``provenance`` : dict.
    thresholds : ``[S]``; side, confidence, interval.
    lambdas : ``[K+1]`` the ladder, λ_0 = 0 first (the biases every replicate has reached).
    log_z_reps : ``[R, K+1]`` per-replicate log Ẑ(λ_k); log_tail_reps : ``[R, K+1, S]`` per-replicate log X_{r,k}(a).
    log_z, log_z_lo, log_z_hi : ``[K+1]`` pooled log Ẑ(λ_k) and its interval.
    hits : ``[K+1, S]`` effective hits H_k(a); bias_index : ``[S]`` the bias serving each threshold (argmax H).
    p, ci_low, ci_high : ``[S]`` the tail estimates and intervals (p = 0 with [0, ∞) where no particle reached a).
    tokens : tokens generated by the particles (direct samples + moves, rejected proposals included) and the
    adaptive pilot; tokens_annealed : those of the annealed chains; tokens_scored : suffix tokens the particles' head
    moves teacher-forced (not in ``tokens``); complete : whether every replicate reached λ_K.
    """

    thresholds: np.ndarray
    side: str
    confidence: float
    interval: str
    histories: list = field(repr=False)
    settings: dict = field(default_factory=dict)
    pilot_tokens: int = 0
    complete: bool = True
    provenance: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        n = min(len(h["lam"]) for h in self.histories)
        self.lambdas = np.asarray(self.histories[0]["lam"][:n], dtype=np.float64)
        self._log_norm, self._log_w = _stack(self.histories, "log_norm", n), _stack(self.histories, "log_w", n)
        self._phi = _stack(self.histories, "phi", n)
        self.log_z_reps = self._log_norm + logsumexp(self._log_w, axis=2) - np.log(self._log_w.shape[2])
        self.log_tail_reps = log_tails(self._log_norm, self._log_w, self._phi, self.lambdas, self.thresholds,
                                       self.side)
        self.hits = effective_hits(self._log_norm, self._log_w, self._phi, self.lambdas, self.thresholds, self.side)
        self.bias_index = np.argmax(self.hits, axis=0)  # first maximum: the weakest bias among ties
        chosen = self.log_tail_reps[:, self.bias_index, np.arange(len(self.thresholds))]  # [R, S]
        self.log_z, self.log_z_lo, self.log_z_hi = self._pool(self.log_z_reps)
        self.log_p, lo, hi = self._pool(chosen)
        self.p, self.ci_low, self.ci_high = np.exp(self.log_p), np.exp(lo), np.exp(hi)
        self.tokens = int(sum(np.sum(h["generated"][:n]) for h in self.histories)) + int(self.pilot_tokens)
        self.tokens_annealed = int(sum(np.sum(h["annealed_generated"][:n]) for h in self.histories))
        self.tokens_scored = int(sum(np.sum(h["scored"][:n]) for h in self.histories if "scored" in h))

    def _pool(self, log_x: np.ndarray):
        """(log mean, log lo, log hi) over replicates of ``log_x [R, …]`` (no interval for one replicate)."""
        if len(log_x) >= 2:
            return replicate_interval(log_x, self.confidence, self.interval)
        return log_x[0], np.full(log_x.shape[1:], -np.inf), np.full(log_x.shape[1:], np.inf)

    @property
    def n_replicates(self) -> int:
        return len(self.histories)

    @property
    def n_particles(self) -> int:
        return self._phi.shape[2]

    def replicates(self, index) -> LadderResult:
        """The result of the replicates ``index`` alone (e.g. one repeat of several from one batched run)."""
        pick = np.arange(self.n_replicates)[index]
        return LadderResult(self.thresholds, self.side, self.confidence, self.interval,
                            [self.histories[i] for i in np.atleast_1d(pick)], self.settings, self.pilot_tokens,
                            self.complete, self.provenance)

    def weighted_means(self) -> np.ndarray:
        """Σ_i W^i φ^i per replicate and bias ``[R, K+1]``: each replicate's estimate of E_{λ_k}[φ]."""
        w = np.exp(self._log_w - logsumexp(self._log_w, axis=2, keepdims=True))
        return np.sum(w * self._phi, axis=2)

    def per_bias(self) -> pd.DataFrame:
        """One row per bias λ_k: ESS fraction after the reweighting (mean over replicates), share of replicates that
        resampled, log Ẑ and its interval, the weighted mean of φ and its SE (over replicates; one replicate: the
        delta-method SE √Σ W²(φ − mean)²), the plain mean of the same particles and its gap in SE, the acceptance
        rate of the particles' moves, distinct particles, distinct λ_0 ancestors and ``frozen``, the share of
        positions no accepted move at λ_k changed (means over replicates; :class:`rea.smc.ladder.LadderReplicate`),
        tokens generated there (all replicates); with
        annealed chains, their plain mean and its gap from the weighted mean in SE (√(SE_w² + SE_a²))."""
        h = {name: _stack(self.histories, name, len(self.lambdas)) for name in
             ("ess", "resampled", "accepted", "generated", "n_unique", "n_ancestors", "frozen", "annealed_phi")}
        w = np.exp(self._log_w - logsumexp(self._log_w, axis=2, keepdims=True))
        mean_w, mean_plain = self.weighted_means(), self._phi.mean(axis=2)
        within = np.sqrt(np.sum(w ** 2 * (self._phi - mean_w[..., None]) ** 2, axis=2))  # [R, K+1]
        r = self.n_replicates
        se_w = mean_w.std(axis=0, ddof=1) / np.sqrt(r) if r > 1 else within[0]
        within_gap = np.sqrt(within[0] ** 2 + self._phi[0].var(axis=1) / self.n_particles)
        moves = self.settings.get("n_moves", 0) * self.n_particles
        with np.errstate(invalid="ignore", divide="ignore"):
            acceptance = np.where(np.arange(len(self.lambdas)) == 0, np.nan, h["accepted"].sum(0) / (moves * r))
        df = pd.DataFrame({
            "lam": self.lambdas, "ess": h["ess"].mean(axis=0), "resampled": h["resampled"].mean(axis=0),
            "log_z": self.log_z, "log_z_lo": self.log_z_lo, "log_z_hi": self.log_z_hi,
            "mean_phi": mean_w.mean(axis=0), "mean_phi_se": se_w, "plain_mean_phi": mean_plain.mean(axis=0),
            "plain_gap_se": _gap_in_se(mean_plain - mean_w, within_gap), "acceptance": acceptance,
            "n_unique": h["n_unique"].mean(axis=0), "n_ancestors": h["n_ancestors"].mean(axis=0),
            "frozen": h["frozen"].mean(axis=0), "tokens": h["generated"].sum(axis=0)})
        annealed = h["annealed_phi"]  # [R, K+1, J]
        if annealed.shape[2]:
            chains = np.moveaxis(annealed, 1, 0).reshape(len(self.lambdas), -1)  # [K+1, R J]
            se_a = chains.std(axis=1, ddof=1) / np.sqrt(chains.shape[1]) if chains.shape[1] > 1 else np.nan
            df["annealed_mean_phi"] = chains.mean(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                gap = (df["annealed_mean_phi"] - df["mean_phi"]) / np.sqrt(se_w ** 2 + se_a ** 2)
            df["annealed_gap_se"] = np.where(df["annealed_mean_phi"] == df["mean_phi"], 0.0, gap)
        return df

    def tail_table(self) -> pd.DataFrame:
        """One row per threshold and bias: the pooled estimate from that bias, its interval, the effective hits,
        and whether it is the bias chosen for the threshold."""
        rows = []
        for k, lam in enumerate(self.lambdas):
            est, lo, hi = self._pool(self.log_tail_reps[:, k, :])
            for s, a in enumerate(self.thresholds):
                rows.append(dict(threshold=a, lam=lam, p=np.exp(est[s]), ci_low=np.exp(lo[s]), ci_high=np.exp(hi[s]),
                                 hits=self.hits[k, s], chosen=bool(self.bias_index[s] == k)))
        return pd.DataFrame(rows)

    def table(self) -> pd.DataFrame:
        """One row per threshold: threshold, λ of the bias serving it, p, ci_low, ci_high, effective hits."""
        s = np.arange(len(self.thresholds))
        return pd.DataFrame({"threshold": self.thresholds, "lam": self.lambdas[self.bias_index], "p": self.p,
                             "ci_low": self.ci_low, "ci_high": self.ci_high, "hits": self.hits[self.bias_index, s]})
