"""Shared fixtures: small randomly initialised HF models (llama, GPT-Neo) saved offline with a real tokenizer."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

CORPUS = [
    "Once upon a time, in a big forest, there lived a rhinoceros.",
    "The sky is blue and the sun is bright. The cat sat on the mat!",
    "Is it raining? No, it is not raining today. 1 2 3 4 5 6 7 8 9 0",
]


def _tokenizer(vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def _save(tmp_path_factory, name, config):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(name)
    tok = _tokenizer()
    config.vocab_size = len(tok)
    config.eos_token_id = tok.eos_token_id
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # larger weights than the default init, so distributions are not near-uniform
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models and the toy LM run faster without intra-op threads (OpenMP wake-ups dominate tiny tensors)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """Directory with a 2-layer random llama (GQA, 4 heads / 2 KV heads) and a byte-level BPE tokenizer."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True)
    return _save(tmp_path_factory, "tiny-llama", cfg)


@pytest.fixture(scope="session")
def tiny_neo_dir(tmp_path_factory):
    """Directory with a 2-layer random GPT-Neo (the TinyStories architecture: global + local attention)."""
    from transformers import GPTNeoConfig

    cfg = GPTNeoConfig(hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=128,
                       attention_types=[[["global", "local"], 1]], window_size=16, intermediate_size=64)
    return _save(tmp_path_factory, "tiny-neo", cfg)


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir):
    from rea.lm import load_model

    return load_model(tiny_llama_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_neo(tiny_neo_dir):
    from rea.lm import load_model

    return load_model(tiny_neo_dir, device="cpu")


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M (converted once into REA_CACHE)."""
    from rea.lm import load_model

    return load_model(device="cpu")
