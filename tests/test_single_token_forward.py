"""The shortcuts of the single-token model side, checked against the plain computation they replace.

* :func:`rea.single_token.scorer.last_position_layer` (the last decoder layer at the last position only) against
  Hugging Face's layer on every position, at every depth of a random llama with grouped-query attention;
* per-row targets in :meth:`Scorer.target_grad` against one call per target;
* QLD's acceptance intervals (each bound an affine function of the activation) against the argmax evaluated
  directly along the line ``base_j + a·d̂``.
"""

from __future__ import annotations

import math

import pytest
import torch
from tolerances import assert_close_across_kernels

import rea.single_token as lp
from rea.lm.tiny import tiny_model
from rea.single_token import extrapolation
from rea.single_token.scorer import last_position_layer


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama", seed=3, vocab_size=96, n_heads=4, n_kv_heads=2, max_positions=32, n_layers=3,
                      initializer_range=0.2)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_last_position_layer_matches_the_full_layer(tiny, depth):
    sc = lp.truncated(tiny, depth)
    x = torch.randint(0, 96, (5, 7), generator=torch.Generator().manual_seed(depth))
    e = sc.embed(x)
    k = x.shape[1]
    pos = torch.arange(k)[None]
    mask = torch.triu(torch.full((k, k), torch.finfo(e.dtype).min), 1)[None, None]
    rope = sc.rotary_emb(e, position_ids=pos)
    h = e
    with torch.no_grad():
        for layer in sc.layers[:-1]:
            out = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=rope, use_cache=False)
            h = out[0] if isinstance(out, tuple) else out
        full = sc.layers[-1](h, attention_mask=mask, position_ids=pos, position_embeddings=rope, use_cache=False)
        full = (full[0] if isinstance(full, tuple) else full)[:, -1]
        last = last_position_layer(sc.layers[-1], h, rope)
    assert last.shape == (5, tiny.config.hidden_size)
    assert torch.allclose(last, full, atol=1e-5, rtol=1e-5)


def test_per_row_targets_equal_one_call_per_target(tiny):
    sc = lp.truncated(tiny, 2)
    x = torch.randint(0, 96, (6, 5), generator=torch.Generator().manual_seed(9))
    targets = torch.tensor([3, 3, 50, 7, 50, 90])
    logits, grads = sc.target_grad(x, targets)
    for t in targets.unique().tolist():
        rows = targets == t
        lg, ge = sc.target_grad(x[rows], t)
        # one batched call and one call per target sum float32 products in another order (conftest)
        assert_close_across_kernels(logits[rows], lg, what=f"logits, target {t}")
        assert_close_across_kernels(grads[rows], ge, what=f"gradients, target {t}")
    with pytest.raises(ValueError, match="target"):
        sc.target_grad(x, targets[:4])


@pytest.mark.parametrize("with_bias", [False, True])
def test_acceptance_intervals_match_the_argmax_along_the_line(with_bias):
    g = torch.Generator().manual_seed(5)
    V, H, n = 24, 6, 12
    W = torch.randn(V, H, generator=g, dtype=torch.float64)
    bias = torch.randn(V, generator=g, dtype=torch.float64) if with_bias else None
    mu = torch.randn(H, generator=g, dtype=torch.float64)
    A = torch.linalg.cholesky(torch.eye(H, dtype=torch.float64) + 0.3 * torch.ones(H, H, dtype=torch.float64))
    base = torch.randn(n, H, generator=g, dtype=torch.float64)
    checked = 0
    for target in range(V):
        dhat, _ = extrapolation._target_direction(W, bias, mu, A, target)
        if dhat is None:
            continue
        lo, hi = extrapolation._acceptance_intervals(base, mu, A, dhat, W, bias, target, chunk=7)
        a = torch.linspace(-12, 12, 2401, dtype=torch.float64)
        for j in range(n):
            acts = mu + (base[j][None] + a[:, None] * dhat[None]) @ A.T  # [grid, H]
            logits = acts @ W.T + (0 if bias is None else bias)
            wins = logits.argmax(1) == target
            inside = (a >= lo[j]) & (a <= hi[j])
            margin = (a - lo[j]).abs().minimum((a - hi[j]).abs())
            finite = math.isfinite(float(hi[j])) or math.isfinite(float(lo[j]))
            clear = margin > 1e-9 if finite else torch.ones_like(wins)
            assert torch.equal(wins[clear], inside[clear]), (target, j)
            checked += int(wins.any())
    assert checked > 10  # the check saw many non-empty intervals


def test_acceptance_interval_is_empty_where_a_parallel_token_wins():
    """A token v with slope s_v = 0 along d̂ beats t on the whole line when Δ_v < 0: the interval is empty there."""
    H = 3
    W = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 0.0, 0.5]], dtype=torch.float64)
    target, dhat = 1, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)  # token 2 = token 1 + e₂: s₂ = 0
    base = torch.tensor([[0.0, 0.5, 0.0], [0.0, -0.5, 0.0], [0.0, -0.5, 3.0]], dtype=torch.float64)
    lo, hi = extrapolation._acceptance_intervals(base, torch.zeros(H, dtype=torch.float64),
                                                 torch.eye(H, dtype=torch.float64), dhat, W, None, target)
    assert hi[0] == -math.inf  # x₂ = 0.5 > 0: token 2 always beats token 1
    assert lo[1] == pytest.approx(0.0) and hi[1] == math.inf  # beats token 0 for a > 0, token 3 (slope 2) for a > 0
    assert lo[2] == pytest.approx(0.75) and hi[2] == math.inf  # token 3: a·2 − 1.5 ≥ 0
