"""Shared fixtures: small randomly initialised HF models (llama, GPT-Neo; built by rea.lm.tiny) saved offline."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# `make test` runs the tests in parallel processes (pytest-xdist, `-n`): each takes its share of the cores, so that
# the processes do not oversubscribe them (two 2-thread processes on 2 cores wait at every OpenMP barrier), and no
# more than OMP_NUM_THREADS where it is set (`OMP_NUM_THREADS=1 make test`: one thread everywhere)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
_OMP = os.environ.get("OMP_NUM_THREADS", "").strip()
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS, int(_OMP) if _OMP.isdigit() else 2)))


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models and the toy LM run faster without intra-op threads (OpenMP wake-ups dominate tiny tensors):
    :func:`rea.validate.toy.single_thread` for the module."""
    from rea.validate.toy import single_thread as one_thread

    with one_thread():
        yield


@pytest.fixture(scope="session")
def toy():
    """The exact toy Markov LM (:mod:`rea.lm.toy`) on the CPU."""
    from rea.validate.toy import toy_model

    return toy_model()


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
