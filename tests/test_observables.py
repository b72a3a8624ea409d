"""Observables: ARI on hand-counted strings, repeats, log-prob, user callables, finiteness checks."""

import numpy as np
import pytest

from rea.observables import (
    ari_counts,
    ari_from_counts,
    ari_text,
    evaluate,
    from_text,
    from_tokens,
    get_observable,
    repeats_tokens,
)
from rea.sampling import Samples


@pytest.mark.parametrize(
    "text, counts",
    [
        ("The cat sat.", (9, 3, 1)),                      # T-h-e c-a-t s-a-t: 9 alnum, 3 words, 1 sentence
        ("Hi! Is it 42? Yes...", (11, 5, 3)),             # runs "!", "?", "..."; digits count as characters
        ("no end mark here", (13, 4, 1)),                 # no terminal punctuation: s = 1
        ("Wait...! Really?!", (10, 2, 2)),                # "...!" is one run, "?!" another
        ("-- , ;", (0, 0, 1)),                            # no word at all
        ("don't stop", (8, 2, 1)),                        # apostrophe is not a character
    ],
)
def test_ari_counts_hand_counted(text, counts):
    assert ari_counts(text) == counts


def test_ari_formula_and_cap():
    # c=9, w=3, s=1: 4.71*3 + 0.5*3 - 21.43 = -5.8 (not rounded)
    assert ari_text(["The cat sat."])[0] == pytest.approx(4.71 * 9 / 3 + 0.5 * 3 / 1 - 21.43)
    long_word = "a" + "b" * 200 + " c"
    assert ari_text([long_word])[0] == 15.0
    assert ari_from_counts(0, 0, 1) == pytest.approx(0.5 - 21.43)  # w := 1 for a text without words


def test_repeats_within_completion_only():
    tokens = np.array([[5, 5, 5, 1], [1, 2, 3, 4], [7, 7, 8, 8]])
    assert repeats_tokens(tokens).tolist() == [2, 0, 2]
    assert repeats_tokens(tokens, lengths=np.array([2, 4, 3])).tolist() == [1, 0, 1]


def _samples(texts, tokens, logp):
    tokens = np.asarray(tokens)
    return Samples("P:", [0], tokens, np.asarray(logp, float), np.asarray(logp, float),
                   np.full(len(tokens), tokens.shape[1]), texts)


def test_builtin_and_user_observables():
    s = _samples(["a b.", "cc"], [[1, 1], [2, 3]], [[-1.0, -2.0], [-0.5, -0.25]])
    assert evaluate("logprob", s).tolist() == [-3.0, -0.75]
    assert evaluate("repeats", s).tolist() == [1.0, 0.0]
    assert evaluate("ari", s).tolist() == pytest.approx(ari_text(["P:a b.", "P:cc"]).tolist())
    assert evaluate(from_text(len), s).tolist() == [4.0, 2.0]
    assert evaluate(from_text(len, include_prompt=True), s).tolist() == [6.0, 4.0]
    assert evaluate(from_tokens(lambda t: t.sum()), s).tolist() == [2.0, 5.0]


def test_bad_observables():
    s = _samples(["a", "b"], [[1], [2]], [[-1.0], [-1.0]])
    with pytest.raises(ValueError, match="non-finite values at rows \\[1\\]"):
        evaluate(from_text(lambda t: np.inf if t == "b" else 1.0), s)
    with pytest.raises(ValueError, match="observable must be one of"):
        get_observable("perplexity")
    with pytest.raises(ValueError, match="one value per completion"):
        evaluate(lambda s: np.zeros(3), s)
