r"""The particle filter: N completions grow token by token from p_M and are reweighted and resampled on prefixes.

Feynman–Kac model [Del Moral 2004]: with prefix observable φ (φ(empty) := 0) and bias λ, particle i at step t
(t = 1..L) draws x_t ~ p_M(· | prompt, x_{<t}) at temperature 1 and multiplies its weight by

    G_t = exp(−λ (φ(x_{≤t}) − φ(x_{<t}))),      so   Π_{t=1}^{L} G_t = e^{−λ φ(x)}.

Weights are kept in log space. After the weighting of step t < L, a replicate whose effective sample size
ESS = (Σ w)² / Σ w² falls below τN is resampled: log Ẑ += log mean_i w_i, N ancestors are drawn ∝ w by
systematic resampling (one uniform), and w := 1. The model's KV cache rows follow the ancestors through the
decoder's ``reorder(index)``. At the end, for any f,

    γ̂(f) = Ẑ · (1/N) Σ_i w_i f(x^i)    is unbiased for   γ(f) = E_{p_M}[e^{−λφ(x)} f(x)],

with adaptive (ESS-triggered) resampling too, because the decision to resample depends only on the particle system
so far (αSMC, Whiteley, Lee & Heine 2016). f = 1 gives Z(λ); f = 1[φ ≥ a] e^{λφ} the tail P(φ ≥ a).

Randomness: replicate r draws its tokens by the Gumbel-max of :mod:`rea.sampling` (one uniform per particle and
step, from ``numpy.random.default_rng([seed, TOKEN_STREAM, r])``) and its resampling uniforms from
``default_rng([seed, RESAMPLE_STREAM, r])``, so a replicate depends on (seed, r) only, not on which replicates
share its batch. Several replicates run as one decode batch of (replicates × N) rows; they never mix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logsumexp

from rea.lm.threads import decode_threads, torch_threads
from rea.sampling import gumbel_draw, gumbel_layout, position_noise

TOKEN_STREAM = 0x5EC0
"""Tag of a replicate's token stream: ``default_rng([seed, TOKEN_STREAM, replicate])``."""
RESAMPLE_STREAM = 0x5EC1
"""Tag of a replicate's resampling stream: ``default_rng([seed, RESAMPLE_STREAM, replicate])``."""


@dataclass
class Replicate:
    """One independent SMC run of N particles.

    Attributes
    ----------
    replicate : its index r (its random streams are keyed by (seed, r)).
    log_norm : Σ over its resamplings of log mean_i w_i (log Ẑ before the final weights).
    log_w : float64 ``[N]`` final log-weights since the last resampling.
    phi : float64 ``[N]`` φ of the final particles (whole completions).
    ess : float64 ``[L]`` ESS after the weighting of each step (before any resampling there).
    resampled : bool ``[L]`` whether the step ended with a resampling.
    tokens, logp : ``[N, L]`` the final particles and their per-token log p_M (None unless kept).
    """

    replicate: int
    log_norm: float
    log_w: np.ndarray
    phi: np.ndarray
    ess: np.ndarray
    resampled: np.ndarray
    tokens: np.ndarray | None = None
    logp: np.ndarray | None = None

    @property
    def n_particles(self) -> int:
        return len(self.log_w)

    @property
    def log_z(self) -> float:
        """log Ẑ(λ) = log_norm + log mean_i w_i."""
        return float(self.log_norm + logsumexp(self.log_w) - np.log(self.n_particles))

    def log_tail(self, thresholds, lam: float, side: str = "upper") -> np.ndarray:
        """log of the unbiased tail estimates P̂(φ ≥ a) (``side="upper"``) or P̂(φ ≤ a) ``[S]`` for ``thresholds``
        ``[S]``: log_norm + log Σ_{i in tail} w_i e^{λφ_i} − log N (−inf where no particle is in the tail)."""
        a = np.asarray(thresholds, dtype=np.float64)
        sign = 1.0 if side == "upper" else -1.0
        order = np.argsort(-sign * self.phi, kind="stable")  # deepest in the tail first
        cum = np.logaddexp.accumulate((self.log_w + lam * self.phi)[order])
        n_in = np.searchsorted(-sign * self.phi[order], -sign * a, side="right")  # particles with sign·φ ≥ sign·a
        out = np.concatenate([[-np.inf], cum])[n_in]
        return self.log_norm + out - np.log(self.n_particles)


def systematic_resample(weights: np.ndarray, u: float) -> np.ndarray:
    """Ancestor indices ``[N]`` by systematic resampling: the i-th is the first k with Σ_{j≤k} W_j > (u + i)/N,
    W = ``weights`` normalised (E[#offspring of k] = N W_k exactly)."""
    cdf = np.cumsum(weights / weights.sum())
    n = len(weights)
    return np.minimum(np.searchsorted(cdf, (u + np.arange(n)) / n, side="right"), n - 1)


def effective_sizes(log_w: np.ndarray) -> np.ndarray:
    """Kish ESS (Σw)²/Σw² of each row of log-weights ``[R, N]`` -> ``[R]``."""
    return np.exp(2 * logsumexp(log_w, axis=1) - logsumexp(2 * log_w, axis=1))


@dataclass
class _Group:
    """The particle system of several replicates run as one batch: rows r·N .. r·N + N − 1 are replicate r's."""

    n: int
    token_rngs: list
    resample_rngs: list
    tokens: np.ndarray  # [R N, L] int64
    logp: np.ndarray  # [R N, L] float64
    phi: np.ndarray  # [R, N] φ of the current prefixes
    log_w: np.ndarray  # [R, N]
    log_norm: np.ndarray  # [R]
    ess: np.ndarray  # [R, L]
    resampled: np.ndarray  # [R, L] bool

    @classmethod
    def start(cls, replicates, seed: int, n: int, length: int) -> _Group:
        r = len(replicates)
        return cls(n, [np.random.default_rng([seed, TOKEN_STREAM, k]) for k in replicates],
                   [np.random.default_rng([seed, RESAMPLE_STREAM, k]) for k in replicates],
                   np.zeros((r * n, length), np.int64), np.zeros((r * n, length)), np.zeros((r, n)),
                   np.zeros((r, n)), np.zeros(r), np.zeros((r, length)), np.zeros((r, length), bool))

    def weigh(self, t: int, phi: np.ndarray, lam: float) -> None:
        """Multiply the weights by G_t = e^{−λ(φ_t − φ_{t−1})} and record the ESS of step t."""
        phi = phi.reshape(self.phi.shape)
        self.log_w -= lam * (phi - self.phi)
        self.phi = phi
        self.ess[:, t] = effective_sizes(self.log_w)

    def resample(self, t: int, tau: float) -> np.ndarray | None:
        """Resample the replicates whose ESS < τN; return the global ancestor index ``[R N]`` (None if none did)."""
        low = np.flatnonzero(self.ess[:, t] < tau * self.n)
        if not len(low):
            return None
        index = np.arange(self.log_w.size)
        for r in low:
            lw = self.log_w[r]
            top = lw.max()
            self.log_norm[r] += top + np.log(np.mean(np.exp(lw - top)))
            anc = systematic_resample(np.exp(lw - top), self.resample_rngs[r].random())
            index[r * self.n:(r + 1) * self.n] = r * self.n + anc
            self.log_w[r] = 0.0
            self.resampled[r, t] = True
        self.tokens, self.logp = self.tokens[index], self.logp[index]
        self.phi = self.phi.reshape(-1)[index].reshape(self.phi.shape)
        return index


def _draw(logits: torch.Tensor, group: _Group, width: int):
    """One token per row by the Gumbel-max of :mod:`rea.sampling` -> (tokens ``[B]``, their log p_M ``[B]``)."""
    u = np.concatenate([g.random(group.n) for g in group.token_rngs])
    lp = torch.log_softmax(logits.float(), dim=-1)
    tok = gumbel_draw(lp, position_noise(torch.as_tensor(u, device=lp.device), width))
    return tok, lp.gather(1, tok[:, None]).squeeze(1).double()


@torch.inference_mode()
def run_group(lm, prompt_ids, observable, lam: float, length: int, n_particles: int, replicates, seed: int,
              ess_threshold: float = 0.5, keep_particles: bool = False, on_step=None) -> list[Replicate]:
    """Run the replicates ``replicates`` (indices) of N = ``n_particles`` particles as one decode batch.

    ``observable`` is a :class:`rea.smc.prefix.PrefixObservable`; ``on_step()`` is called after every step (progress).
    The decoder of ``lm`` must implement ``reorder(index[B])``.
    """
    g = _Group.start(list(replicates), seed, n_particles, length)
    batch = g.tokens.shape[0]
    decoder = lm.decoder(batch)
    if not hasattr(decoder, "reorder"):
        raise ValueError(f"lm: its decoder {type(decoder).__name__} has no reorder(index); SMC needs one")
    with torch_threads(decode_threads(lm.device)):
        logits = decoder.prefill(torch.tensor(prompt_ids, dtype=torch.long, device=lm.device).expand(batch, -1))
        width = sum(gumbel_layout(logits.shape[-1]))
        for t in range(length):
            tok, lpt = _draw(logits, g, width)
            g.tokens[:, t], g.logp[:, t] = tok.cpu().numpy(), lpt.cpu().numpy()
            g.weigh(t, observable(g.tokens[:, :t + 1], g.logp[:, :t + 1]), lam)
            if t + 1 < length:
                index = g.resample(t, ess_threshold)
                if index is not None:
                    idx = torch.as_tensor(index, device=tok.device)
                    decoder.reorder(idx)
                    tok = tok[idx]
                logits = decoder.step(tok)
            if on_step is not None:
                on_step()
    n = n_particles
    return [Replicate(k, float(g.log_norm[r]), g.log_w[r].copy(), g.phi[r].copy(), g.ess[r].copy(),
                      g.resampled[r].copy(), g.tokens[r * n:(r + 1) * n] if keep_particles else None,
                      g.logp[r * n:(r + 1) * n] if keep_particles else None) for r, k in enumerate(replicates)]
