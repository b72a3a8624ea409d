"""ToyLM: an exactly solvable first-order Markov language model over real words and punctuation.

The toy model has a vocabulary of V = 53 tokens -- 48 English words, each with a leading space (" the", " cat",
" rhinoceros", " extraordinarily", ...), and the five punctuation tokens ``"."``, ``","``, ``"!"``, ``"?"``,
``"\\n"`` -- and a fixed transition matrix A ``[V, V]`` (row = previous token, float64, strictly positive):

    p_M(x_{τ+1} = j | x_{1:τ}) = A[x_τ, j].

The next-token distribution depends on the last token only, so every quantity the book estimates (Z(λ), tail
probabilities of ARI / Log-Prob / Repeats, ...) is computable exactly by :mod:`rea.exact`. ToyLM implements the
:class:`rea.lm.models.LanguageModel` interface, so the sampler, :func:`rea.sampling.score` and the TPS move work on it
unchanged.

Conventions (documented choices)
--------------------------------
* Tokenisation: ``encode`` splits text with the regex ``\\n|[^\\S\\n]*[A-Za-z]+|[^\\sA-Za-z]``: a newline, a word
  (with any spaces before it), or one non-space non-letter character. Other whitespace is dropped. Words are
  **lower-cased** and mapped to the token " word" (leading space), so ``decode(encode("Once upon"))`` is
  ``" once upon"``. A word or character outside the vocabulary raises a one-line ``ValueError``.
* ``decode`` concatenates the token strings.
* EOS is the ``"."`` token (``eos_token_id``); as in the paper it is an ordinary token unless the sampler is told
  ``stop_at_eos``.
* ``logits`` are ``float32(log A[x_τ])``. The float64 matrix A is the source of truth: the sampler, which works in
  float32 log-softmax, reproduces log A to ~1e-6 per token.

The matrix is built from a fixed ``seed``: a category grammar (determiner → adjective/noun, noun → punctuation/verb,
...) with Dirichlet word choices inside each category, a few word-level preferences ("once" → "upon",
"there" → "lived"), self-loops that make Repeats interesting (" ha ha ha", " very very", "!!!"), a sparse Dirichlet
noise and a uniform floor (every entry ≥ ~1e-4), so every sequence has positive probability and rare extremes exist
(e.g. " extraordinarily" repeated → ARI capped at 15; "!" runs → very low ARI).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from rea.lm.device import resolve_device

# Words per grammatical category (each becomes the token " word").
CATEGORIES: dict[str, list[str]] = {
    "det": ["the", "a"],
    "adj": ["big", "small", "old", "happy", "little", "dark", "beautiful", "enormous"],
    "noun": ["cat", "dog", "bird", "forest", "tree", "time", "rhinoceros", "river", "elephant", "hippopotamus",
             "friend"],
    "verb": ["sat", "lived", "ran", "saw", "was", "loved", "found", "wandered"],
    "prep": ["in", "on", "upon", "with", "near"],
    "pron": ["he", "she", "it", "they"],
    "conj": ["and", "but", "then"],
    "adv": ["once", "there", "very", "quickly", "extraordinarily"],
    "interj": ["ha", "oh"],
}
PUNCTUATION = [".", ",", "!", "?", "\n"]

DEFAULT_PROMPT = "Once upon a time, in a big forest, there lived a"
"""A prompt the toy vocabulary encodes (the paper's prompt without the partial word "rhinoc")."""

# Category -> category transition weights (rows need not sum to 1; they are normalised).
_CAT_NEXT: dict[str, dict[str, float]] = {
    "det": {"adj": 0.35, "noun": 0.6, "adv": 0.05},
    "adj": {"noun": 0.75, "adj": 0.12, "punct_comma": 0.05, "conj": 0.04, "punct_end": 0.04},
    "noun": {"punct_end": 0.45, "punct_comma": 0.15, "verb": 0.25, "prep": 0.15, "conj": 0.1, "adv": 0.05},
    "verb": {"det": 0.3, "prep": 0.3, "adv": 0.1, "punct_end": 0.25, "pron": 0.05, "conj": 0.1},
    "prep": {"det": 0.7, "pron": 0.15, "noun": 0.15},
    "pron": {"verb": 0.8, "adv": 0.1, "punct_end": 0.1},
    "conj": {"pron": 0.4, "det": 0.3, "adv": 0.2, "verb": 0.1},
    "adv": {"adj": 0.3, "verb": 0.3, "adv": 0.1, "prep": 0.1, "det": 0.1, "punct_end": 0.1},
    "interj": {"interj": 0.3, "punct_end": 0.4, "punct_comma": 0.3},
    ".": {"newline": 0.2, "pron": 0.25, "det": 0.2, "adv": 0.15, "conj": 0.05, "interj": 0.15},
    ",": {"conj": 0.3, "pron": 0.2, "det": 0.2, "prep": 0.15, "adv": 0.1, "interj": 0.05},
    "!": {"newline": 0.2, "pron": 0.25, "det": 0.2, "adv": 0.1, "interj": 0.25},
    "?": {"newline": 0.2, "pron": 0.3, "det": 0.2, "adv": 0.1, "interj": 0.2},
    "\n": {"pron": 0.3, "det": 0.3, "adv": 0.3, "interj": 0.1},
}
# Pseudo-categories on the right-hand side.
_PSEUDO = {"punct_end": [".", "!", "?"], "punct_comma": [","], "newline": ["\n"]}

# Word-level preferences: (previous, next, weight) -> row = (1 − w)·row + w·onehot(next), applied in order.
_PREFERENCES = [
    (" once", " upon", 0.7),
    (" upon", " a", 0.6),
    (" time", ",", 0.5),
    (" there", " lived", 0.4),
    (" there", " was", 0.3),
    (" lived", " a", 0.3),
    (" lived", " in", 0.3),
    (" very", " very", 0.35),
    (" ha", " ha", 0.6),
    ("!", "!", 0.35),
    ("?", "?", 0.2),
    (" extraordinarily", " extraordinarily", 0.05),
    (" little", " little", 0.1),
    (" a", " big", 0.15),
    (" big", " forest", 0.25),
]

_TOKEN_RE = re.compile(r"\n|[^\S\n]*[A-Za-z]+|[^\sA-Za-z]")


def _token_strings() -> list[str]:
    return [" " + w for words in CATEGORIES.values() for w in words] + list(PUNCTUATION)


def build_transition_matrix(seed: int = 0, floor: float = 0.005, noise: float = 0.03) -> np.ndarray:
    """The toy transition matrix A ``[V, V]`` (float64, rows sum to 1, all entries ≥ floor/V).

    A = (1 − floor − noise)·A_grammar + noise·Dirichlet(0.1) + floor/V, then the word-level preferences of
    ``_PREFERENCES`` (each mixes a one-hot into its row) -- deterministic given ``seed``.
    """
    rng = np.random.default_rng(seed)
    strings = _token_strings()
    index = {s: i for i, s in enumerate(strings)}
    v = len(strings)
    members = {cat: [index[" " + w] for w in words] for cat, words in CATEGORIES.items()}
    members.update({k: [index[s] for s in toks] for k, toks in _PSEUDO.items()})
    row_key = {index[" " + w]: cat for cat, words in CATEGORIES.items() for w in words}
    row_key.update({index[p]: p for p in PUNCTUATION})

    grammar = np.zeros((v, v))
    for i in range(v):
        for cat, weight in _CAT_NEXT[row_key[i]].items():
            cols = members[cat]
            grammar[i, cols] += weight * rng.dirichlet(np.full(len(cols), 1.0))
        grammar[i] /= grammar[i].sum()
    sparse = rng.dirichlet(np.full(v, 0.1), size=v)
    a = (1.0 - floor - noise) * grammar + noise * sparse + floor / v
    for prev, nxt, w in _PREFERENCES:
        i, j = index[prev], index[nxt]
        a[i] *= 1.0 - w
        a[i, j] += w
    return a / a.sum(axis=1, keepdims=True)


class _ToyDecoder:
    """Markov 'KV cache': the only state is the last token; logits ``[B, V]`` are rows of the logit table."""

    def __init__(self, table: torch.Tensor, batch_size: int):
        self.table = table
        self.batch_size = batch_size

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids[B, P]`` -> logits ``[B, V]`` = float32 log A[input_ids[:, −1]]."""
        return self.table[input_ids[:, -1].to(self.table.device)]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens[B]`` -> logits ``[B, V]`` = float32 log A[tokens]."""
        return self.table[tokens.to(self.table.device)]

    def step_rows(self, tokens: torch.Tensor, positions: torch.Tensor, rows=None) -> torch.Tensor:
        """Continuous batching (rows at their own positions, all rows or those of ``rows``): the logits depend on the
        last token only, so this is :meth:`step` of ``tokens``."""
        return self.step(tokens)

    def cache_store(self, n_positions: int) -> None:
        """No keys and values to keep: the Markov state is the fed token."""

    def save_rows(self, store, rows, starts, stop) -> None:
        """Nothing to save (see :meth:`cache_store`)."""

    def restore_rows(self, store, rows, stops) -> None:
        """Nothing to restore (see :meth:`cache_store`)."""

    @staticmethod
    def swap_rows(store, a, b) -> None:
        """Nothing to swap (see :meth:`cache_store`)."""

    def reorder(self, index) -> None:
        """Nothing to reorder: the Markov state is the next fed token, which the caller reorders itself."""


class ToyLM:
    """Exactly solvable Markov LM behind the :class:`rea.lm.models.LanguageModel` interface.

    Parameters
    ----------
    seed : seed of the transition matrix (see :func:`build_transition_matrix`).
    device : torch device for the logits (``"cpu"`` default; ``"auto"`` picks CUDA when present).

    Attributes: ``name = "toy"``, ``vocab_size`` (53), ``context_length`` (4096), ``eos_token_id`` (the ``"."``
    token), ``device``, ``tokens`` (the V token strings), ``transition_matrix`` (float64 A ``[V, V]``).
    """

    def __init__(self, seed: int = 0, device: str | torch.device = "cpu"):
        self.name = "toy"
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.tokens: list[str] = _token_strings()
        self._index = {s.strip() if s.strip() else s: i for i, s in enumerate(self.tokens)}
        self.vocab_size = len(self.tokens)
        self.context_length = 4096
        self.eos_token_id = self.tokens.index(".")
        self._a = build_transition_matrix(self.seed)
        self._a.setflags(write=False)
        self._table = torch.tensor(np.log(self._a), dtype=torch.float32, device=self.device)

    @property
    def transition_matrix(self) -> np.ndarray:
        """A ``[V, V]`` float64 (read-only): A[i, j] = p(next = j | last = i)."""
        return self._a

    def __repr__(self) -> str:
        return f"ToyLM(seed={self.seed}, vocab_size={self.vocab_size}, device={str(self.device)!r})"

    # ----------------------------------------------------------------------------------- text
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (words lower-cased; see the module docstring for the splitting rule)."""
        ids = []
        for piece in _TOKEN_RE.findall(text):
            key = piece if piece == "\n" else piece.strip().lower()
            if key not in self._index:
                words = " ".join(s.strip() for s in self.tokens if s.strip().isalpha())
                raise ValueError(
                    f"ToyLM cannot encode {key!r}: its vocabulary is the words [{words}], the punctuation "
                    f"'. , ! ?' and newline (case-insensitive)"
                )
            ids.append(self._index[key])
        return ids

    def decode(self, ids) -> str:
        """Concatenation of the token strings of ``ids``."""
        return "".join(self.tokens[int(i)] for i in ids)

    # ----------------------------------------------------------------------------------- model
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids[B, T]`` -> float32 ``[B, T, V]``, row ``[b, τ]`` = log A[input_ids[b, τ]]."""
        return self._table[torch.as_tensor(input_ids, device=self.device).long()]

    def decoder(self, batch_size: int, **kwargs) -> _ToyDecoder:
        """Incremental decoder (extra keyword arguments are accepted and ignored)."""
        return _ToyDecoder(self._table, batch_size)

    def bytes_per_sequence(self, length: int) -> int:
        """Decoding memory per sequence: a few logit rows plus the token ids."""
        return int(6 * self.vocab_size * 4 + 8 * length)
