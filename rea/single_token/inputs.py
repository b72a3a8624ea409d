"""Input distributions D = Π_i D_i over the vocabulary, and sampling from them.

A distribution is a ``[k, V]`` float64 matrix ``D[i, v] = D_i(v)`` (rows sum to one, zero outside the support).
Builders: :func:`uniform_distribution` (any supports), :func:`hex_distribution`, :func:`camel_distribution`,
:func:`english_distribution` (token classes of a tokenizer, [WH]'s input distributions) and
:func:`story_distribution` (the book's prompt :data:`STORY_PROMPT` with a few positions replaced by story words).
:func:`check_distribution` validates one; :func:`sample_inputs`, :func:`log_prob_inputs` and :func:`log_distribution`
draw inputs and score them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import numpy as np
import torch

STORY_PROMPT = "Once upon a time, in a big forest, there lived a rhinoc"
"""The book's prompt (REA §5), 15 SmolLM2 tokens."""


def check_distribution(D, vocab_size: int | None = None) -> torch.Tensor:
    """Validate and return ``D`` as a float64 tensor ``[k, V]`` (nonnegative, finite, rows summing to 1)."""
    if not isinstance(D, torch.Tensor):
        D = torch.as_tensor(np.asarray(D))
    D = D.detach().to(torch.float64).cpu()
    if D.ndim != 2 or D.shape[0] < 1:
        raise ValueError(f"D must be a [k, V] matrix of per-position probabilities, got shape {tuple(D.shape)}")
    if vocab_size is not None and D.shape[1] != vocab_size:
        raise ValueError(f"D must have V={vocab_size} columns (the model's vocabulary), got {D.shape[1]}")
    if not torch.isfinite(D).all() or (D < 0).any():
        raise ValueError("D must hold finite nonnegative probabilities")
    sums = D.sum(1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
        bad = int(torch.argmax((sums - 1).abs()))
        raise ValueError(f"D rows must sum to 1 (row {bad} sums to {float(sums[bad]):.6g})")
    return D


def uniform_distribution(token_ids: Sequence[Sequence[int]] | Sequence[int], k: int | None,
                         vocab_size: int) -> torch.Tensor:
    """``D[i] = uniform over token_ids[i]`` (or over one shared list repeated ``k`` times) -> ``[k, V]``."""
    if k is not None:
        token_ids = [list(token_ids)] * k
    D = torch.zeros(len(token_ids), vocab_size, dtype=torch.float64)
    for i, ids in enumerate(token_ids):
        ids = sorted(set(int(v) for v in ids))
        if not ids:
            raise ValueError(f"position {i} of the distribution has an empty support")
        D[i, ids] = 1.0 / len(ids)
    return D


def _matching(tokenizer, pattern: str) -> list[int]:
    """Sorted ids of the tokenizer's tokens (as spelled in its vocabulary) that match ``pattern`` in full."""
    rx = re.compile(pattern)
    return sorted(i for t, i in tokenizer.get_vocab().items() if rx.fullmatch(t))


def hex_distribution(tokenizer, k: int = 8) -> torch.Tensor:
    """Uniform over tokens made of 1-4 hex characters (all lowercase ``[0-9a-f]`` or all uppercase), ``k`` positions."""
    return uniform_distribution(_matching(tokenizer, r"[0-9a-f]{1,4}|[0-9A-F]{1,4}"), k, len(tokenizer))


def camel_distribution(tokenizer, k: int = 8) -> torch.Tensor:
    """Uniform over alphabetic word pieces without a leading space: ``Capitalised`` pieces or lowercase fragments."""
    return uniform_distribution(_matching(tokenizer, r"[A-Z][a-z]+|[a-z]+"), k, len(tokenizer))


def english_distribution(tokenizer, k: int = 8) -> torch.Tensor:
    """Uniform over leading-space lowercase words of at least two letters (``'Ġword'`` in GPT-2 byte notation)."""
    return uniform_distribution(_matching(tokenizer, r"Ġ[a-z]{2,}"), k, len(tokenizer))


STORY_WORDS = {
    "adjective": "big small little old happy sad dark green tall tiny kind brave shy quiet funny red blue yellow "
                 "pretty magic strong warm cold wild huge bright soft young lazy busy".split(),
    "place": "forest house garden park town village tree cave river lake castle field farm hill sea school city "
             "jungle pond room box wood meadow world land island shop sky nest yard".split(),
    "verb": "lived played ran jumped sat slept walked danced sang ate looked found saw met hid flew swam waited "
            "laughed cried smiled worked stayed grew talked lay stood came went".split(),
    "animal": "dog cat bird fish bear lion fox frog duck mouse rabbit owl girl boy king queen dragon monkey horse "
              "cow pig sheep bee bug tiger wolf deer snake man lady".split(),
}
"""Small story vocabularies (single SmolLM2 tokens with a leading space once filtered by :func:`story_distribution`)."""


def story_distribution(tokenizer, n_words: int = 30,
                       slots: Sequence[str] = ("adjective", "place", "verb", "animal")) -> torch.Tensor:
    """The book's prompt with some positions replaced by random story words.

    ``"Once upon a time, in a big forest, there lived a rhinoc"`` is cut before ``rhinoc``; the positions of
    ``big``, ``forest``, ``lived`` become uniform over the first ``n_words`` single-token words of the matching
    :data:`STORY_WORDS` list, and a final animal slot is appended in place of ``rhinoc``. ``slots`` chooses which
    of the four are random (the others keep the prompt's word; a fixed animal slot is ``" rhino"``'s first token).
    Returns ``[k, V]`` with one-hot rows for fixed positions. Three random slots × 30 words = 27 000 inputs, small
    enough to enumerate (:func:`exact_probabilities`).
    """
    unknown = set(slots) - set(STORY_WORDS)
    if unknown:
        raise ValueError(f"slots must be drawn from {sorted(STORY_WORDS)}, got {sorted(unknown)}")
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    base = enc("Once upon a time, in a big forest, there lived a")
    rows: list[list[int]] = [[t] for t in base]
    where = {"adjective": enc("Once upon a time, in a big"), "place": enc("Once upon a time, in a big forest"),
             "verb": enc("Once upon a time, in a big forest, there lived")}
    for slot in ("adjective", "place", "verb"):
        if slot in slots:
            rows[len(where[slot]) - 1] = _single_token_words(tokenizer, STORY_WORDS[slot], n_words)
    rows.append(_single_token_words(tokenizer, STORY_WORDS["animal"], n_words) if "animal" in slots
                else enc(" rhino")[:1])
    return uniform_distribution(rows, None, len(tokenizer))


def _single_token_words(tokenizer, words: Iterable[str], n: int) -> list[int]:
    """Ids of the first ``n`` distinct ``words`` that are one token with a leading space (``" " + word``)."""
    out = []
    for w in words:
        ids = tokenizer.encode(" " + w, add_special_tokens=False)
        if len(ids) == 1 and ids[0] not in out:
            out.append(ids[0])
        if len(out) == n:
            break
    return out


def sample_inputs(D: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` i.i.d. inputs ``x ~ D``: LongTensor ``[n, k]``."""
    return torch.stack([torch.multinomial(D[i], n, replacement=True, generator=generator)
                        for i in range(D.shape[0])], 1)


def log_prob_inputs(logD: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log D(x) = Σ_i log D_i(x_i)`` for ``x[n, k]`` given ``logD[k, V]`` -> ``[n]``."""
    return logD.gather(1, x.T.cpu()).sum(0)


def log_distribution(D: torch.Tensor) -> torch.Tensor:
    """``log D[k, V]``, with ``−inf`` outside the support (``D = 0``): the log-probabilities proposals are built on."""
    return torch.where(D > 0, D.log(), torch.full_like(D, -math.inf))
