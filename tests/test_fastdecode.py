"""The lean llama decode step (rea.lm.fastdecode) against Hugging Face's full forward pass, and inside the sampler."""

import numpy as np
import pytest
import torch

from rea.lm import HFDecoder, HFLanguageModel, LlamaDecoder
from rea.lm.tiny import tiny_model
from rea.sampling import regenerate, sample, score, sequence_uniforms

VOCAB = 101

CONFIGS = {
    "gqa-tied": dict(n_heads=4, n_kv_heads=2, tie_embeddings=True),
    "mha-untied": dict(n_heads=4, n_kv_heads=4, tie_embeddings=False),
    "gqa3-untied-bias": dict(n_heads=6, n_kv_heads=2, tie_embeddings=False,
                             attention_bias=True, mlp_bias=True, head_dim=8, rms_norm_eps=1e-5),
}


def random_llama(seed=0, **overrides):
    """A 2-layer random llama built in-process, weights larger than the default init (peaked distributions)."""
    kw = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=80, max_positions=256, rope_theta=500.0)
    return tiny_model("llama", seed=seed, weight_std=0.3, vector_noise=0.1, **{**kw, **overrides})


class CharTokenizer:
    """Enough of a tokenizer for HFLanguageModel: one id per character, id 0 is EOS."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1 + ord(c) % (VOCAB - 1) for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(96 + i % 26) for i in ids)


def wrap(model) -> HFLanguageModel:
    return HFLanguageModel(model, CharTokenizer(), name="random-llama")


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("pack", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_logits_equal_hf_forward_at_every_position(name, pack, shared):
    model = random_llama(**CONFIGS[name])
    B, P, steps = 6, 5, 9
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (B, P + steps), generator=g)
    if shared:  # some rows share their prefix, others do not
        ids[2, :P] = ids[0, :P]
        ids[4, :P] = ids[0, :P]
    with torch.inference_mode():
        ref = model(ids).logits
    dec = LlamaDecoder(model, B, max_length=P + 2, pack=pack)  # too short: the cache must grow
    err = [(dec.prefill(ids[:, :P]) - ref[:, P - 1]).abs().max().item()]
    for t in range(P, P + steps):
        err.append((dec.step(ids[:, t]) - ref[:, t]).abs().max().item())
    assert dec.cache.shape[-2] >= P + steps
    assert max(err) < 1e-4, err


def test_identical_prompt_rows_are_computed_once_and_broadcast():
    model = random_llama(**CONFIGS["gqa-tied"])
    B, P, steps = 5, 7, 4
    ids = torch.randint(0, VOCAB, (1, P + steps)).expand(B, -1).clone()
    ids[:, P:] = torch.randint(0, VOCAB, (B, steps))  # rows diverge after the prompt
    with torch.inference_mode():
        ref = model(ids).logits
    dec = LlamaDecoder(model, B)
    out = [dec.prefill(ids[:, :P])] + [dec.step(ids[:, t]) for t in range(P, P + steps)]
    assert torch.allclose(torch.stack(out, 1), ref[:, P - 1 :], atol=1e-4)


def test_weights_follow_in_place_updates():
    model = random_llama(**CONFIGS["mha-untied"])
    ids = torch.randint(0, VOCAB, (2, 4))
    before = LlamaDecoder(model, 2).prefill(ids)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(2.0)
        ref = model(ids).logits[:, -1]
    after = LlamaDecoder(model, 2).prefill(ids)
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after, ref, atol=1e-4)


@pytest.mark.parametrize("name", ["gqa-tied", "gqa3-untied-bias"])
def test_sampler_agrees_with_teacher_forced_score(name):
    lm = wrap(random_llama(**CONFIGS[name]))
    assert isinstance(lm.decoder(4), LlamaDecoder)
    s = sample(lm, "once upon", n=10, length=16, seed=2, batch_size=4, progress=False)
    assert np.abs(score(lm, "once upon", s.tokens).sum(1) - s.logp.sum(1)).max() < 1e-4
    # the TPS move: rows with different forced prefixes
    cut = np.array([0, 3, 8, 15, 3, 11, 1, 0, 9, 5])
    u = sequence_uniforms(5, np.arange(10), 16)
    new, logp, _ = regenerate(lm, lm.encode("once upon"), s.tokens, cut, u)
    for b in range(10):
        assert np.array_equal(new[b, : cut[b]], s.tokens[b, : cut[b]])
    assert np.abs(score(lm, "once upon", new).sum(1) - logp.sum(1)).max() < 1e-4


def test_fast_and_hf_decoders_draw_the_same_samples():
    model = random_llama(**CONFIGS["gqa-tied"])
    fast, plain = wrap(model), HFLanguageModel(model, CharTokenizer(), name="random-llama", fast_decode=False)
    a = sample(fast, "the cat", n=6, length=12, seed=4, progress=False)
    b = sample(plain, "the cat", n=6, length=12, seed=4, progress=False)
    assert np.array_equal(a.tokens, b.tokens)
    assert np.allclose(a.logp, b.logp, atol=1e-5)


def test_unsupported_rope_falls_back_to_hf_decoder():
    rope = {"rope_type": "dynamic", "rope_theta": 500.0, "factor": 2.0}
    lm = wrap(random_llama(rope_parameters=rope, **CONFIGS["gqa-tied"]))
    with pytest.raises(ValueError, match="rope_type"):
        LlamaDecoder(lm.model, 2)
    assert isinstance(lm.decoder(2), HFDecoder)
    s = sample(lm, "once", n=3, length=5, progress=False)
    assert np.abs(score(lm, "once", s.tokens).sum(1) - s.logp.sum(1)).max() < 1e-4


@pytest.mark.slow
def test_embedded_model_fast_decoder_matches_hf():
    from rea.lm import load_model

    lm = load_model(device="cpu")
    assert lm.fast_decode
    prompt = "Once upon a time, in a big forest, there lived a rhinoc"
    B, steps = 8, 6
    prompt_ids = torch.tensor(lm.encode(prompt))
    ids = torch.cat([prompt_ids.expand(B, -1), torch.randint(0, lm.vocab_size, (B, steps))], 1)
    P = len(prompt_ids)
    with torch.inference_mode():
        ref = lm.model(ids).logits
    dec = lm.decoder(B)
    assert isinstance(dec, LlamaDecoder)
    out = [dec.prefill(ids[:, :P])] + [dec.step(ids[:, t]) for t in range(P, P + steps)]
    assert (torch.stack(out, 1) - ref[:, P - 1 :]).abs().max().item() < 1e-3
    s = sample(lm, prompt, n=8, length=24, seed=0, progress=False)
    assert np.abs(score(lm, prompt, s.tokens).sum(1) - s.logp.sum(1)).max() < 1e-4


def _prefilled(name: str, B: int, P: int, n: int, seed: int, capacity: int):
    """B random rows of P shared prompt tokens and n more, HF's logits of all of them ``[B, P+n, V]``, and a decoder
    of ``capacity`` positions prefilled with the prompt."""
    model = random_llama(**CONFIGS[name])
    ids = torch.randint(0, VOCAB, (B, P + n), generator=torch.Generator().manual_seed(seed))
    ids[:, :P] = ids[0, :P]
    with torch.inference_mode():
        ref = model(ids).logits
    dec = LlamaDecoder(model, B, max_length=capacity)
    dec.prefill(ids[:, :P])
    return ids, ref, dec


@pytest.mark.parametrize("name", list(CONFIGS))
def test_rows_at_their_own_positions_equal_hf_forward(name):
    """step_rows (continuous batching): rows advance at different paces, and a row restarts at an earlier position
    after its keys and values are restored from a store; every logit equals HF's full forward pass."""
    B, P, n = 4, 5, 10
    ids, ref, dec = _prefilled(name, B, P, n, seed=2, capacity=P + 2)  # too short: the cache grows meanwhile
    store = dec.cache_store(P)
    rows = torch.arange(B)
    pos, err = torch.full((B,), P - 1), []
    for k in range(3 * n):
        advance = (k % (rows + 1) == 0) & (pos < P + n - 2)  # row r moves every (r+1)-th step
        pos = torch.where(advance, pos + 1, pos)
        if k == n:  # row 0 restarts right after the prompt: restore its kept positions, feed the last prompt token
            dec.restore_rows(store, [0], [P - 1])
            pos[0] = P - 1
        err.append((dec.step_rows(ids[rows, pos], pos) - ref[rows, pos]).abs().max().item())
    assert dec.cache.shape[-2] >= P + n - 1
    assert max(err) < 1e-4, err


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_subset_of_rows_steps_alone_and_equals_hf_forward(name):
    """step_rows(..., rows=subset): only those cache rows are computed (the others keep their keys and values), and
    every computed logit equals HF's full forward pass, whichever rows sit out a step."""
    B, P, n = 5, 4, 8
    ids, ref, dec = _prefilled(name, B, P, n, seed=3, capacity=P + n)
    pos, err = torch.full((B,), P - 1), []
    for k in range(2 * n):
        rows = torch.tensor([r for r in range(B) if (k + r) % 3 and pos[r] < P + n - 2])  # some rows sit out
        if not len(rows):
            continue
        pos[rows] += 1
        out = dec.step_rows(ids[rows, pos[rows]], pos[rows], rows)
        assert out.shape == (len(rows), VOCAB)
        err.append((out - ref[rows, pos[rows]]).abs().max().item())
    assert len(err) > n and max(err) < 1e-4, err
    with pytest.raises(ValueError, match="rows"):
        dec.step_rows(ids[:2, P], torch.full((2,), P), torch.tensor([0]))
