"""Sampler tokens/s against Hugging Face ``generate`` on an accelerator (the Python part of ``bench/device_check.sh``).

Two models: the embedded SmolLM2-135M (llama; rea's fast decoder) and a randomly initialised GPT-Neo shaped like
the paper's TinyStories-8M (:data:`rea.lm.tiny.TINYSTORIES_8M`; the generic decoder; its tokenizer is a small BPE,
which does not matter for throughput). For each model and batch size B: ``sample(lm, prompt, n=B, length=new)``
(ancestral sampling at temperature 1 with exact per-token log-probs) and ``model.generate(do_sample=True, top_k=0,
top_p=1, min_new_tokens=new)`` (the same distribution, no log-probs), each timed once after a warm-up of the model,
CUDA synchronised. Reports generated tokens per second, B·new/seconds, the peak memory, and the roofline targets
(≥ 1e6 tokens/s for the TinyStories-8M shape, ≥ 4e5 for SmolLM2, at batch ≥ 2048 on one H100/H200) as met or not.

    python bench/device_bench.py [--batches 256 1024 4096] [--new 100] [--dtype float32] [--no-generate]
                                 [--budget SECONDS] [--out results.jsonl]
    python bench/device_bench.py --quick      # CPU smoke test: batches 4 and 8, 8 new tokens (seconds)

One line per measurement is printed and appended to ``--out`` as JSON; a failure of one measurement (out of memory,
an unsupported dtype) is recorded in its line and the others go on.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import torch

PROMPT = "Once upon a time, in a big forest, there lived a rhinoc"
TARGETS = {"smollm2-135m": 4e5, "tinystories-8m-shape": 1e6}
"""Roofline targets in tokens/s at batch ≥ 2048 on one H100/H200 (issue: to confirm or correct)."""


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load(name: str, device: str, dtype: torch.dtype):
    """``(lm, hf_model)`` of ``"smollm2-135m"`` or ``"tinystories-8m-shape"`` on ``device``."""
    from rea.lm import HFLanguageModel, load_model
    from rea.lm.tiny import TINYSTORIES_8M, bpe_tokenizer, tiny_model

    if name == "smollm2-135m":
        lm = load_model(device=device, dtype=dtype)
        return lm, lm.model
    cfg = dict(TINYSTORIES_8M)
    model = tiny_model(cfg.pop("arch"), seed=0, **cfg).to(device=device, dtype=dtype)
    return HFLanguageModel(model, bpe_tokenizer(), name=name, fast_decode=False), model


def timed(fn, device) -> float:
    """Seconds of one call of ``fn``, CUDA synchronised before and after."""
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def run_sampler(lm, batch: int, new: int) -> None:
    from rea.sampling import sample

    sample(lm, PROMPT, n=batch, length=new, batch_size=batch, seed=0, progress=False)


def run_generate(lm, model, batch: int, new: int) -> None:
    ids = torch.tensor(lm.encode(PROMPT), device=lm.device)[None].expand(batch, -1).contiguous()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, top_p=1.0,
                             temperature=1.0, max_new_tokens=new, min_new_tokens=new, pad_token_id=lm.eos_token_id)
    assert out.shape == (batch, ids.shape[1] + new), out.shape


def measure(name: str, what: str, fn, lm, batch: int, new: int) -> dict:
    """One timed call -> a result line (tokens/s, seconds, peak memory; or the error)."""
    row = {"model": name, "what": what, "batch": batch, "new_tokens": new, "device": str(lm.device),
           "dtype": str(getattr(lm, "dtype", "")).replace("torch.", "")}
    if lm.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(lm.device)
    try:
        seconds = timed(fn, lm.device)
        row.update(seconds=round(seconds, 4), tokens_per_s=round(batch * new / seconds, 1))
    except Exception as err:  # noqa: BLE001 - recorded, the next measurement goes on
        row["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}" if str(err).strip() else \
            type(err).__name__
        if lm.device.type == "cuda":
            torch.cuda.empty_cache()
    if lm.device.type == "cuda":
        row["peak_gib"] = round(torch.cuda.max_memory_allocated(lm.device) / 2**30, 2)
    return row


def bench_model(name: str, args, emit, deadline: float) -> None:
    """Warm up, then time the sampler (and ``generate``) at every batch size of ``args`` until ``deadline``."""
    lm, model = load(name, args.device, getattr(torch, args.dtype))
    run_sampler(lm, min(args.batches), min(args.new, 8))  # warm-up: kernels, caches, allocator
    if not args.no_generate:
        run_generate(lm, model, min(args.batches), min(args.new, 8))
    for batch in args.batches:
        for what in ("sampler",) + (() if args.no_generate else ("generate",)):
            if time.monotonic() > deadline:
                emit({"model": name, "what": what, "batch": batch, "skipped": "time budget spent"})
                continue
            # bound now (not closures over lm, model, batch, which the `del` below unbinds)
            fn = functools.partial(run_sampler, lm, batch, args.new) if what == "sampler" else \
                functools.partial(run_generate, lm, model, batch, args.new)
            emit(measure(name, what, fn, lm, batch, args.new))
            del fn  # it holds the models: let `del lm, model` below free them
    del lm, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def verdicts(rows: list[dict]) -> list[str]:
    """One line per model: the sampler's best tokens/s at batch ≥ 2048, its speed-up over generate at the same
    batch, and whether the roofline target is met."""
    lines = []
    for name, target in TARGETS.items():
        big = [r for r in rows if r.get("model") == name and r.get("what") == "sampler" and "tokens_per_s" in r
               and r["batch"] >= 2048]
        if not big:
            lines.append(f"target {name}: not measured at batch >= 2048")
            continue
        best = max(big, key=lambda r: r["tokens_per_s"])
        gen = [r for r in rows if r.get("model") == name and r.get("what") == "generate"
               and r["batch"] == best["batch"] and "tokens_per_s" in r]
        vs = f", {best['tokens_per_s'] / gen[0]['tokens_per_s']:.1f}x generate" if gen else ""
        met = "met" if best["tokens_per_s"] >= target else "NOT met"
        lines.append(f"target {name}: {best['tokens_per_s']:.3g} tokens/s at batch {best['batch']} "
                     f"({best['dtype']}{vs}) vs target {target:.0e}: {met}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--new", type=int, default=100, help="new tokens per completion (the paper's length)")
    parser.add_argument("--models", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--dtype", default="float32", help="float32 (the book's) or bfloat16")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-generate", action="store_true", help="time the sampler only")
    parser.add_argument("--budget", type=float, default=300, help="seconds; later measurements are skipped")
    parser.add_argument("--quick", action="store_true", help="CPU smoke test: batches 4 8, 8 new tokens")
    parser.add_argument("--out", default=None, help="append one JSON line per measurement to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.new = [4, 8], 8
    from rea.lm import resolve_device

    args.device = str(resolve_device(args.device))
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"device {args.device} ({gpu}), torch {torch.__version__}, dtype {args.dtype}", flush=True)
    deadline = time.monotonic() + args.budget
    for name in args.models:
        try:
            bench_model(name, args, emit, deadline)
        except Exception as err:  # noqa: BLE001 - a model that does not load: say so, go on with the next
            emit({"model": name, "error": f"{type(err).__name__}: {str(err).strip()[:200]}"})
    for line in verdicts(rows):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
