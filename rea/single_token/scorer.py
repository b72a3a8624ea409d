"""The model side of single-token rare outputs: last-position logits of a (possibly truncated) llama model.

:func:`truncated` returns a :class:`Scorer`: embeddings -> first ``n_layers`` decoder layers of a llama model -> final
norm -> unembedding, last position only, reusing the Hugging Face modules (no weights are copied, except a float64
unembedding for QLD). Every scorer also accepts ``inputs_embeds`` so gradients w.r.t. one-hot inputs are
``∂ℓ_t/∂onehot_i = W_E ∂ℓ_t/∂e_i`` (``e = onehot @ W_E``). :func:`rea.lm.tiny.tiny_model` gives a small random
llama for tests.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rea.lm.threads import adaptive_threads


def last_position_layer(layer, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """One llama decoder layer evaluated at the last position only: ``h[B, k, H] -> [B, H]``.

    The output at position k−1 needs the keys and values of every position but the query, attention output, residual
    and MLP of that position alone (causal attention: the last query sees every key, so no mask):

        x = RMSNorm₁(h),  q = rot_{k−1}(x_{k−1} W_qᵀ),  K = rot(x W_kᵀ),  V = x W_vᵀ
        y = h_{k−1} + softmax(q Kᵀ/√d) V W_oᵀ,   out = y + MLP(RMSNorm₂(y))

    with grouped-query heads and RoPE as Hugging Face's ``LlamaDecoderLayer`` (its own modules and
    ``apply_rotary_pos_emb``), so the result equals that layer's output at position k−1 up to float rounding, for
    1/k of its query, output and MLP products. Differentiable. ``rope = (cos, sin)`` of shape ``[1, k, d]``.
    """
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    attn = layer.self_attn
    B, k, _ = h.shape
    x = layer.input_layernorm(h)
    q = attn.q_proj(x[:, -1:]).view(B, 1, -1, attn.head_dim).transpose(1, 2)  # [B, heads, 1, d]
    keys = attn.k_proj(x).view(B, k, -1, attn.head_dim).transpose(1, 2)  # [B, kv heads, k, d]
    values = attn.v_proj(x).view(B, k, -1, attn.head_dim).transpose(1, 2)
    cos, sin = rope
    q, _ = apply_rotary_pos_emb(q, q, cos[:, -1:], sin[:, -1:])
    _, keys = apply_rotary_pos_emb(keys, keys, cos, sin)
    a = F.scaled_dot_product_attention(q, keys, values, scale=attn.scaling,
                                       enable_gqa=q.shape[1] != keys.shape[1])  # [B, heads, 1, d]
    y = h[:, -1] + attn.o_proj(a.reshape(B, -1))
    return y + layer.mlp(layer.post_attention_layernorm(y))


class Scorer:
    """Last-position logits of a (possibly truncated) llama model.

    ``scorer(tokens[B, k]) -> logits[B, V]`` and ``scorer.from_embeds(e[B, k, H]) -> logits[B, V]`` with
    ``e = onehot(tokens) @ W_E``. ``hidden_from_embeds`` returns the final pre-unembedding activations
    ``h[B, H]`` (after the final RMSNorm), so that ``logits = h @ W_U.T (+ bias)``.

    Built by :func:`truncated`; it holds references to the model's own modules (embeddings, the first
    ``n_layers`` decoder layers, final norm, rotary embedding, ``lm_head``), so it costs no extra memory until QLD
    asks for :meth:`unembedding_float64` (one float64 copy of ``W_U``, kept).
    """

    def __init__(self, model, n_layers: int | None = None):
        inner = getattr(model, "model", None)
        if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
            raise ValueError(
                "lm_or_model must be a llama-style causal LM (model.model.layers, rotary_emb), "
                f"got {type(model).__name__}"
            )
        total = len(inner.layers)
        if n_layers is None:
            n_layers = total
        if not isinstance(n_layers, (int, np.integer)) or not 1 <= int(n_layers) <= total:
            raise ValueError(f"n_layers must be an integer in [1, {total}], got {n_layers!r}")
        self.model = model
        self.n_layers = int(n_layers)
        self.embed_tokens = inner.embed_tokens
        self.layers = list(inner.layers[: self.n_layers])
        self.norm = inner.norm
        self.rotary_emb = inner.rotary_emb
        self.lm_head = model.lm_head
        self.W_E = self.embed_tokens.weight  # [V, H]
        self.W_U = self.lm_head.weight  # [V, H]
        self.bias = getattr(self.lm_head, "bias", None)
        self.vocab_size = int(self.W_U.shape[0])
        self.hidden_size = int(self.W_U.shape[1])
        self.device = self.W_E.device
        self.dtype = self.W_E.dtype
        self._W_U64: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"Scorer({type(self.model).__name__}, n_layers={self.n_layers}, V={self.vocab_size})"

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """``e[B, k, H] = W_E[tokens]`` (equal to ``onehot(tokens) @ W_E``)."""
        return self.embed_tokens(tokens.to(self.device))

    def hidden_from_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """Final-norm activations at the last position, ``h[B, H]``, from ``embeds[B, k, H]``.

        Every layer but the last runs Hugging Face's own decoder layer on all k positions; the last one runs only at
        the last position (:func:`last_position_layer`), which is all the final norm and unembedding read.
        """
        B, k, _ = embeds.shape
        pos = torch.arange(k, device=embeds.device)[None]
        mask = torch.full((k, k), torch.finfo(embeds.dtype).min, device=embeds.device, dtype=embeds.dtype)
        mask = torch.triu(mask, diagonal=1)[None, None]  # additive causal mask [1, 1, k, k]
        h = embeds
        rope = self.rotary_emb(h, position_ids=pos)
        for layer in self.layers[:-1]:
            out = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=rope, use_cache=False)
            h = out[0] if isinstance(out, tuple) else out
        return self.norm(last_position_layer(self.layers[-1], h, rope))

    def unembedding_float64(self) -> torch.Tensor:
        """``W_U [V, H]`` as float64 on the CPU (QLD's direction and bounds), converted on first use and kept."""
        if self._W_U64 is None:
            self._W_U64 = self.W_U.detach().to("cpu", torch.float64)
        return self._W_U64

    def unembed(self, h: torch.Tensor) -> torch.Tensor:
        """``logits = h @ W_U.T (+ bias)``: ``[B, H] -> [B, V]``."""
        return self.lm_head(h)

    def from_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """Last-position logits ``[B, V]`` from ``embeds[B, k, H]`` (differentiable)."""
        return self.unembed(self.hidden_from_embeds(embeds))

    @adaptive_threads
    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """Last-position logits ``[B, V]`` of ``tokens[B, k]`` (no gradients)."""
        return self.from_embeds(self.embed(tokens)).float()

    @adaptive_threads
    @torch.inference_mode()
    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final pre-unembedding activations ``[B, H]`` of ``tokens[B, k]``."""
        return self.hidden_from_embeds(self.embed(tokens)).float()

    @adaptive_threads
    def target_grad(self, tokens: torch.Tensor, target):
        """One forward + backward: ``(logits[B, V], grad_e[B, k, H])`` with ``grad_e[b] = ∂ℓ_{t_b}(x_b)/∂e_b``.

        ``target``: one token id for every row, or a LongTensor ``[B]`` of per-row targets ``t_b`` (so that runs for
        different targets share one call). The gradient w.r.t. one-hot inputs is
        ``∂ℓ_t/∂onehot_i(v) = grad_e[:, i] @ W_E[v]`` (``grad_e @ W_E.T``). Only ``ℓ_{t_b} = h_b · W_U[t_b]`` is
        back-propagated; the full logits are computed from the detached ``h``.
        """
        per_row = torch.is_tensor(target) and target.dim() == 1
        if per_row and target.shape[0] != tokens.shape[0]:
            raise ValueError(f"target must be an int or hold one id per row ({tokens.shape[0]}), got {target.shape[0]}")
        with torch.enable_grad():
            e = self.embed(tokens).detach().requires_grad_(True)
            h = self.hidden_from_embeds(e)
            if per_row:
                t = target.to(self.device)
                lt = (h * self.W_U[t]).sum(-1)
            else:
                lt = h @ self.W_U[target]
            if self.bias is not None:
                lt = lt + self.bias[t if per_row else target]
            (g,) = torch.autograd.grad(lt.sum(), e)
        with torch.no_grad():
            logits = self.unembed(h.detach()).float()
        return logits, g.detach()


def truncated(lm_or_model, n_layers: int | None = None) -> Scorer:
    """Scorer running embeddings -> decoder layers ``[:n_layers]`` -> final norm -> unembedding (last position).

    ``lm_or_model``: an :class:`rea.lm.models.HFLanguageModel` (its ``.model`` is used) or a ``LlamaForCausalLM``.
    ``n_layers=None`` keeps every layer (the full model). [WH] use 1-, 2- and 4-layer models.
    """
    model = getattr(lm_or_model, "model", None)
    if model is not None and hasattr(model, "lm_head"):
        lm_or_model = model
    if not hasattr(lm_or_model, "lm_head"):
        raise ValueError("lm_or_model must be an HFLanguageModel or a LlamaForCausalLM, "
                         f"got {type(lm_or_model).__name__}")
    return Scorer(lm_or_model.eval(), n_layers)
