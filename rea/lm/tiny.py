"""Tiny randomly initialised Hugging Face models, built offline: the one source of test models.

The hub models of the papers (TinyStories-8M, a GPT-Neo) cannot be downloaded at run time, so their code paths are
exercised with models of the same architectures and a few thousand random parameters:

* :func:`tiny_model` -- a ``LlamaForCausalLM`` or ``GPTNeoForCausalLM`` from a small config, seeded;
* :func:`char_tokenizer` -- a 64-character tokenizer (one token per character, id 0 = ``<eos>``);
* :func:`bpe_tokenizer` -- a byte-level BPE tokenizer trained on a three-line corpus (a real ``transformers``
  tokenizer that can be saved and reloaded);
* :func:`char_llama` -- a :class:`~rea.lm.models.HFLanguageModel` over a char-level llama, in memory;
* :func:`save_tiny` -- a model directory (config, safetensors, tokenizer) that :func:`rea.lm.load_model` opens
  like any hub checkpoint.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

CHARS = ["<eos>"] + list(string.ascii_lowercase) + list(" .,!?'") + list(string.ascii_uppercase) + list("01234")
"""The vocabulary of :func:`char_tokenizer`: 64 entries, ``<eos>`` first."""

CORPUS = (
    "Once upon a time, in a big forest, there lived a rhinoceros.",
    "The sky is blue and the sun is bright. The cat sat on the mat!",
    "Is it raining? No, it is not raining today. 1 2 3 4 5 6 7 8 9 0",
)
"""The training text of :func:`bpe_tokenizer`."""

ARCHITECTURES = ("llama", "gpt-neo")

TINYSTORIES_8M = dict(arch="gpt-neo", vocab_size=50257, hidden_size=256, n_layers=8, n_heads=16,
                      intermediate_size=1024, max_positions=2048, tie_embeddings=True, eos_token_id=50256,
                      window_size=256)
""":func:`tiny_model` arguments of a random model shaped like ``roneneldan/TinyStories-8M`` (GPT-Neo: hidden 256,
8 layers alternating global and local attention with window 256, 16 heads, MLP 1024, vocabulary 50257, tied
embeddings): the paper's model for throughput measurements where the hub is out of reach."""


class CharTokenizer:
    """The slice of a ``transformers`` tokenizer that :class:`rea.lm.models.HFLanguageModel` uses, one id per
    character of :data:`CHARS`."""

    eos_token_id = 0

    def __init__(self):
        self.index = {ch: i for i, ch in enumerate(CHARS)}

    def __len__(self) -> int:
        return len(CHARS)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.index[ch] for ch in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(CHARS[int(i)] for i in ids if not (skip_special_tokens and int(i) == 0))


def char_tokenizer() -> CharTokenizer:
    """A tokenizer with one token per character of :data:`CHARS` (vocabulary 64, ``<eos>`` = 0)."""
    return CharTokenizer()


def bpe_tokenizer(vocab_size: int = 300, corpus=CORPUS):
    """A byte-level BPE ``PreTrainedTokenizerFast`` of at most ``vocab_size`` tokens trained on ``corpus``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(list(corpus), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def tiny_config(arch: str = "llama", vocab_size: int = 64, hidden_size: int = 32, n_layers: int = 2,
                n_heads: int = 2, n_kv_heads: int | None = None, max_positions: int = 128,
                tie_embeddings: bool = False, initializer_range: float = 0.02, eos_token_id: int = 0,
                intermediate_size: int | None = None, **hf_overrides):
    """A ``LlamaConfig`` (``arch="llama"``, grouped-query attention with ``n_kv_heads``) or a ``GPTNeoConfig``
    (``"gpt-neo"``, the TinyStories architecture: alternating global and local attention, window 16).

    ``intermediate_size`` defaults to 2·``hidden_size``; ``hf_overrides`` are passed to the config as they are
    (llama: e.g. ``attention_bias=True``, ``head_dim=8``, ``rope_parameters={...}`` to reach other code paths;
    GPT-Neo: e.g. ``window_size=256``, the TinyStories models' window, see :data:`TINYSTORIES_8M`).
    """
    intermediate_size = intermediate_size or 2 * hidden_size
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**{
            "vocab_size": vocab_size, "hidden_size": hidden_size, "intermediate_size": intermediate_size,
            "num_hidden_layers": n_layers, "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads or n_heads,
            "max_position_embeddings": max_positions, "tie_word_embeddings": tie_embeddings,
            "initializer_range": initializer_range, "eos_token_id": eos_token_id, "bos_token_id": eos_token_id,
            "pad_token_id": eos_token_id, **hf_overrides,
        })
    if arch == "gpt-neo":
        from transformers import GPTNeoConfig

        return GPTNeoConfig(**{
            "vocab_size": vocab_size, "hidden_size": hidden_size, "num_layers": n_layers, "num_heads": n_heads,
            "max_position_embeddings": max_positions, "attention_types": [[["global", "local"], n_layers // 2]],
            "window_size": 16, "intermediate_size": intermediate_size, "initializer_range": initializer_range,
            "eos_token_id": eos_token_id, "bos_token_id": eos_token_id, "tie_word_embeddings": tie_embeddings,
            **hf_overrides,
        })
    raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")


def tiny_model(arch: str = "llama", seed: int = 0, weight_std: float | None = None, vector_noise: float = 0.0,
               **config):
    """A randomly initialised causal LM in eval mode from :func:`tiny_config` (``**config``).

    ``torch.manual_seed(seed)`` fixes the weights. ``weight_std`` redraws every matrix (dim > 1) from
    N(0, weight_std²), which makes next-token distributions peakier than the default initialisation;
    ``vector_noise`` adds N(0, vector_noise²) to every vector (norm weights, biases) so they are not all 1 or 0.
    """
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(arch, **config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    if weight_std is not None:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0, weight_std)
                elif vector_noise:
                    p.add_(vector_noise * torch.randn_like(p))
    return model.eval()


def char_llama(seed: int = 0, initializer_range: float = 0.02, name: str = "char-llama"):
    """An :class:`~rea.lm.models.HFLanguageModel` over a 2-layer char-level llama (vocabulary 64, hidden 32), on
    the CPU, through the generic decoder. ``initializer_range`` scales the random weights."""
    from rea.lm.models import HFLanguageModel

    model = tiny_model("llama", seed=seed, vocab_size=len(CHARS), initializer_range=initializer_range,
                       max_positions=256)
    return HFLanguageModel(model, char_tokenizer(), name=name, fast_decode=False)


def save_tiny(path, arch: str = "llama", seed: int = 0, weight_std: float = 0.2, **config) -> str:
    """Save a tiny ``arch`` model with a :func:`bpe_tokenizer` under ``path``; returns the directory as a string.

    Defaults give the test models: 4 heads (llama: 2 KV heads), tied embeddings, weights N(0, 0.2²); GPT-Neo has
    one global and one local layer.
    """
    tok = bpe_tokenizer()
    defaults = {"llama": dict(n_heads=4, n_kv_heads=2, tie_embeddings=True),
                "gpt-neo": dict(n_heads=4, tie_embeddings=True)}
    if arch not in defaults:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    cfg = {**defaults[arch], **config, "vocab_size": len(tok), "eos_token_id": tok.eos_token_id}
    model = tiny_model(arch, seed=seed, weight_std=weight_std, **cfg)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
