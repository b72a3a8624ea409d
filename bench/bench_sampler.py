"""Throughput of rea's lockstep sampler and of TPS on the embedded SmolLM2-135M, on this machine's CPU.

1. Sampler against Hugging Face ``generate`` (float32, the process's default threads) at the batch sizes the book
   uses: 8 (TPS chains), 64 and 256 rows, 24 new tokens (the quick profile's length) and, at batch 64, 64 tokens.
   Runs alternate (sampler, generate, sampler through the generic HF decoder, ...) after a warm-up of each; the
   median of the repeats is reported, so load from other processes hits all three alike.
2. TPS at the book's quick shape -- chapter 4's four runs as one batch, as the book runs them: ARI and Log-Prob,
   each annealed (4 chains per direction, both directions: 8 rows) and by replica exchange (4 ladders × 6 biases: 24
   rows), L = 24, 64 rows in all, continuous batching (:mod:`rea.tps.shooting`) -- for ``--tps-steps`` moves per
   row: generated tokens per second (Σ over moves of the regenerated suffix, L − cut; the initial samples are not
   counted, their time is) over the sampler's batch-64 tokens/s, and the same run with one competing CPU-bound
   process over without. ``--tps-batching lockstep`` times the lockstep shooter instead.

    .venv/bin/python bench/bench_sampler.py [--quick] [--repeats N] [--tps-steps N] [--tps-batching B]

Prints ``sampler_speedup_vs_generate batch=B``, ``tps_tokens_per_s_fraction_of_sampler``, ``busy_cpu_slowdown``,
a large fp32 matmul's FLOP/s and the sampler's model FLOP/s as ``sampler_fraction_of_matmul_peak``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time

import torch

PROMPT = "Once upon a time, in a big forest, there lived a rhinoc"
SHAPES = ((8, 24), (64, 24), (256, 24), (64, 64))  # (rows, new tokens)


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


def time_alternating(runs: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each callable in ``runs``, timed in alternation after one warm-up of each."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def sampler_vs_generate(lm, lm_hf, batch: int, new: int, repeats: int) -> dict[str, float]:
    """Tokens/s of the sampler (fast decoder), HF ``generate`` and the sampler through the generic HF decoder."""
    from rea.sampling import sample

    model = lm.model
    ids = torch.tensor(lm.encode(PROMPT))[None].expand(batch, -1).contiguous()

    def run_generate():
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                max_new_tokens=new, min_new_tokens=new, pad_token_id=lm.eos_token_id,
            )
        assert out.shape == (batch, ids.shape[1] + new), out.shape

    runs = {"sampler": lambda: sample(lm, PROMPT, n=batch, length=new, batch_size=batch, progress=False),
            "generate": run_generate,
            "sampler_hf_decoder": lambda: sample(lm_hf, PROMPT, n=batch, length=new, batch_size=batch,
                                                 progress=False)}
    return {k: batch * new / t for k, t in time_alternating(runs, repeats).items()}


def tps_tokens_per_s(lm, n_steps: int, batching: str = "auto") -> float:
    """Generated tokens/s of chapter 4's quick-profile TPS (its annealed and replica-exchange runs of ARI and
    Log-Prob as one batch, as the book runs them) over their first ``n_steps`` moves per row: Σ over moves of the
    regenerated suffix L − cut, over the wall time."""
    from rea.book import chapter_settings, exchange_tps_configs, real_tps_configs
    from rea.tps import run_tps_many

    B = chapter_settings("tps", "quick")
    configs = [*real_tps_configs(B, PROMPT, seed=0).values(), *exchange_tps_configs(B, PROMPT, seed=0).values()]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        runs = run_tps_many(lm, configs, [f"{tmp}/{i}" for i in range(len(configs))], progress=False,
                            max_steps=n_steps, batching=batching)
        elapsed = time.perf_counter() - t
    return float(sum((c.length - r.records["cut"]).sum() for c, r in zip(configs, runs))) / elapsed


def _burn() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def busy(fn):
    """Run ``fn()`` while one child process spins on a CPU; returns its result."""
    child = multiprocessing.get_context("spawn").Process(target=_burn, daemon=True)
    child.start()
    try:
        return fn()
    finally:
        child.terminate()
        child.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one timed repeat of each instead of three")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of each (default 3, quick 1)")
    parser.add_argument("--tps-steps", type=int, default=16, help="TPS moves per row timed (idle and busy)")
    parser.add_argument("--tps-batching", default="auto", help="TPS shooter: auto, continuous or lockstep")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)

    from transformers.utils import logging as hf_logging

    from rea.lm import HFLanguageModel, load_model

    hf_logging.set_verbosity_error()
    lm = load_model(device="cpu", dtype=torch.float32, fast_decode=True)
    lm_hf = HFLanguageModel(lm.model, lm.tokenizer, name=lm.name, fast_decode=False)
    print(f"device: cpu, cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}, "
          f"prompt tokens {len(lm.encode(PROMPT))}, fast decoder: {lm.fast_decode}")
    rates = {}
    for batch, new in SHAPES:
        r = rates[batch, new] = sampler_vs_generate(lm, lm_hf, batch, new, repeats)
        print(f"  batch {batch} × {new} tokens: " + ", ".join(f"{k} {v:.1f} tok/s" for k, v in r.items()))
        if new == 24:
            print(f"sampler_speedup_vs_generate batch={batch}: {r['sampler'] / r['generate']:.2f}")

    idle = tps_tokens_per_s(lm, args.tps_steps, args.tps_batching)
    loaded = busy(lambda: tps_tokens_per_s(lm, args.tps_steps, args.tps_batching))
    print(f"  TPS (quick shape, {args.tps_steps} moves per row, {args.tps_batching} batching): {idle:.1f} generated "
          f"tok/s idle, {loaded:.1f} with one "
          f"CPU-bound process beside it")
    print(f"tps_tokens_per_s_fraction_of_sampler: {idle / rates[64, 24]['sampler']:.2f}")
    print(f"busy_cpu_slowdown: {idle / loaded:.2f}")

    r = rates[64, 64]
    peak = matmul_flops()
    per_token = model_flops_per_token(lm.model, context=len(lm.encode(PROMPT)) + 64 / 2)
    achieved = per_token * r["sampler"]
    print(f"matmul_4096_fp32: {peak / 1e9:.1f} GFLOP/s")
    print(f"sampler_model_flops: {achieved / 1e9:.1f} GFLOP/s  ({per_token / 1e6:.1f} MFLOP/token)")
    print(f"sampler_hf_decoder_tokens_per_s: {r['sampler_hf_decoder']:.1f}")
    print(f"generate_tokens_per_s: {r['generate']:.1f}")
    print(f"sampler_tokens_per_s: {r['sampler']:.1f}")
    print(f"sampler_speedup_vs_generate: {r['sampler'] / r['generate']:.2f}")
    print(f"sampler_fraction_of_matmul_peak: {achieved / peak:.2f}")


if __name__ == "__main__":
    main()
