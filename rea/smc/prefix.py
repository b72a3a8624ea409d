"""Observables evaluated on prefixes of completions, for sequential Monte Carlo on prefixes.

SMC weights a particle at step t by G_t = exp(−λ(φ(x_{≤t}) − φ(x_{<t}))), so it needs φ of every prefix
x_{≤t} = x_{P+1:P+t} of a completion, not only of the finished completion. A :class:`PrefixObservable` maps the
prefixes of B particles, ``tokens[B, t]`` (int64) and their per-token log p_M ``logp[B, t]`` (float64), to
φ ``[B]`` (float64); at t = L it must equal the full observable of :mod:`rea.observables`, which is how the
telescoping product Π_t G_t = e^{−λφ(x)} (with φ(empty) := 0) is exact.

Built-ins (each reuses the counting rule of :mod:`rea.observables`):

* ``"repeats"``: Σ_τ 1[x_{τ+1} = x_τ] within the prefix (:func:`rea.observables.repeats_tokens`);
* ``"logprob"``: Σ_τ log p_M(x_τ | x_{<τ}) over the prefix (from the decode, no extra model call);
* ``"count"``: the number of prefix tokens in a token set (``tokens=``: ids or strings of one token each), as
  ``rea.exact``'s ``"count"`` observable;
* ``"ari"``: ARI of prompt + decoded prefix, capped (:func:`rea.observables.ari_text`). Not additive: it costs one
  ``lm.decode`` per particle and step (B·L decodes per run), cheap next to the model for real LMs.

A user observable is any callable ``fn(tokens[B, t], logp[B, t]) -> φ[B]``; its values are checked (shape, finite)
at every step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rea.observables import ari_text, repeats_tokens


class PrefixObservable:
    """φ on prefixes: ``obs(tokens[B, t], logp[B, t]) -> float64 [B]`` (checked: shape and finiteness)."""

    def __init__(self, fn: Callable, name: str):
        self.fn, self.name = fn, name

    def __call__(self, tokens: np.ndarray, logp: np.ndarray) -> np.ndarray:
        values = np.asarray(self.fn(tokens, logp), dtype=np.float64)
        if values.shape != (len(tokens),):
            raise ValueError(
                f"observable {self.name!r} returned shape {values.shape} on prefixes of shape {tokens.shape}; it must "
                f"return one value per prefix, shape ({len(tokens)},)"
            )
        if not np.isfinite(values).all():
            raise ValueError(f"observable {self.name!r} returned non-finite values; observables must be finite numbers")
        return values

    def __repr__(self) -> str:
        return f"PrefixObservable({self.name!r})"


def count_token_ids(lm, tokens) -> np.ndarray:
    """Token ids ``[K]`` from ids or strings (each string must encode to exactly one token of ``lm``)."""
    if tokens is None:
        raise ValueError("observable='count' needs tokens=[...] (token ids or strings) naming the counted tokens")
    if isinstance(tokens, (str, int, np.integer)):
        tokens = [tokens]
    out = set()
    for t in tokens:
        try:
            ids = lm.encode(t) if isinstance(t, str) else [int(t)]
        except ValueError as err:
            raise ValueError(f"tokens: the model cannot encode {t!r}: {err}") from None
        if len(ids) != 1 or not 0 <= ids[0] < lm.vocab_size:
            raise ValueError(f"tokens: {t!r} is not one token id of the model's vocabulary [0, {lm.vocab_size})")
        out.add(ids[0])
    if not out:
        raise ValueError("tokens must name at least one token to count")
    return np.array(sorted(out), dtype=np.int64)


def prefix_observable(spec, lm=None, prompt: str | None = None, tokens=None) -> PrefixObservable:
    """A :class:`PrefixObservable` from a name (``"repeats"``, ``"logprob"``, ``"count"`` with ``tokens``,
    ``"ari"``; the last two need ``lm`` and ``"ari"`` the ``prompt`` text) or a user callable
    ``fn(tokens[B, t], logp[B, t]) -> φ[B]``."""
    if isinstance(spec, PrefixObservable):
        return spec
    if callable(spec):
        return PrefixObservable(spec, getattr(spec, "__name__", "user"))
    key = spec.lower().replace("-", "_") if isinstance(spec, str) else None
    if key == "repeats":
        return PrefixObservable(lambda tok, lp: repeats_tokens(tok), "repeats")
    if key in ("logprob", "log_prob"):
        return PrefixObservable(lambda tok, lp: lp.sum(axis=1), "logprob")
    if key == "count":
        ids = count_token_ids(lm, tokens)
        obs = PrefixObservable(lambda tok, lp: np.isin(tok, ids).sum(axis=1).astype(np.float64), "count")
        obs.token_ids = ids  # the counted tokens, for a proposal tilted toward them (rea.tps.kernel.local_tilt)
        return obs
    if key == "ari":
        text = prompt if isinstance(prompt, str) else ""
        return PrefixObservable(lambda tok, lp: ari_text([text + lm.decode(row) for row in tok]), "ari")
    raise ValueError(
        f"observable must be 'repeats', 'logprob', 'count' (with tokens=), 'ari' or a callable "
        f"fn(tokens[B, t], logp[B, t]) -> φ[B], got {spec!r}"
    )
