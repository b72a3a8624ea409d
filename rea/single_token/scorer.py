"""The model side of single-token rare outputs: last-position logits of a (possibly truncated) llama model.

:func:`truncated` returns a :class:`Scorer`: embeddings -> first ``n_layers`` decoder layers of a llama model -> final
norm -> unembedding, last position only, reusing the Hugging Face modules (no weights are copied). Every scorer also
accepts ``inputs_embeds`` so gradients w.r.t. one-hot inputs are ``∂ℓ_t/∂onehot_i = W_E ∂ℓ_t/∂e_i``
(``e = onehot @ W_E``). :func:`rea.lm.tiny.tiny_model` gives a small random llama for tests.
"""

from __future__ import annotations

import numpy as np
import torch

from rea.lm.threads import adaptive_threads


class Scorer:
    """Last-position logits of a (possibly truncated) llama model.

    ``scorer(tokens[B, k]) -> logits[B, V]`` and ``scorer.from_embeds(e[B, k, H]) -> logits[B, V]`` with
    ``e = onehot(tokens) @ W_E``. ``hidden_from_embeds`` returns the final pre-unembedding activations
    ``h[B, H]`` (after the final RMSNorm), so that ``logits = h @ W_U.T (+ bias)``.

    Built by :func:`truncated`; it holds references to the model's own modules (embeddings, the first
    ``n_layers`` decoder layers, final norm, rotary embedding, ``lm_head``), so it costs no extra memory.
    """

    def __init__(self, model, n_layers: int | None = None):
        inner = getattr(model, "model", None)
        if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
            raise ValueError(
                f"lm_or_model must be a llama-style causal LM (model.model.layers, rotary_emb), got {type(model).__name__}"
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

    def __repr__(self) -> str:
        return f"Scorer({type(self.model).__name__}, n_layers={self.n_layers}, V={self.vocab_size})"

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """``e[B, k, H] = W_E[tokens]`` (equal to ``onehot(tokens) @ W_E``)."""
        return self.embed_tokens(tokens.to(self.device))

    def hidden_from_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """Final-norm activations at the last position, ``h[B, H]``, from ``embeds[B, k, H]``."""
        B, k, _ = embeds.shape
        pos = torch.arange(k, device=embeds.device)[None]
        mask = torch.full((k, k), torch.finfo(embeds.dtype).min, device=embeds.device, dtype=embeds.dtype)
        mask = torch.triu(mask, diagonal=1)[None, None]  # additive causal mask [1, 1, k, k]
        h = embeds
        rope = self.rotary_emb(h, position_ids=pos)
        for layer in self.layers:
            out = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=rope, use_cache=False)
            h = out[0] if isinstance(out, tuple) else out
        return self.norm(h[:, -1])

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
    def target_grad(self, tokens: torch.Tensor, target: int):
        """One forward + backward: ``(logits[B, V], grad_e[B, k, H])`` with ``grad_e = ∂ℓ_t/∂e``.

        The gradient w.r.t. one-hot inputs is ``∂ℓ_t/∂onehot_i(v) = grad_e[:, i] @ W_E[v]`` (``grad_e @ W_E.T``).
        Only ``ℓ_t = h · W_U[t]`` is back-propagated; the full logits are computed from the detached ``h``.
        """
        with torch.enable_grad():
            e = self.embed(tokens).detach().requires_grad_(True)
            h = self.hidden_from_embeds(e)
            lt = h @ self.W_U[target]
            if self.bias is not None:
                lt = lt + self.bias[target]
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
        raise ValueError(f"lm_or_model must be an HFLanguageModel or a LlamaForCausalLM, got {type(lm_or_model).__name__}")
    return Scorer(lm_or_model.eval(), n_layers)
