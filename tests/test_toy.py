"""ToyLM: the LanguageModel interface, and the unchanged sampler / scorer / TPS move on it."""

import numpy as np
import pytest
import torch

from rea.exact import prompt_state
from rea.lm import DEFAULT_PROMPT, ToyLM, load_model
from rea.observables import ari
from rea.sampling import regenerate, sample, score, sequence_uniforms

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def lm():
    return ToyLM()


def exact_logp(lm, prompt_ids, tokens):
    """log A[x_τ, x_{τ+1}] per completion token ``[N, L]`` from the float64 matrix."""
    log_a = np.log(lm.transition_matrix)
    prev = np.concatenate([np.full((len(tokens), 1), prompt_ids[-1]), tokens[:, :-1]], axis=1)
    return log_a[prev, tokens]


def test_vocabulary_and_attributes(lm):
    assert lm.name == "toy" and lm.vocab_size == len(lm.tokens) == 53
    assert lm.context_length == 4096 and lm.device == torch.device("cpu")
    assert lm.tokens[lm.eos_token_id] == "."
    assert len(set(lm.tokens)) == lm.vocab_size
    lengths = {sum(ch.isalpha() for ch in t) for t in lm.tokens}
    assert {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15} <= lengths  # varied word lengths -> varied ARI


def test_encode_decode(lm):
    ids = lm.encode(DEFAULT_PROMPT)
    assert len(ids) == 13
    assert lm.decode(ids) == " once upon a time, in a big forest, there lived a"
    assert lm.encode(lm.decode(ids)) == ids
    assert lm.decode(lm.encode("The CAT sat.\nHa!")) == " the cat sat.\n ha!"
    assert lm.encode("") == []


def test_unknown_word_is_one_line_error(lm):
    with pytest.raises(ValueError) as err:
        lm.encode("Once upon a time, in a big forest, there lived a rhinoc")
    msg = str(err.value)
    assert "\n" not in msg and "'rhinoc'" in msg and "rhinoceros" in msg
    with pytest.raises(ValueError, match="'3'"):
        lm.encode("the 3 cats")
    with pytest.raises(ValueError, match="'rhinoc'"):
        sample(lm, "there lived a rhinoc", 2, 3, progress=False)


def test_transition_matrix(lm):
    a = lm.transition_matrix
    assert a.dtype == np.float64 and a.shape == (53, 53)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    assert a.min() > 1e-5
    assert not a.flags.writeable
    np.testing.assert_array_equal(ToyLM(seed=0).transition_matrix, a)
    assert not np.allclose(ToyLM(seed=1).transition_matrix, a)
    # a little structure: strong self-loops exist (repeats), "once" -> "upon"
    ha, once, upon = (lm.encode(w)[0] for w in ("ha", "once", "upon"))
    assert a[ha, ha] > 0.5 and a[once, upon] > 0.5


def test_logits_and_decoder(lm):
    ids = torch.tensor([lm.encode(DEFAULT_PROMPT), lm.encode("he saw a big cat, then the dog ran near a tree")])
    out = lm.logits(ids)
    assert out.shape == (2, 13, 53) and out.dtype == torch.float32
    expected = torch.tensor(np.log(lm.transition_matrix), dtype=torch.float32)[ids]
    assert torch.equal(out, expected)
    dec = lm.decoder(2, max_length=99)  # extra keyword arguments are accepted
    first = dec.prefill(ids)
    assert torch.equal(first, out[:, -1])
    nxt = dec.step(torch.tensor([3, 4]))
    assert torch.equal(nxt, expected.new_tensor(np.log(lm.transition_matrix)[[3, 4]]))
    assert lm.bytes_per_sequence(100) > 0


def test_load_model_toy():
    lm = load_model("toy", device="cpu")
    assert isinstance(lm, ToyLM) and lm.name == "toy"


def test_sampler_logprobs_match_score_and_exact(lm):
    s = sample(lm, DEFAULT_PROMPT, 300, 12, seed=3, batch_size=128, progress=False)
    assert s.tokens.shape == (300, 12) and s.logp.shape == (300, 12)
    ref = exact_logp(lm, s.prompt_ids, s.tokens)
    np.testing.assert_allclose(s.logp, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(s.logp.sum(1), ref.sum(1), rtol=0, atol=1e-5)
    np.testing.assert_allclose(score(lm, DEFAULT_PROMPT, s.tokens), s.logp, rtol=0, atol=1e-5)
    assert s.texts[0] == lm.decode(s.tokens[0])
    phi = ari(s)
    assert phi.shape == (300,) and np.isfinite(phi).all()
    # batch-size independence of the sampler carries over
    s2 = sample(lm, DEFAULT_PROMPT, 300, 12, seed=3, batch_size=7, progress=False)
    np.testing.assert_array_equal(s.tokens, s2.tokens)


def test_sampler_frequencies_match_transition_matrix(lm):
    n = 2000
    s = sample(lm, DEFAULT_PROMPT, n, 2, seed=11, batch_size=1000, progress=False)
    p = lm.transition_matrix[prompt_state(lm, DEFAULT_PROMPT)]
    freq = np.bincount(s.tokens[:, 0], minlength=lm.vocab_size) / n
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 2e-3)
    # second token given the first: pool over the observed first tokens, compare with the mixture Σ_i f_i A[i]
    pred = freq @ lm.transition_matrix
    freq2 = np.bincount(s.tokens[:, 1], minlength=lm.vocab_size) / n
    assert np.all(np.abs(freq2 - pred) <= 5 * np.sqrt(pred * (1 - pred) / n) + 2e-3)
    # exact sequence probabilities: the empirical frequency of the most likely completion
    codes = s.tokens[:, 0] * lm.vocab_size + s.tokens[:, 1]
    top = np.bincount(codes).argmax()
    i, j = divmod(int(top), lm.vocab_size)
    p_top = p[i] * lm.transition_matrix[i, j]
    assert abs(np.mean(codes == top) - p_top) <= 5 * np.sqrt(p_top * (1 - p_top) / n)


def test_regenerate_keeps_prefix_and_logps(lm):
    s = sample(lm, DEFAULT_PROMPT, 64, 10, seed=5, batch_size=64, progress=False)
    rng = np.random.default_rng(0)
    cut = rng.integers(0, 10, size=64)
    u = rng.random((64, 10))
    new, logp, lengths = regenerate(lm, s.prompt_ids, s.tokens, cut, u)
    for b in range(64):
        np.testing.assert_array_equal(new[b, : cut[b]], s.tokens[b, : cut[b]])
    np.testing.assert_allclose(logp, exact_logp(lm, s.prompt_ids, new), rtol=0, atol=1e-5)
    assert (lengths == 10).all()
    # cut = 0 with the sampler's uniforms reproduces the sampler
    u0 = sequence_uniforms(5, np.arange(64), 10)
    again, _, _ = regenerate(lm, s.prompt_ids, s.tokens, np.zeros(64, np.int64), u0)
    np.testing.assert_array_equal(again, s.tokens)


def test_stop_at_eos(lm):
    s = sample(lm, DEFAULT_PROMPT, 200, 15, seed=1, stop_at_eos=True, batch_size=200, progress=False)
    for row, n, text in zip(s.tokens, s.lengths, s.texts):
        assert (row[n:] == lm.eos_token_id).all()
        if n < 15:
            assert row[n - 1] == lm.eos_token_id and text.endswith(".")
    assert (s.lengths < 15).any()
