"""Exact answers for the Markov :class:`rea.lm.toy.ToyLM` -- the ground truth every estimator is checked against.

For a Markov LM with transition matrix A ``[V, V]`` (A[i, j] = p(next = j | last = i)) the prompt enters only
through its last token x_t (the Markov state), and a completion x_{t+1:t+L} has probability
Π_{τ=t}^{t+L−1} A[x_τ, x_{τ+1}].

Additive observables φ(x) = Σ_{τ=t}^{t+L−1} g_τ(x_τ, x_{τ+1}) are described by a pair matrix G ``[V, V]`` (and a
possibly different G₁ for the first transition, from the prompt's last token):

* ``"logprob"``: g(i, j) = log A[i, j] (φ_LP; float64 log A -- the sampler's float32 logits agree to ~1e-6/token);
* ``"repeats"``: g(i, j) = 1[i = j], with G₁ = 0: the prompt → completion boundary is not counted
  (as in :func:`rea.observables.repeats_tokens`);
* ``"count"``: g(i, j) = 1[j ∈ S] for a token set S (``tokens=``), counting the first completion token too;
* an array G ``[V, V]`` (G₁ = G).

Tilted partition function [REA §4], by the transfer matrix M_λ[i, j] = A[i, j] e^{−λ g(i, j)}:

    Z(λ) = E_{p_M}[e^{−λ φ}] = e_{x_t}ᵀ M₁(λ) M(λ)^{L−1} 1,     log Z(λ)/L → log ρ(M(λ))  (L → ∞).

Exact distributions:

* integer φ with g ∈ {0, 1} (repeats, token counts): pmf P(φ = k), k = 0..L, by dynamic programming over
  (last token, count), each count column carrying its own log scale, so probabilities far below 1e-300 stay exact;
* Log-Prob: atoms (value, probability) by enumerating all V^L completions (V^L ≤ ``max_sequences``);
* ARI of prompt + completion text (counting rules of :func:`rea.observables.ari_counts`, capped): DP over
  (last token, Δcharacters, Δwords, Δsentences) with a log scale per state (:mod:`rea.exact.ari`).

Distributions are returned as :class:`ExactDistribution` (sorted atoms with log-probabilities, tails, bins).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rea.arguments import check_positive_int

_FLUSH = 1e-280  # scaled entries below this (relative to their column/row maximum) are set to 0


# --------------------------------------------------------------------------------------------- helpers


def transition_matrix(lm) -> np.ndarray:
    """The Markov model's transition matrix A[i, j] = p(x_τ = j | x_{τ−1} = i) as float64 ``[V, V]``."""
    a = np.asarray(getattr(lm, "transition_matrix", None), dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise TypeError(
            f"rea.exact needs a Markov model with a transition_matrix [V, V] (e.g. rea.lm.toy.ToyLM), got {lm!r}"
        )
    return a


def prompt_state(lm, prompt) -> int:
    """The Markov state of ``prompt`` (a string or a list of token ids): the id of its last token."""
    ids = lm.encode(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
    if not ids:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens; give a prompt with some text")
    v = transition_matrix(lm).shape[0]
    if not 0 <= ids[-1] < v:
        raise ValueError(f"prompt token id {ids[-1]} is outside the vocabulary [0, {v})")
    return ids[-1]




def token_ids(lm, tokens) -> list[int]:
    """Token ids from ids or token strings (``"!"``, ``" very"``, ``"very"``), each naming exactly one token."""
    if tokens is None:
        raise ValueError("observable='count' needs tokens=[...] (token ids or strings) naming the counted tokens")
    if isinstance(tokens, (str, int, np.integer)):
        tokens = [tokens]
    v = transition_matrix(lm).shape[0]
    out = set()
    for t in tokens:
        if isinstance(t, str):
            ids = lm.encode(t)
            if len(ids) != 1:
                raise ValueError(f"token string {t!r} encodes to {len(ids)} tokens; give exactly one token per entry")
            out.add(ids[0])
        else:
            t = int(t)
            if not 0 <= t < v:
                raise ValueError(f"token id {t} is outside the vocabulary [0, {v})")
            out.add(t)
    if not out:
        raise ValueError("tokens must name at least one token to count")
    return sorted(out)


def pair_observable(lm, observable="logprob", tokens=None) -> tuple[np.ndarray, np.ndarray]:
    """(G, G₁) ``[V, V]`` of an additive observable φ = Σ_τ g_τ(x_τ, x_{τ+1}); G₁ is used for the first transition.

    ``observable``: ``"logprob"`` (G = log A), ``"repeats"`` (G = I, G₁ = 0), ``"count"`` (G[i, j] = 1[j ∈ S],
    S = ``tokens``), or an array G ``[V, V]`` (G₁ = G).
    """
    a = transition_matrix(lm)
    v = a.shape[0]
    if isinstance(observable, str):
        key = observable.lower().replace("-", "_")
        if key in ("logprob", "log_prob"):
            g = np.log(a)
            return g, g
        if key == "repeats":
            return np.eye(v), np.zeros((v, v))
        if key == "count":
            mask = np.zeros(v)
            mask[token_ids(lm, tokens)] = 1.0
            g = np.broadcast_to(mask, (v, v)).copy()
            return g, g
        raise ValueError(
            f"observable must be 'logprob', 'repeats', 'count' or an array G [V, V], got {observable!r} "
            f"(ARI is not additive: use ari_distribution)"
        )
    g = np.asarray(observable, dtype=np.float64)
    if g.shape != (v, v) or not np.isfinite(g).all():
        raise ValueError(f"a pair observable must be a finite array of shape ({v}, {v}), got shape {g.shape}")
    return g, g


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    mx = np.max(x, axis=-1)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        return safe + np.log(np.sum(np.exp(x - safe[..., None]), axis=-1))


# --------------------------------------------------------------------------------------------- distributions


@dataclass
class ExactDistribution:
    """A discrete distribution given by sorted atoms.

    Attributes
    ----------
    values : float64 ``[K]`` strictly increasing atom locations
    log_probs : float64 ``[K]`` log P(φ = values[k]) (``-inf`` for impossible values)
    """

    values: np.ndarray
    log_probs: np.ndarray

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=np.float64)
        self.log_probs = np.asarray(self.log_probs, dtype=np.float64)
        if self.values.shape != self.log_probs.shape or self.values.ndim != 1:
            raise ValueError("values and log_probs must be 1-D arrays of the same length")
        # log P(φ ≥ values[k]) and log P(φ ≤ values[k])
        self._log_sf = np.logaddexp.accumulate(self.log_probs[::-1])[::-1]
        self._log_cdf = np.logaddexp.accumulate(self.log_probs)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def probs(self) -> np.ndarray:
        """P(φ = values[k]) ``[K]`` (underflows to 0 below ~1e-308; use ``log_probs`` there)."""
        return np.exp(self.log_probs)

    def log_tail(self, a):
        """log P(φ ≥ a), vectorised over ``a`` (−inf above the largest atom)."""
        a = np.asarray(a, dtype=np.float64)
        k = np.searchsorted(self.values, a, side="left")
        out = np.concatenate([self._log_sf, [-np.inf]])[k]
        return out if out.ndim else float(out)

    def tail(self, a):
        """P(φ ≥ a) = Σ_{v_k ≥ a} p_k, vectorised over ``a``."""
        return np.exp(self.log_tail(a))

    def log_cdf(self, a):
        """log P(φ ≤ a), vectorised over ``a``."""
        a = np.asarray(a, dtype=np.float64)
        k = np.searchsorted(self.values, a, side="right")
        out = np.concatenate([[-np.inf], self._log_cdf])[k]
        return out if out.ndim else float(out)

    def cdf(self, a):
        """P(φ ≤ a), vectorised over ``a``."""
        return np.exp(self.log_cdf(a))

    def log_bin_probs(self, edges) -> np.ndarray:
        """log P(edges[b] ≤ φ < edges[b+1]) ``[len(edges) − 1]``; the last bin also includes its right edge.

        Each bin is summed directly (not as a difference of tails), so tiny bins are exact.
        """
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("edges must be a strictly increasing 1-D array with at least 2 entries")
        lo = np.searchsorted(self.values, edges[:-1], side="left")
        hi = np.searchsorted(self.values, edges[1:], side="left")
        hi[-1] = np.searchsorted(self.values, edges[-1], side="right")
        out = np.full(len(edges) - 1, -np.inf)
        for b, (i, j) in enumerate(zip(lo, hi)):
            if j > i:
                out[b] = _logsumexp_rows(self.log_probs[i:j])
        return out

    def bin_probs(self, edges) -> np.ndarray:
        """P(edges[b] ≤ φ < edges[b+1]) ``[len(edges) − 1]`` (see :meth:`log_bin_probs`)."""
        return np.exp(self.log_bin_probs(edges))

    def density(self, edges) -> np.ndarray:
        """Bin probability / bin width ``[len(edges) − 1]`` (the paper's histogram density)."""
        return self.bin_probs(edges) / np.diff(np.asarray(edges, dtype=np.float64))

    def mean(self) -> float:
        """E[φ] = Σ_k p_k v_k."""
        return float(np.sum(self.probs * self.values))

    def var(self) -> float:
        """Var[φ] = Σ_k p_k (v_k − E φ)²."""
        return float(np.sum(self.probs * (self.values - self.mean()) ** 2))

    def log_partition(self, lam):
        """log E[e^{−λ φ}] from the atoms, vectorised over ``lam``."""
        lam = np.asarray(lam, dtype=np.float64)
        out = _logsumexp_rows(self.log_probs[None, :] - lam.reshape(-1, 1) * self.values[None, :])
        return out.reshape(lam.shape) if lam.ndim else float(out[0])


def merge_atoms(values: np.ndarray, log_probs: np.ndarray) -> ExactDistribution:
    """Sort atoms and merge exactly equal values (log-sum-exp of their probabilities)."""
    keep = np.isfinite(log_probs)
    values, log_probs = values[keep], log_probs[keep]
    order = np.argsort(values, kind="stable")
    values, log_probs = values[order], log_probs[order]
    uniq, start = np.unique(values, return_index=True)
    return ExactDistribution(uniq, np.logaddexp.reduceat(log_probs, start))


# --------------------------------------------------------------------------------------------- log Z


def _tilted(lm, lam, observable, tokens):
    """Scaled tilted matrices: M(λ) = Mhat e^{c}, Mhat ≤ 1 entrywise, for λ ``[K]`` -> (Mhat [K,V,V], c [K], ...)."""
    a = transition_matrix(lm)
    g, g1 = pair_observable(lm, observable, tokens)
    log_a = np.log(a)
    lam = np.asarray(lam, dtype=np.float64).reshape(-1)
    if not np.isfinite(lam).all():
        raise ValueError("lam must be finite")
    out = []
    for gg in (g, g1):
        log_m = log_a[None] - lam[:, None, None] * gg[None]
        c = log_m.max(axis=(1, 2))
        out.append((np.exp(log_m - c[:, None, None]), c, gg))
    return out


def log_partition(lm, prompt, length: int, lam, observable="logprob", tokens=None):
    """log Z(λ) = log E_{p_M}[e^{−λ φ}] = log e_{x_t}ᵀ M₁(λ) M(λ)^{L−1} 1 for an additive observable.

    M(λ)[i, j] = A[i, j] e^{−λ g(i, j)} (see :func:`pair_observable`). The vector is rescaled to max 1 at every step
    and the log scales accumulated, so any L (1000s) is finite. Vectorised: ``lam`` of any shape -> same shape
    (a float for a scalar).
    """
    length = check_positive_int("length", length)
    x0 = prompt_state(lm, prompt)
    lam_arr = np.asarray(lam, dtype=np.float64)
    (mh, c, _), (mh1, c1, _) = _tilted(lm, lam_arr, observable, tokens)
    v = mh1[:, x0, :]
    r = v.max(axis=1, keepdims=True)
    v = v / r
    log_s = c1 + np.log(r[:, 0])
    for _ in range(length - 1):
        v = np.matmul(v[:, None, :], mh)[:, 0]
        r = v.max(axis=1, keepdims=True)
        v = v / r
        log_s += c + np.log(r[:, 0])
    out = log_s + np.log(v.sum(axis=1))
    return out.reshape(lam_arr.shape) if lam_arr.ndim else float(out[0])


def exact_mean(lm, prompt, length: int, observable="logprob", tokens=None, lam=0.0):
    """E_{p_λ}[φ] = −d log Z/dλ under the tilted law p_λ ∝ e^{−λφ} p_M (λ = 0: the model's mean).

    Forward–backward with rescaling: E_λ[φ] = Σ_τ α_{τ−1}ᵀ (M_τ ∘ G_τ) β_τ / Z, α_τ = e_{x_t}ᵀ M₁…M_τ,
    β_τ = M_{τ+1}…M_L 1. Vectorised over ``lam`` like :func:`log_partition`.
    """
    length = check_positive_int("length", length)
    x0 = prompt_state(lm, prompt)
    lam_arr = np.asarray(lam, dtype=np.float64)
    (mh, c, g), (mh1, c1, g1) = _tilted(lm, lam_arr, observable, tokens)
    k, v = mh.shape[0], mh.shape[1]

    def mats(tau):  # transition tau = 1..L
        return (mh1, c1, g1) if tau == 1 else (mh, c, g)

    # forward: alpha[tau] normalised, scale la[tau], tau = 0..L-1
    alpha = np.zeros((length, k, v))
    la = np.zeros((length, k))
    alpha[0, :, x0] = 1.0
    for tau in range(1, length):
        m, cc, _ = mats(tau)
        x = np.matmul(alpha[tau - 1][:, None, :], m)[:, 0]
        r = x.max(axis=1)
        alpha[tau] = x / r[:, None]
        la[tau] = la[tau - 1] + cc + np.log(r)
    # backward, accumulating the expectation
    beta = np.ones((k, v))
    lb = np.zeros(k)
    terms = np.zeros((length, k))  # α_{τ−1}ᵀ (M_τ ∘ G_τ) β_τ can be negative: value and log scale kept apart
    scales = np.zeros((length, k))
    for tau in range(length, 0, -1):
        m, cc, gg = mats(tau)
        terms[tau - 1] = np.einsum("ki,kij,ij,kj->k", alpha[tau - 1], m, gg, beta)
        scales[tau - 1] = la[tau - 1] + cc + lb
        x = np.matmul(m, beta[:, :, None])[:, :, 0]
        r = x.max(axis=1)
        beta = x / r[:, None]
        lb = lb + cc + np.log(r)
    log_z = lb + np.log(beta[:, x0])
    out = np.sum(terms * np.exp(scales - log_z[None, :]), axis=0)
    return out.reshape(lam_arr.shape) if lam_arr.ndim else float(out[0])


def scgf(lm, lam, observable="logprob", tokens=None):
    """Scaled cumulant generating function θ(λ) = lim_{L→∞} log Z(λ)/L = log ρ(M(λ)) (Perron eigenvalue)."""
    lam_arr = np.asarray(lam, dtype=np.float64)
    (mh, c, _), _ = _tilted(lm, lam_arr, observable, tokens)
    rho = np.array([np.max(np.abs(np.linalg.eigvals(m))) for m in mh])
    out = c + np.log(rho)
    return out.reshape(lam_arr.shape) if lam_arr.ndim else float(out[0])


# --------------------------------------------------------------------------------------------- integer observables


def count_distribution(lm, prompt, length: int, observable="repeats", tokens=None) -> ExactDistribution:
    """Exact pmf P(φ = k), k = 0..L, of an integer additive observable with g ∈ {0, 1} (repeats, token counts).

    DP over (last token, count): with A⁰ = A ∘ (1 − G), A¹ = A ∘ G,

        P_τ[j, k] = Σ_i A⁰[i, j] P_{τ−1}[i, k] + Σ_i A¹[i, j] P_{τ−1}[i, k − 1],   P_0 = e_{x_t} at k = 0,

    P(φ = k) = Σ_j P_L[j, k]. Each count column k is stored as m[:, k]·e^{s_k} with max m[:, k] = 1, so
    probabilities far below 1e-300 keep full relative precision. Cost O(L² V²).
    """
    length = check_positive_int("length", length)
    x0 = prompt_state(lm, prompt)
    a = transition_matrix(lm)
    g, g1 = pair_observable(lm, observable, tokens)
    for gg in (g, g1):
        if not np.isin(gg, (0.0, 1.0)).all():
            raise ValueError("count_distribution needs a 0/1 pair observable ('repeats', 'count' or a 0/1 array)")
    v = a.shape[0]
    n = length + 1
    stay = [(a * (1.0 - g1)).T.copy(), (a * (1.0 - g)).T.copy()]  # count unchanged
    move = [(a * g1).T.copy(), (a * g).T.copy()]  # count + 1
    m = np.zeros((v, 1))  # columns: counts 0..τ after τ steps
    m[x0, 0] = 1.0
    ls = np.zeros(1)
    zero = np.zeros((v, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        for tau in range(length):
            first = 0 if tau == 0 else 1
            x0_ = np.concatenate([stay[first] @ m, zero], axis=1)  # count k, scale ls[k]
            x1 = np.concatenate([zero, move[first] @ m], axis=1)  # count k + 1, scale ls[k]
            ls0 = np.append(ls, -np.inf)
            ls1 = np.concatenate([[-np.inf], ls])
            r0, r1 = x0_.max(axis=0), x1.max(axis=0)
            e0 = np.where(r0 > 0, ls0 + np.log(r0), -np.inf)
            e1 = np.where(r1 > 0, ls1 + np.log(r1), -np.inf)
            top = np.maximum(e0, e1)
            live = np.isfinite(top)
            ref = np.where(live, top, 0.0)
            f0 = np.where(live & (r0 > 0), np.exp(ls0 - ref), 0.0)
            f1 = np.where(live & (r1 > 0), np.exp(ls1 - ref), 0.0)
            f0[f0 < _FLUSH], f1[f1 < _FLUSH] = 0.0, 0.0
            m = x0_ * f0 + x1 * f1
            r = m.max(axis=0)
            pos = r > 0
            m = m / np.where(pos, r, 1.0)
            m[m < _FLUSH] = 0.0  # relative to the column max: negligible, and avoids slow subnormal arithmetic
            ls = np.where(pos, top + np.log(np.where(pos, r, 1.0)), -np.inf)
        log_p = ls + np.log(m.sum(axis=0))
    log_p[~np.isfinite(ls)] = -np.inf
    return ExactDistribution(np.arange(n, dtype=np.float64), log_p)


# --------------------------------------------------------------------------------------------- log-prob


def enumerate_completions(lm, prompt, length: int, max_sequences: int = 10**7):
    """All V^L completions in lexicographic order: tokens int64 ``[V^L, L]`` and float64 log p ``[V^L]``.

    log p(x) = Σ_τ log A[x_τ, x_{τ+1}] (exact float64 A). Raises when V^L > ``max_sequences``.
    """
    length = check_positive_int("length", length)
    x0 = prompt_state(lm, prompt)
    log_a = np.log(transition_matrix(lm))
    v = log_a.shape[0]
    if v**length > max_sequences:
        raise ValueError(
            f"enumerating {v}^{length} = {v**length:.3g} completions exceeds max_sequences={max_sequences:.3g}; "
            f"use a shorter length (at most {int(np.log(max_sequences) / np.log(v))} for V = {v})"
        )
    lp = log_a[x0].copy()
    for _ in range(length - 1):
        lp = (lp.reshape(-1, v)[:, :, None] + log_a[None]).reshape(-1)
    tokens = np.stack(np.unravel_index(np.arange(v**length), (v,) * length), axis=1).astype(np.int64)
    return tokens, lp


def logprob_distribution(lm, prompt, length: int, max_sequences: int = 10**7) -> ExactDistribution:
    """Exact distribution of φ_LP = log p_M(x) over completions of ``length`` tokens, as atoms.

    P(φ = v) = Σ_{x: log p(x) = v} p(x) = #{x: log p(x) = v}·e^{v}; atoms are the V^L values of
    Σ_τ log A[x_τ, x_{τ+1}] (float64), exactly equal values merged. Needs V^L ≤ ``max_sequences``.
    """
    try:
        _, lp = enumerate_completions(lm, prompt, length, max_sequences)
    except ValueError as err:
        raise ValueError(f"the exact Log-Prob distribution {err}") from None
    values, counts = np.unique(lp, return_counts=True)
    return ExactDistribution(values, values + np.log(counts))
