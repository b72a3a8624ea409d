"""Throughput of rea's lockstep sampler against Hugging Face ``generate`` on the embedded SmolLM2-135M.

CPU, float32, torch threads = all cores; batch 64, 64 new tokens, one prompt. Runs alternate (sampler, generate,
sampler with the generic HF decoder, ...) after a warm-up of each, and the median of the repeats is reported, so
that load from other processes hits all three alike.

    .venv/bin/python bench/bench_sampler.py [--quick] [--repeats N]

Prints tokens/s of each, ``sampler_speedup_vs_generate``, a large fp32 matmul's FLOP/s and the sampler's model
FLOP/s as ``sampler_fraction_of_matmul_peak``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

PROMPT = "Once upon a time, in a big forest, there lived a rhinoc"
BATCH, NEW = 64, 64


def matmul_flops(n: int = 4096, reps: int = 3) -> float:
    """Best FLOP/s of an ``n×n @ n×n`` float32 matmul (2 n³ FLOPs) over ``reps`` runs after one warm-up."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def model_flops_per_token(model, context: float) -> float:
    """Matmul FLOPs of one decode step of one sequence.

    Counted: 2 × (weights of every nn.Linear in the decoder layers + the lm_head matrix) -- q, k, v, o, gate, up,
    down and the logits; the embedding lookup is not counted (with tied embeddings the matrix is counted once, as
    the lm_head) -- plus attention, 2 × 2 × layers × heads × head_dim × context (q·K and p·V). RMSNorm, RoPE,
    softmax and SiLU are not counted.
    """
    cfg = model.config
    linear = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attention = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * context
    return 2 * (linear + model.lm_head.weight.numel()) + attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one timed repeat of each instead of three")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of each (default 3, quick 1)")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    from rea.lm import HFLanguageModel, load_model
    from rea.sampling import sample

    hf_logging.set_verbosity_error()
    lm = load_model(device="cpu", dtype=torch.float32, fast_decode=True)
    lm_hf = HFLanguageModel(lm.model, lm.tokenizer, name=lm.name, fast_decode=False)
    model = lm.model
    ids = torch.tensor(lm.encode(PROMPT))[None].expand(BATCH, -1).contiguous()
    tokens = BATCH * NEW
    print(f"device: cpu, threads: {threads}, torch {torch.__version__}, batch {BATCH}, new tokens {NEW}, "
          f"prompt tokens {ids.shape[1]}, fast decoder: {lm.fast_decode}")

    def run_sampler(which):
        def go():
            sample(which, PROMPT, n=BATCH, length=NEW, batch_size=BATCH, progress=False)
        return go

    def run_generate():
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                max_new_tokens=NEW, min_new_tokens=NEW, pad_token_id=lm.eos_token_id,
            )
        assert out.shape == (BATCH, ids.shape[1] + NEW), out.shape

    runs = {"sampler": run_sampler(lm), "generate": run_generate, "sampler_hf_decoder": run_sampler(lm_hf)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    tps = {k: tokens / statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k}: {tps[k]:.1f} tokens/s  (runs: {', '.join(f'{x:.2f}s' for x in v)})")

    peak = matmul_flops()
    per_token = model_flops_per_token(model, context=ids.shape[1] + NEW / 2)
    achieved = per_token * tps["sampler"]
    print(f"matmul_4096_fp32: {peak / 1e9:.1f} GFLOP/s")
    print(f"sampler_model_flops: {achieved / 1e9:.1f} GFLOP/s  ({per_token / 1e6:.1f} MFLOP/token)")
    print(f"sampler_hf_decoder_tokens_per_s: {tps['sampler_hf_decoder']:.1f}")
    print(f"generate_tokens_per_s: {tps['generate']:.1f}")
    print(f"sampler_tokens_per_s: {tps['sampler']:.1f}")
    print(f"sampler_speedup_vs_generate: {tps['sampler'] / tps['generate']:.2f}")
    print(f"sampler_fraction_of_matmul_peak: {achieved / peak:.2f}")


if __name__ == "__main__":
    main()
