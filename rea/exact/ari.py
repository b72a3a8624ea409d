"""The exact distribution of φ_ARI for the Markov toy LM: a dynamic programme over (letters, words, sentences).

ARI depends on the whole completion only through three counts, so its exact distribution is a DP over count states
(see :func:`ari_distribution`). :func:`ari_token_features` gives each token's contribution.
"""

from __future__ import annotations

import numpy as np

from rea.arguments import check_positive_int
from rea.exact.markov import ExactDistribution, merge_atoms, prompt_state, transition_matrix
from rea.observables import ARI_CAP, SENTENCE_END, ari_counts, ari_from_counts

_ENDERS = set(".!?")


# --------------------------------------------------------------------------------------------- ARI


def ari_token_features(lm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-token ARI increments ``[V]``: letters ℓ_j (alnum count), word ω_j ∈ {0, 1}, sentence-end e_j ∈ {0, 1}.

    Valid for vocabularies where every token with a letter/digit starts with whitespace and is one chunk free of
    ``.!?`` (so it adds exactly one word), and every other token is either made only of ``.!?`` (e_j = 1: it opens a
    sentence-end run unless the previous character is in ``.!?``) or contains none of them.
    """
    v = transition_matrix(lm).shape[0]
    letters, word, ender = np.zeros(v, np.int64), np.zeros(v, np.int64), np.zeros(v, np.int64)
    for j in range(v):
        s = lm.decode([j])
        alnum = sum(ch.isalnum() for ch in s)
        if alnum:
            if not (s[0].isspace() and len(s.split()) == 1 and not _ENDERS & set(s)):
                raise ValueError(f"token {s!r} breaks the ARI DP's assumptions (word tokens start with a space)")
            letters[j], word[j] = alnum, 1
        elif s and set(s) <= _ENDERS:
            ender[j] = 1
        elif _ENDERS & set(s):
            raise ValueError(f"token {s!r} mixes sentence-end punctuation with other characters")
    return letters, word, ender


def _ari_shifts(letters, word, ender):
    """The distinct count shifts (Δc, Δw, Δs) ``[D, 3]`` of the tokens, and the shift index of each token ``[V]``
    when the previous character ended a sentence run (``d_r``: no new sentence) and when it did not (``d_n``)."""
    v = letters.shape[0]
    shift_r = np.stack([letters, word, np.zeros(v, np.int64)], axis=1)  # previous char ends a run
    shift_n = np.stack([letters, word, ender], axis=1)  # previous char does not
    shifts, inv_all = np.unique(np.concatenate([shift_r, shift_n]), axis=0, return_inverse=True)
    return shifts, inv_all.reshape(-1)[:v], inv_all.reshape(-1)[v:]


def _ari_scatter(pr, pn, ls, inv, k_new: int, d_r, d_n):
    """One step of the ARI DP: move the scaled mass to the new states and rescale each state's row.

    ``pr[K, V]`` / ``pn[K, V]``: the mass of the K states times A, split by whether the previous character ended a
    run; ``ls[K]`` their log scales; ``inv[K, D]``: the new state of state k under shift d; shift of token j is
    ``d_r[j]`` or ``d_n[j]``. Every new row is rescaled so its maximum is 1, the log scale carrying the rest
    (the mass spans hundreds of orders of magnitude). Returns the new ``m[K', V]``, ``ls[K']`` and the mask of
    the ``k_new`` states that carry mass.
    """
    v = pr.shape[1]
    blocks = []
    for d in range(inv.shape[1]):
        cols = np.flatnonzero((d_r == d) | (d_n == d))
        vals = np.where(d_r[cols] == d, pr[:, cols], 0.0) + np.where(d_n[cols] == d, pn[:, cols], 0.0)
        top = vals.max(axis=1)
        blocks.append((inv[:, d], cols, vals, np.where(top > 0, ls + np.log(top), -np.inf)))
    ls_new = np.full(k_new, -np.inf)
    for tgt, _, _, src in blocks:
        np.maximum.at(ls_new, tgt, src)
    flat_idx, flat_w = [], []
    for tgt, cols, vals, src in blocks:
        live = np.isfinite(src)
        fac = np.exp(ls[live] - ls_new[tgt[live]])
        flat_idx.append((tgt[live, None] * v + cols[None, :]).reshape(-1))
        flat_w.append((vals[live] * fac[:, None]).reshape(-1))
    m = np.bincount(np.concatenate(flat_idx), np.concatenate(flat_w), minlength=k_new * v).reshape(k_new, v)
    r = m.max(axis=1)
    keep = r > 0
    return m[keep] / r[keep, None], ls_new[keep] + np.log(r[keep]), keep


def ari_distribution(
    lm, prompt: str, length: int, cap: float = ARI_CAP, max_states: int = 400_000
) -> ExactDistribution:
    """Exact distribution of φ_ARI = min(ARI(prompt + completion), cap), as atoms.

    With the counting rules of :func:`rea.observables.ari_counts` and a word/punctuation vocabulary
    (:func:`ari_token_features`): c = c₀ + Σ ℓ_{x_τ}, w = w₀ + Σ ω_{x_τ}, s = max(1, s₀ + #new runs), where a
    sentence-end token opens a new run iff the previous character (the prompt's last character for the first
    token) is not in ``.!?``; (c₀, w₀, s₀) are the prompt text's counts (s₀ before the max(1, ·)). DP over states
    (Δc, Δw, Δs) with a vector over the last token and a log scale per state:

        P_τ[(Δc + ℓ_j, Δw + ω_j, Δs + e_j·1[prev ∉ end]), j] += Σ_i P_{τ−1}[(Δc, Δw, Δs), i] A[i, j].

    ARI = 4.71 c/w + 0.5 w/s − 21.43 (w := max(w, 1)), capped; equal values are merged. ``prompt`` must be the
    prompt *text* (ARI is computed on the raw prompt string, as :func:`rea.observables.ari` does).
    """
    length = check_positive_int("length", length)
    text = prompt if isinstance(prompt, str) else lm.decode(prompt)
    x0 = prompt_state(lm, prompt)
    a = transition_matrix(lm)
    v = a.shape[0]
    letters, word, ender = ari_token_features(lm)
    c0, w0, _ = ari_counts(text)
    s0 = len(SENTENCE_END.findall(text))
    flag0 = bool(text) and text[-1] in _ENDERS
    end_prev = ender.astype(bool)

    n = length + 1
    keys = np.zeros((1, 3), np.int64)
    m = np.zeros((1, v))
    m[0, x0] = 1.0
    ls = np.zeros(1)
    shifts, d_r, d_n = _ari_shifts(letters, word, ender)

    with np.errstate(divide="ignore"):
        for tau in range(length):
            if tau == 0:
                full = m @ a
                pr, pn = (full, np.zeros_like(full)) if flag0 else (np.zeros_like(full), full)
            else:
                pr = m[:, end_prev] @ a[end_prev]
                pn = m[:, ~end_prev] @ a[~end_prev]
            codes = (keys[:, None, :] + shifts[None]) @ np.array([n * n, n, 1], dtype=np.int64)  # [K, nD]
            uniq, inv = np.unique(codes.reshape(-1), return_inverse=True)
            if len(uniq) > max_states:
                raise ValueError(
                    f"the ARI DP needs more than max_states={max_states} (Δc, Δw, Δs) states at step {tau + 1} "
                    f"of {length}; use a shorter length or raise max_states (memory ≈ 16·V·max_states bytes)"
                )
            m, ls, keep = _ari_scatter(pr, pn, ls, inv.reshape(codes.shape), len(uniq), d_r, d_n)
            keys = np.stack([uniq // (n * n), (uniq // n) % n, uniq % n], axis=1)[keep]

    log_p = ls + np.log(m.sum(axis=1))
    c = c0 + keys[:, 0]
    w = w0 + keys[:, 1]
    s = np.maximum(1, s0 + keys[:, 2])
    values = ari_from_counts(c, w, s, cap)
    return merge_atoms(np.asarray(values, dtype=np.float64), log_p)
