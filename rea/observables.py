"""Observables φ(x) of completions, vectorised over a batch [REA §4].

Every observable maps a :class:`rea.sampling.Samples` batch of N completions to a float64 array of shape ``[N]``.

* :func:`ari` -- Automated Readability Index of prompt + completion text, capped at 15.
* :func:`log_prob` -- φ_LP(x) = Σ_τ log p_M(x_{τ+1} | x_{1:τ}) over the completion (not length-normalised).
* :func:`repeats` -- Σ_τ 1[x_{τ+1} = x_τ] over consecutive completion tokens.
* :func:`from_text` / :func:`from_tokens` -- wrap a user callable of one text (or one token-id sequence).

Use :func:`get_observable` to turn a name or callable into an observable, and :func:`evaluate` to compute one with
its values checked to be finite.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

ARI_CAP = 15.0
_WORD_CHAR = re.compile(r"[^\W_]", re.UNICODE)  # a letter or a digit
SENTENCE_END = re.compile(r"[.!?]+")  # a run of sentence-end punctuation ends one sentence


def ari_counts(text: str) -> tuple[int, int, int]:
    """Characters, words and sentences of ``text`` under the book's counting rules.

    * characters c: letters and digits (``str.isalnum``); spaces, punctuation and symbols do not count;
    * words w: whitespace-separated chunks that contain at least one letter or digit;
    * sentences s: maximal runs of ``.``, ``!``, ``?`` (so "Wait...!" ends one sentence), at least 1.
    """
    c = sum(ch.isalnum() for ch in text)
    w = sum(1 for chunk in text.split() if _WORD_CHAR.search(chunk))
    s = max(1, len(SENTENCE_END.findall(text)))
    return c, w, s


def ari_from_counts(c, w, s, cap: float = ARI_CAP):
    """ARI = 4.71 c/w + 0.5 w/s − 21.43, capped at ``cap`` (not rounded). A text with no word has w := 1."""
    c, w, s = (np.asarray(v, dtype=np.float64) for v in (c, w, s))
    w = np.maximum(w, 1.0)
    return np.minimum(4.71 * c / w + 0.5 * w / s - 21.43, cap)


def ari_text(texts: list[str], cap: float = ARI_CAP) -> np.ndarray:
    """ARI of each string in ``texts`` -> float64 ``[N]`` (see :func:`ari_counts` for the counting rules)."""
    counts = np.array([ari_counts(t) for t in texts], dtype=np.float64).reshape(-1, 3)
    return ari_from_counts(counts[:, 0], counts[:, 1], counts[:, 2], cap)


def ari(samples) -> np.ndarray:
    """φ_ARI = min(ARI(prompt + completion), 15) for each completion -> ``[N]``."""
    return ari_text([samples.prompt + t for t in samples.texts])


def log_prob(samples) -> np.ndarray:
    """φ_LP = Σ_τ log p_M(x_{τ+1} | x_{1:τ}) over completion tokens (padding after EOS contributes 0) -> ``[N]``."""
    return np.asarray(samples.logp, dtype=np.float64).sum(axis=1)


def repeats_tokens(tokens: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """Σ_{τ=1}^{L-1} 1[x_τ = x_{τ-1}] within each completion ``tokens[N, L]`` (first ``lengths`` tokens) -> ``[N]``.

    The boundary between the prompt's last token and the first completion token is not counted.
    """
    tokens = np.asarray(tokens)
    same = tokens[:, 1:] == tokens[:, :-1]
    if lengths is not None:
        same &= np.arange(1, tokens.shape[1])[None, :] < np.asarray(lengths)[:, None]
    return same.sum(axis=1).astype(np.float64)


def max_run(tokens) -> np.ndarray:
    """Longest run of one repeated token per completion: int ``[N]`` for tokens ``[N, L]`` (1 = no repeats)."""
    tokens = np.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    best = np.ones(len(tokens), dtype=np.int64)
    cur = np.ones(len(tokens), dtype=np.int64)
    for t in range(1, tokens.shape[1]):
        same = tokens[:, t] == tokens[:, t - 1]
        cur = np.where(same, cur + 1, 1)
        best = np.maximum(best, cur)
    return best


def repeats(samples) -> np.ndarray:
    """φ_rep: number of consecutive identical completion tokens -> ``[N]``."""
    return repeats_tokens(samples.tokens, samples.lengths)


def from_text(fn: Callable[[str], float], include_prompt: bool = False):
    """Observable from a user function of one completion's text (optionally prompt + completion)."""

    def observable(samples) -> np.ndarray:
        prefix = samples.prompt if include_prompt else ""
        return np.array([fn(prefix + t) for t in samples.texts], dtype=np.float64)

    observable.__name__ = getattr(fn, "__name__", "text_observable")
    return observable


def from_tokens(fn: Callable[[np.ndarray], float]):
    """Observable from a user function of one completion's token ids (``int64 [length]``)."""

    def observable(samples) -> np.ndarray:
        return np.array(
            [fn(samples.tokens[i, : samples.lengths[i]]) for i in range(len(samples.tokens))], dtype=np.float64
        )

    observable.__name__ = getattr(fn, "__name__", "token_observable")
    return observable


BUILTIN = {"ari": ari, "logprob": log_prob, "log_prob": log_prob, "repeats": repeats}


def get_observable(spec):
    """A built-in observable by name (``'ari'``, ``'logprob'``, ``'repeats'``) or a callable of a Samples batch."""
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec.lower().replace("-", "_") in BUILTIN:
        return BUILTIN[spec.lower().replace("-", "_")]
    raise ValueError(f"observable must be one of {sorted(set(BUILTIN))} or a callable of Samples, got {spec!r}")


def evaluate(spec, samples) -> np.ndarray:
    """Compute observable ``spec`` on ``samples`` -> float64 ``[N]``; raise if any value is not finite."""
    fn = get_observable(spec)
    values = np.asarray(fn(samples), dtype=np.float64)
    if values.shape != (len(samples.tokens),):
        raise ValueError(
            f"observable {getattr(fn, '__name__', spec)!r} returned shape {values.shape}; "
            f"it must return one value per completion, shape ({len(samples.tokens)},)"
        )
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(
            f"observable {getattr(fn, '__name__', spec)!r} returned non-finite values at rows "
            f"{bad[:5].tolist()}{'...' if bad.size > 5 else ''}; observables must be finite numbers"
        )
    return values
