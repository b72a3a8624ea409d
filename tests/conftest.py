"""Shared fixtures: small randomly initialised HF models (llama, GPT-Neo; built by rea.lm.tiny) saved offline."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


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
    from rea.lm.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_neo_dir(tmp_path_factory):
    """Directory with a 2-layer random GPT-Neo (the TinyStories architecture: global + local attention)."""
    from rea.lm.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny-neo"), "gpt-neo")


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
