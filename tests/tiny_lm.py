"""A tiny randomly initialised Llama with a character-level tokenizer, for fast offline tests.

``tiny_llama()`` returns a :class:`rea.lm.models.HFLanguageModel` (vocabulary of 64 characters, 2 layers, hidden size
32) on the CPU. ``initializer_range`` scales the random weights: larger values give peakier next-token
distributions.
"""

from __future__ import annotations

import string

import torch

VOCAB = ["<eos>"] + list(string.ascii_lowercase) + list(" .,!?'") + list(string.ascii_uppercase) + list("01234")
assert len(VOCAB) == 64


class CharTokenizer:
    """The minimal slice of a ``transformers`` tokenizer that :class:`rea.lm.models.HFLanguageModel` uses."""

    eos_token_id = 0

    def __init__(self):
        self.index = {ch: i for i, ch in enumerate(VOCAB)}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.index[ch] for ch in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(VOCAB[int(i)] for i in ids if not (skip_special_tokens and int(i) == 0))


def tiny_llama(seed: int = 0, initializer_range: float = 0.02, name: str = "tiny-llama"):
    from transformers import LlamaConfig, LlamaForCausalLM

    from rea.lm import HFLanguageModel

    cfg = LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, eos_token_id=0, bos_token_id=0, pad_token_id=0,
        initializer_range=initializer_range, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    return HFLanguageModel(model, CharTokenizer(), name=name, fast_decode=False)
