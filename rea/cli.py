"""The ``rea`` command line: ``rea info``, ``rea sample``, ``rea run`` (chapters through papermill) and ``rea sweep``
(tail probabilities over a grid of prompts, on Ray)."""

from __future__ import annotations

import argparse
import sys


def _info(args) -> int:
    import torch

    from rea import __version__
    from rea.lm import DEFAULT_MODEL, cache_dir, embedded_gguf, resolve_device

    print(f"rea {__version__}, torch {torch.__version__}")
    dev = resolve_device("auto")
    gpu = f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""
    print(f"device (auto): {dev}{gpu}; CPU threads: {torch.get_num_threads()}")
    print(f"cache (REA_CACHE): {cache_dir()}")
    try:
        where = embedded_gguf()
    except ValueError as err:
        where = f"missing: {err}"
    print(f"default model: {DEFAULT_MODEL} (GGUF: {where})")
    converted = cache_dir() / "smollm2-135m-instruct-q4_1" / "config.json"
    print(f"converted default model cached: {'yes' if converted.exists() else 'no (first load converts it, ~30 s)'}")
    return 0


def _sample(args) -> int:
    from rea.arguments import check_positive_int
    from rea.lm import check_model_name, load_model
    from rea.observables import ari, log_prob, repeats
    from rea.sampling import Temperature, sample
    from rea.storage import check_output_path, provenance, save_samples

    # every option is checked before the model is loaded (the prompt needs the tokenizer: sample() checks it)
    check_model_name(args.model, "--model")
    check_output_path(args.out, "--out")
    check_positive_int("-n", args.n)
    check_positive_int("--length", args.length)
    check_positive_int("--seed", args.seed, minimum=0)
    if args.batch_size is not None:
        check_positive_int("--batch-size", args.batch_size)
    proposal = Temperature(args.temperature) if args.temperature != 1.0 else None
    lm = load_model(args.model, device=args.device)
    samples = sample(
        lm, args.prompt, n=args.n, length=args.length, seed=args.seed, proposal=proposal,
        batch_size=args.batch_size, stop_at_eos=args.stop_at_eos,
    )
    observables = {"ari": ari(samples), "logprob": log_prob(samples), "repeats": repeats(samples)}
    save_samples(samples, args.out, provenance=provenance(**samples.meta), observables=observables)
    print(f"wrote {len(samples)} completions of {args.length} tokens to {args.out}")
    return 0


def _sweep(args) -> int:
    import os

    from rea.lm import check_model_name
    from rea.sweep import format_summary, read_prompts, run_sweep

    prompts = read_prompts(args.prompts, args.column)
    if not (args.address or os.environ.get("RAY_ADDRESS")):  # a cluster's workers may see other files and caches
        check_model_name(args.model, "--model")
    budget = {"length": args.length, "n_chains": args.n_chains, "n_steps": args.n_steps, "n_direct": args.n_direct,
              "lambdas": args.lambdas}
    table = run_sweep(prompts, model=args.model, observables=args.observable or ["repeats"],
                      thresholds=args.threshold, seeds=args.seed or [0], method=args.method, profile=args.profile,
                      side=args.side, out=args.out, budget=budget, workers=args.workers,
                      cpus_per_worker=args.cpus_per_worker, num_cpus=args.num_cpus, address=args.address,
                      device=args.device, max_attempts=args.max_attempts, progress=not args.no_progress)
    print(format_summary(table))
    a = table.attrs
    print(f"wrote {a['out']}/summary.csv: {len(table)} cells ({a['computed']} computed, {a['reused']} reused, "
          f"{a['failed']} failed) in {a['wall_s']:.0f} s")
    return 0


def _add_sweep(sub) -> None:
    w = sub.add_parser("sweep", help="tail probabilities over prompts × observables × thresholds × seeds, on Ray")
    w.add_argument("--prompts", required=True, help="a text file (one prompt per line) or a .csv/.parquet table")
    w.add_argument("--column", default=None, help="the prompts' column of a .csv/.parquet file (default: prompt)")
    w.add_argument("--model", default="smollm2-135m", help="model name, hub id or directory ('toy': exact toy LM)")
    w.add_argument("--observable", action="extend", nargs="+", help="ari, logprob, repeats (default repeats)")
    w.add_argument("--threshold", action="extend", nargs="+", type=float, required=True,
                   help="tail thresholds a: P(φ ≥ a) (with --side lower: P(φ ≤ a))")
    w.add_argument("--seed", action="extend", nargs="+", type=int, help="seeds (default 0)")
    w.add_argument("--method", default="tps", help="tps (TPS + MBAR, default) or direct")
    w.add_argument("--profile", default="quick", help="budget: ci, quick (default) or paper (the book's profiles)")
    w.add_argument("--side", default="upper", help="upper (P(φ ≥ a), default) or lower (P(φ ≤ a))")
    w.add_argument("--out", default="sweep", help="output folder (a re-run resumes it); default ./sweep")
    w.add_argument("--workers", type=int, default=None, help="Ray workers (default: one per GPU, else per core)")
    w.add_argument("--cpus-per-worker", type=int, default=1, help="cores (torch threads) of a CPU worker")
    w.add_argument("--num-cpus", type=int, default=None, help="cores of a local Ray (default: all)")
    w.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    w.add_argument("--device", default="auto", help="auto, cpu or cuda (workers ask for a GPU where there is one)")
    w.add_argument("--max-attempts", type=int, default=2, help="runs of a job whose worker process died")
    for knob in ("length", "n-chains", "n-steps", "n-direct"):
        w.add_argument(f"--{knob}", type=int, default=None, help=f"override the profile's {knob.replace('-', '_')}")
    w.add_argument("--lambdas", type=float, nargs="+", default=None, help="override the |λ| grid")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run(args, extra) -> int:
    from rea.book.runner import main as run_main

    return run_main([args.chapter, *extra])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rea", description="Rare event analysis of language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="device, cache and default model")
    s = sub.add_parser("sample", help="sample completions to Parquet")
    s.add_argument("--model", default="smollm2-135m", help="model name, hub id or directory (default: embedded)")
    s.add_argument("--prompt", required=True, help="prompt text")
    s.add_argument("-n", type=int, required=True, help="number of completions")
    s.add_argument("--length", type=int, required=True, help="completion length in tokens")
    s.add_argument("--seed", type=int, default=0, help="random seed (tokens depend only on seed and index)")
    s.add_argument("--temperature", type=float, default=1.0, help="proposal temperature (logq is recorded)")
    s.add_argument("--batch-size", type=int, default=None, help="override the memory-based batch size")
    s.add_argument("--stop-at-eos", action="store_true", help="end completions at EOS (padded)")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--out", required=True, help="output .parquet file")
    _add_sweep(sub)
    r = sub.add_parser("run", help="execute a chapter through papermill into runs/", add_help=False)
    r.add_argument("chapter")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command != "run" and extra:
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    try:
        if args.command == "info":
            return _info(args)
        if args.command == "sample":
            return _sample(args)
        if args.command == "sweep":
            return _sweep(args)
        return _run(args, extra)
    except (ValueError, KeyboardInterrupt) as err:
        msg = "interrupted" if isinstance(err, KeyboardInterrupt) else str(err)
        print(f"rea {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
