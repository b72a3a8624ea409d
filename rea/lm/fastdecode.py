"""A lean llama decode step with a static KV cache (nanoGPT-style), for :mod:`rea.sampling`.

It reads the weights of a loaded ``transformers`` ``LlamaForCausalLM`` and re-implements only what incremental
decoding needs. Notation: B batch rows, D hidden size, H query heads, G = H/H_kv queries per KV head (GQA),
d head dim, I MLP width, V vocabulary, n tokens in the cache. One layer, for the hidden state x ``[B, D]`` of
the newest position t:

    h      = x / sqrt(mean(x²) + ε) ⊙ g₁                       (RMSNorm)
    q,k,v  = h W_qkvᵀ (+ b_qkv)                                 one GEMM: W_qkv = [W_q/√d; W_k; W_v]  [(H+2H_kv)d, D]
    q,k    ← rot_t(q), rot_t(k)                                 RoPE: pairs (z_i, z_{i+d/2}) times e^{i t θ_i}
    K,V[:, :, t] = k, v                                         written in place into the static cache
    a      = softmax(q Kᵀ) V                                    q viewed [B, H_kv, G, d]: no repeated K/V copies
    x      ← x + a W_oᵀ (+ b_o)
    h      = x / sqrt(mean(x²) + ε) ⊙ g₂
    u      = h W_guᵀ (+ b_gu)                                   one GEMM: W_gu = [W_gate; W_up]  [2I, D]
    x      ← x + (silu(u_gate) ⊙ u_up) W_downᵀ (+ b_down)

and the logits are RMSNorm(x) W_headᵀ ``[B, V]`` (W_head = the embedding matrix when embeddings are tied).

Three rewrites keep the arithmetic identical to Hugging Face's up to float rounding:

* the 1/√d attention scale is folded into W_q (exact for d a power of 4, as d = 64);
* RoPE: HF rotates the halves (z_i, z_{i+d/2}); we permute the rows of W_q and W_k per head so that each pair is
  adjacent, (z_{2i}, z_{2i+1}), and rotate by one complex multiplication. q·k is unchanged because q and k are
  permuted alike; the cache holds keys in the permuted order;
* prefill runs once per *distinct* prompt row and the cache rows are copied to their duplicates (the sampler
  passes B identical prompts).

Supported: the llama architecture with SiLU MLP, optional attention/MLP biases, tied or untied embeddings, RoPE
types whose frequencies do not depend on the sequence length ("default", "linear", "llama3", "yarn").
Anything else raises :class:`ValueError`; :class:`rea.lm.models.HFLanguageModel` then falls back to the generic
HF decoder.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
"""RoPE variants with position-independent frequencies θ_i (the HF ``inv_freq`` buffer) -- supported."""


def mkl_packing_available() -> bool:
    """Whether this torch has MKL's pre-packed sgemm (``torch.ops.mkl._mkl_linear``), used on CPU in float32."""
    try:
        return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without the MKL ops
        return False


class Linear:
    """y = x Wᵀ + b (+ residual) for x ``[M, K]``, W ``[N, K]``.

    On CPU in float32, :meth:`pack` stores W once more in MKL's packed GEMM layout (``cblas_sgemm_pack``) for a
    fixed M -- the decode batch -- which skips the per-call packing of the weight that dominates small-M GEMMs.
    Calls with another M (prefill) use W as is. Both give the same result up to float rounding.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight, self.bias = weight, bias
        self.packed: torch.Tensor | None = None
        self.rows = 0

    def pack(self, rows: int) -> None:
        if self.rows != rows:
            self.packed, self.rows = torch.ops.mkl._mkl_reorder_linear_weight(self.weight, rows), rows

    def unpack(self) -> None:
        self.packed, self.rows = None, 0

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.packed is not None and x.shape[0] == self.rows:
            y = torch.ops.mkl._mkl_linear(x, self.packed, self.weight, self.bias, self.rows)
            return y if residual is None else y.add_(residual)
        if residual is not None and self.bias is None:
            return torch.addmm(residual, x, self.weight.t())
        y = F.linear(x, self.weight, self.bias)
        return y if residual is None else y.add_(residual)


@dataclass
class LlamaLayer:
    """Weights of one decoder layer, fused and laid out for the decode step (see the module docstring)."""

    ln1: torch.Tensor  # [D]
    qkv: Linear  # [(H + 2 H_kv) d, D]: q rows scaled by 1/√d, q and k rows RoPE-permuted
    o: Linear  # [D, H d]
    ln2: torch.Tensor  # [D]
    gate_up: Linear  # [2 I, D]: gate rows, then up rows
    down: Linear  # [D, I]

    def linears(self) -> list[Linear]:
        return [self.qkv, self.o, self.gate_up, self.down]


@dataclass
class LlamaWeights:
    """All weights plus the hyper-parameters the decode step needs."""

    embed: torch.Tensor  # [V, D]
    layers: list[LlamaLayer]
    norm: torch.Tensor  # [D]
    head: Linear  # [V, D]
    inv_freq: torch.Tensor  # [d/2] float32, RoPE frequencies θ_i
    rope_scale: float  # HF's attention_scaling, multiplies cos and sin
    eps: float
    n_heads: int
    n_kv: int
    head_dim: int
    signature: tuple  # (data_ptr, _version) of every source parameter: detects in-place weight updates


def check_supported(model) -> None:
    """Raise :class:`ValueError` naming the first llama feature the fast decoder does not implement."""
    cfg = model.config
    if cfg.model_type != "llama":
        raise ValueError(f"LlamaDecoder needs a llama model, got model_type={cfg.model_type!r}")
    if cfg.hidden_act != "silu":
        raise ValueError(f"LlamaDecoder implements hidden_act='silu' only, got {cfg.hidden_act!r}")
    if getattr(cfg, "pretraining_tp", 1) not in (None, 1):
        raise ValueError(f"LlamaDecoder does not implement pretraining_tp={cfg.pretraining_tp}")
    rope = model.model.rotary_emb
    if rope.rope_type not in STATIC_ROPE_TYPES:
        raise ValueError(
            f"LlamaDecoder does not implement rope_type={rope.rope_type!r} (supported: {STATIC_ROPE_TYPES})"
        )
    if model.lm_head.bias is not None:
        raise ValueError("LlamaDecoder does not implement an lm_head bias")


def _rope_permutation(n_heads: int, head_dim: int) -> torch.Tensor:
    """Row order that turns each head's halves layout (i, i + d/2) into adjacent pairs (2i, 2i+1)."""
    half = head_dim // 2
    per_head = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).reshape(-1)  # [d]
    return (torch.arange(n_heads)[:, None] * head_dim + per_head).reshape(-1)


def _signature(model) -> tuple:
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


@torch.no_grad()
def build_weights(model) -> LlamaWeights:
    """Fuse and permute the weights of a ``LlamaForCausalLM`` (copies W_qkv and W_gu; shares the others)."""
    check_supported(model)
    cfg = model.config
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    if head_dim % 2:
        raise ValueError(f"LlamaDecoder needs an even head_dim, got {head_dim}")
    perm_q, perm_k = _rope_permutation(n_heads, head_dim), _rope_permutation(n_kv, head_dim)
    scale = 1.0 / math.sqrt(head_dim)

    def cat(*tensors):
        return None if tensors[0] is None else torch.cat(tensors).contiguous()

    layers = []
    for block in model.model.layers:
        att, mlp = block.self_attn, block.mlp
        b = att.q_proj.bias
        layers.append(
            LlamaLayer(
                ln1=block.input_layernorm.weight,
                qkv=Linear(
                    cat(att.q_proj.weight[perm_q] * scale, att.k_proj.weight[perm_k], att.v_proj.weight),
                    None if b is None else cat(b[perm_q] * scale, att.k_proj.bias[perm_k], att.v_proj.bias),
                ),
                o=Linear(att.o_proj.weight, att.o_proj.bias),
                ln2=block.post_attention_layernorm.weight,
                gate_up=Linear(
                    cat(mlp.gate_proj.weight, mlp.up_proj.weight), cat(mlp.gate_proj.bias, mlp.up_proj.bias)
                ),
                down=Linear(mlp.down_proj.weight, mlp.down_proj.bias),
            )
        )
    rope = model.model.rotary_emb
    return LlamaWeights(
        embed=model.model.embed_tokens.weight,
        layers=layers,
        norm=model.model.norm.weight,
        head=Linear(model.lm_head.weight),
        inv_freq=rope.inv_freq.float(),
        rope_scale=float(rope.attention_scaling),
        eps=float(cfg.rms_norm_eps),
        n_heads=n_heads,
        n_kv=n_kv,
        head_dim=head_dim,
        signature=_signature(model),
    )


_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fused_weights(model) -> LlamaWeights:
    """:func:`build_weights`, cached per model and rebuilt when any parameter was replaced or changed in place."""
    cached = _WEIGHTS.get(model)
    if cached is None or cached.signature != _signature(model):
        cached = _WEIGHTS[model] = build_weights(model)
    return cached


class LlamaDecoder:
    """Incremental decoding of B rows in lockstep through a static KV cache.

    Parameters
    ----------
    model : a ``transformers`` ``LlamaForCausalLM`` (any device and float dtype).
    batch_size : B, the number of rows of ``prefill``'s ``input_ids``.
    max_length : cache capacity in positions (prompt + generated); default: prompt length + 256. The cache
        grows (doubling) when a sequence outgrows it.
    pack : keep the weights pre-packed for B-row GEMMs (:class:`Linear`); default: on CPU in float32 with MKL.
        The packed copies live with the model's cached weights (one batch size at a time).

    The cache is one tensor ``[layers, 2, B, H_kv, capacity, d]`` (keys, values) written in place; ``prefill``
    returns logits ``[B, V]`` for position P, each ``step`` appends one token per row and returns the next logits.
    Logits are float32.
    """

    def __init__(self, model, batch_size: int, max_length: int | None = None, pack: bool | None = None):
        self.w = fused_weights(model)
        self.batch_size = int(batch_size)
        self.max_length = max_length
        self.device, self.dtype = self.w.embed.device, self.w.embed.dtype
        if pack is None:
            pack = self.device.type == "cpu" and self.dtype == torch.float32 and mkl_packing_available()
        linears = [lin for layer in self.w.layers for lin in layer.linears()] + [self.w.head]
        for lin in linears:
            lin.pack(self.batch_size) if pack else lin.unpack()
        self.cache: torch.Tensor | None = None
        self.length = 0  # positions already in the cache
        self._rot: torch.Tensor | None = None  # complex RoPE table [capacity, d/2]

    # ------------------------------------------------------------------ cache and RoPE tables

    def _allocate(self, capacity: int) -> None:
        """(Re)allocate the cache with room for ``capacity`` positions, keeping its first ``length`` ones."""
        w = self.w
        new = torch.zeros(
            len(w.layers), 2, self.batch_size, w.n_kv, capacity, w.head_dim, dtype=self.dtype, device=self.device
        )
        if self.cache is not None and self.length:
            new[..., : self.length, :] = self.cache[..., : self.length, :]
        self.cache = new
        # e^{i t θ_i} for t < capacity, computed as HF does (float32 t·θ, then cos and sin); [capacity, d/2]
        t = torch.arange(capacity, device=self.device, dtype=torch.float32)
        freqs = t[:, None] * w.inv_freq.to(self.device)
        self._rot = torch.complex(freqs.cos() * w.rope_scale, freqs.sin() * w.rope_scale)  # complex64

    def _ensure(self, needed: int) -> None:
        capacity = 0 if self.cache is None else self.cache.shape[-2]
        if needed > capacity:
            self._allocate(max(needed, 2 * capacity))

    # ------------------------------------------------------------------ the transformer

    def _rope_(self, qk: torch.Tensor, positions: torch.Tensor) -> None:
        """Rotate ``qk[R, S, heads, d]`` in place: pairs (z_2j, z_2j+1) as complex numbers times e^{i t θ_j}, for
        ``positions`` ``[S]`` (shared by the rows) or ``[R, S]`` (per row)."""
        rot = self._rot[positions][..., None, :]  # [S, 1, d/2] or [R, S, 1, d/2]
        if qk.dtype in (torch.float32, torch.float64):
            z = torch.view_as_complex(qk.unflatten(-1, (-1, 2)))
            z.mul_(rot.to(z.dtype))
        else:  # half precision: rotate in float32 and round once, as HF does
            z = torch.view_as_complex(qk.float().unflatten(-1, (-1, 2)).contiguous()) * rot
            qk.copy_(torch.view_as_real(z).flatten(-2))

    def _attend(self, i: int, qkv: torch.Tensor, row_positions: torch.Tensor | None,
                cache_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Write layer ``i``'s keys and values of ``qkv[R, S, H + 2 H_kv, d]`` into the cache and attend
        -> ``[R S, H d]``.

        Lockstep (``row_positions`` None): positions ``length .. length+S−1`` for every row, causal when S > 1
        (prefill from position 0). Per row (S = 1): row r writes position ``row_positions[r]`` and attends to the
        cache positions ≤ it (a mask over the cache's first max(row_positions)+1 positions). The rows are the cache's
        first R, or its rows ``cache_rows [R]`` (per row only: their keys and values are gathered for the product).
        """
        w = self.w
        R, S = qkv.shape[:2]
        H, Hkv, d = w.n_heads, w.n_kv, w.head_dim
        kv = self.cache[i, :, :R] if cache_rows is None else self.cache[i]  # [2, R or B, H_kv, T, d]
        new = qkv[:, :, H:].unflatten(2, (2, Hkv)).permute(2, 0, 3, 1, 4)  # [2, R, H_kv, S, d]
        if row_positions is not None:
            rows = torch.arange(R, device=self.device) if cache_rows is None else cache_rows
            kv[:, rows, :, row_positions] = new[:, :, :, 0].transpose(0, 1)  # index dims first: [R, 2, H_kv, d]
            t1 = int(row_positions.max()) + 1
            mask = (torch.arange(t1, device=self.device)[None, :] <= row_positions[:, None])[:, None, None, :]
            if cache_rows is not None:
                kv = kv[:, :, :, :t1].index_select(1, cache_rows)  # [2, R, H_kv, t1, d]
        else:
            t0, t1 = self.length, self.length + S
            kv[:, :, :, t0:t1] = new
            mask = None
        keys, values = kv[0, :, :, :t1], kv[1, :, :, :t1]  # [R, H_kv, t1, d]
        if S == 1:  # the G query heads of a KV head attend as G "query positions" of one head
            q = qkv[:, 0, :H].view(R, Hkv, H // Hkv, d)
            a = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=1.0)  # [R, H_kv, G, d]
        else:  # prefill from position 0: causal
            q = qkv[:, :, :H].transpose(1, 2)  # [R, H, S, d]
            a = F.scaled_dot_product_attention(q, keys, values, is_causal=True, scale=1.0, enable_gqa=True)
            a = a.transpose(1, 2)  # [R, S, H, d]
        return a.reshape(R * S, H * d)

    def _forward(self, ids: torch.Tensor, row_positions: torch.Tensor | None = None,
                 cache_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Run tokens ``ids[R, S]`` into cache rows ``0..R−1`` (or ``cache_rows [R]``) at positions
        ``length .. length+S−1`` (lockstep), or at ``row_positions[R]`` (S = 1, one position per row). S > 1 only for
        prefill (empty cache, causal attention). Returns the last position's logits ``[R, V]``.
        """
        w = self.w
        R, S = ids.shape
        H, Hkv, d = w.n_heads, w.n_kv, w.head_dim
        if row_positions is None:
            positions = torch.arange(self.length, self.length + S, device=self.device)
        else:
            positions = row_positions[:, None]  # [R, 1]: each row's RoPE angle
        x = F.embedding(ids, w.embed).reshape(R * S, -1)  # [R S, D]
        for i, L in enumerate(w.layers):
            h = F.rms_norm(x, x.shape[-1:], L.ln1, w.eps)
            qkv = L.qkv(h).view(R, S, H + 2 * Hkv, d)
            self._rope_(qkv[:, :, : H + Hkv], positions)
            x = L.o(self._attend(i, qkv, row_positions, cache_rows), residual=x)
            h = F.rms_norm(x, x.shape[-1:], L.ln2, w.eps)
            gate, up = L.gate_up(h).chunk(2, dim=-1)
            x = L.down(F.silu(gate, inplace=True).mul_(up), residual=x)
        last = x.view(R, S, -1)[:, -1]
        return w.head(F.rms_norm(last, last.shape[-1:], w.norm, w.eps)).float()

    # ------------------------------------------------------------------ the Decoder interface

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Consume ``input_ids[B, P]`` (P ≥ 1) and return the logits ``[B, V]`` of position P.

        Only the distinct rows are computed; their cache rows and logits are then copied to the duplicates.
        """
        ids = torch.as_tensor(input_ids, device=self.device).long()
        if ids.dim() != 2 or ids.shape[0] != self.batch_size or ids.shape[1] == 0:
            raise ValueError(f"input_ids must be [{self.batch_size}, P] with P ≥ 1, got {tuple(ids.shape)}")
        self.length = 0
        self._ensure(max(self.max_length or ids.shape[1] + 256, ids.shape[1] + 1))
        if bool((ids == ids[:1]).all()):
            unique, inverse = ids[:1], torch.zeros(len(ids), dtype=torch.long, device=self.device)
        else:
            unique, inverse = torch.unique(ids, dim=0, return_inverse=True)
        logits = self._forward(unique)
        P = ids.shape[1]
        if len(ids) > 1:  # distinct rows sit sorted in cache rows 0..U−1; row j takes distinct row inverse[j]
            self.cache[:, :, :, :, :P] = self.cache[:, :, inverse, :, :P]
            logits = logits[inverse]
        self.length = P
        return logits

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens[B]`` at position ``length`` and return the logits ``[B, V]`` of the next one."""
        if self.cache is None:
            raise RuntimeError("call prefill before step")
        self._ensure(self.length + 1)
        logits = self._forward(tokens.to(self.device).long().view(-1, 1))
        self.length += 1
        return logits

    @torch.inference_mode()
    def step_rows(self, tokens: torch.Tensor, positions: torch.Tensor,
                  rows: torch.Tensor | None = None) -> torch.Tensor:
        """Continuous batching: feed ``tokens[R]`` at per-row cache positions ``positions[R]`` (each row attends to
        its own positions ≤ its position) and return the logits ``[R, V]`` of each row's next position.

        The rows are all B rows of the cache (R = B), or only the cache rows ``rows [R]``: rows that are idle are
        then not computed at all (the other rows' keys and values are left as they are).
        Rows advance independently: a row may restart at an earlier position (its later cache entries are then
        stale and masked until overwritten). ``length`` becomes the number of positions any row has written (what a
        growing cache keeps).
        """
        if self.cache is None:
            raise RuntimeError("call prefill before step_rows")
        positions = positions.to(self.device).long()
        top = int(positions.max()) + 1
        self._ensure(top)
        if rows is not None:
            rows = torch.as_tensor(rows, device=self.device).long()
            if rows.shape != positions.shape:
                raise ValueError(f"rows must hold one cache row per token ({positions.shape[0]}), got {rows.shape[0]}")
        logits = self._forward(tokens.to(self.device).long().view(-1, 1), positions, rows)
        self.length = max(self.length, top)
        return logits

    @torch.inference_mode()
    def cache_store(self, n_positions: int) -> torch.Tensor:
        """A copy of the cache's first ``n_positions`` positions, ``[layers, 2, B, H_kv, n, d]``: a store of the rows'
        committed keys and values that :meth:`save_rows` and :meth:`restore_rows` exchange with the cache."""
        return self.cache[..., :n_positions, :].clone()

    @torch.inference_mode()
    def save_rows(self, store: torch.Tensor, rows, starts, stop: int) -> None:
        """``store[.., r, :, a_r:stop] = cache[.., r, :, a_r:stop]`` for each row r of ``rows`` and start a_r of
        ``starts`` (one masked copy for all rows)."""
        if len(rows):
            index = torch.as_tensor(rows, device=self.device).long()
            t = torch.arange(store.shape[-2], device=self.device)
            take = ((t[None, :] >= torch.as_tensor(starts, device=self.device)[:, None]) & (t[None, :] < stop))
            take = take[None, None, :, None, :, None]  # [1, 1, n, 1, T, 1]
            new = self.cache[:, :, index, :, : store.shape[-2]]
            store[:, :, index] = torch.where(take, new, store[:, :, index])

    @torch.inference_mode()
    def restore_rows(self, store: torch.Tensor, rows, stops) -> None:
        """``cache[.., r, :, :b_r] = store[.., r, :, :b_r]`` for each row r of ``rows`` and stop b_r of ``stops``
        (one masked copy for all rows)."""
        if len(rows):
            index = torch.as_tensor(rows, device=self.device).long()
            n = store.shape[-2]
            t = torch.arange(n, device=self.device)
            take = (t[None, :] < torch.as_tensor(stops, device=self.device)[:, None])[None, None, :, None, :, None]
            self.cache[:, :, index, :, :n] = torch.where(take, store[:, :, index], self.cache[:, :, index, :, :n])

    @staticmethod
    @torch.inference_mode()
    def swap_rows(store: torch.Tensor, a: int, b: int) -> None:
        """Exchange rows ``a`` and ``b`` of a :meth:`cache_store`."""
        store[:, :, [a, b]] = store[:, :, [b, a]]

    @torch.inference_mode()
    def reorder(self, index: torch.Tensor) -> None:
        """Make cache row b a copy of row ``index[b]`` (``index`` ``[B]``, repeats allowed): the rows' histories
        follow resampled ancestors (sequential Monte Carlo). Only the ``length`` filled positions are copied."""
        n = self.length
        rows = self.cache[:, :, :, :, :n].index_select(2, torch.as_tensor(index, device=self.device).long())
        self.cache[:, :, :, :, :n] = rows
