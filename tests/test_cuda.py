"""The CUDA code paths (marker ``cuda``; skipped without a GPU; ``bench/device_check.sh`` runs them on one):
sampler log-probs against teacher forcing and against the CPU, both decoders, the toy LM, TPS, and a sweep whose
Ray worker asks for the GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rea.lm import load_model
from rea.sampling import sample, score

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PROMPT = "Once upon a time, in a big forest, there lived a rhinoc"


@pytest.mark.parametrize("which", ["smollm2", "tiny_neo"])
def test_cuda_sampler_logp_matches_teacher_forcing_and_the_cpu(which, tiny_neo_dir):
    """Fast llama decoder (SmolLM2) and the generic decoder (GPT-Neo): per-token log p_M of the sampled tokens
    equal a teacher-forced rescoring on the GPU, and on the CPU within float32 rounding."""
    source = tiny_neo_dir if which == "tiny_neo" else "smollm2-135m"
    gpu, cpu = load_model(source, device="cuda"), load_model(source, device="cpu")
    s = sample(gpu, PROMPT, n=64, length=24, seed=3, progress=False)
    assert np.abs(score(gpu, PROMPT, s.tokens) - s.logp).max() < 1e-3
    assert np.abs(score(cpu, PROMPT, s.tokens) - s.logp).max() < 2e-3


def test_cuda_toy_tokens_equal_the_cpu_and_tps_runs(tmp_path):
    """The toy LM's exact table gives the same completions on either device; a short TPS run finishes on the GPU."""
    from rea.lm import DEFAULT_PROMPT
    from rea.tps import TPSConfig, run_tps

    gpu, cpu = load_model("toy", device="cuda"), load_model("toy", device="cpu")
    a = sample(gpu, DEFAULT_PROMPT, n=256, length=20, seed=1, progress=False)
    b = sample(cpu, DEFAULT_PROMPT, n=256, length=20, seed=1, progress=False)
    assert (a.tokens == b.tokens).mean() > 0.99
    cfg = TPSConfig(prompt=DEFAULT_PROMPT, length=20, lambdas_pos=[0.3], n_steps=20, n_chains=4,
                    observable="repeats", checkpoint_every=10)
    res = run_tps(gpu, cfg, tmp_path / "tps", progress=False)
    assert res.complete and len(res.records) == 2 * 4 * 20


def test_cuda_sweep_worker_takes_the_gpu(tmp_path):
    """A sweep on a machine with a GPU places one worker per GPU, which loads its model there."""
    pytest.importorskip("ray")
    from rea.sweep import run_sweep

    table = run_sweep(["ha", "oh"], model="toy", thresholds=[3], method="direct", profile="ci", out=tmp_path,
                      num_cpus=2, progress=False)
    assert (table["status"] == "ok").all(), table["error"].tolist()
    assert table["device"].str.startswith("cuda").all()
