"""Speed of the single-token rare-output estimators (rea.single_token) on this machine, and an optional small
comparison.

    python bench/bench_single_token.py                      # calls/s and seconds per target, depths 1 2 4
    python bench/bench_single_token.py --table --targets 4  # + methods vs brute-force ground truth (depths 1 2)

Prints lines ``single_token_calls_per_s_depth{k}: X`` (plain forwards of one input = one call),
``single_token_grad_calls_per_s_depth{k}: X`` (forward + backward of the target logit, as ITGIS/MHIS spend them) and
``single_token_sec_per_target_{method}_depth{k}: X`` at the given budget.
"""

from __future__ import annotations

import argparse
import time

import torch

import rea.single_token as lp
from rea.lm import load_model


def calls_per_s(scorer, D, n=1024, batch=256, grad=False):
    g = torch.Generator().manual_seed(0)
    x = lp.sample_inputs(D, batch, g)
    scorer.target_grad(x[:16], 0) if grad else scorer(x[:16])  # warm-up
    t0 = time.perf_counter()
    for _ in range(max(1, n // batch)):
        scorer.target_grad(x, 0) if grad else scorer(x)
    return max(1, n // batch) * batch / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--dist", default="hex", choices=["hex", "camel", "english", "story"])
    ap.add_argument("--k", type=int, default=8, help="input length (hex/camel/english)")
    ap.add_argument("--budget", type=int, default=2 ** 10)
    ap.add_argument("--methods", nargs="+", default=["naive", "itgis", "mhis", "qld", "qld_published", "gld"])
    ap.add_argument("--table", action="store_true", help="also compare methods with brute-force ground truth")
    ap.add_argument("--table-depths", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--gt-samples", type=int, default=2 ** 16)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_model(device=args.device)
    build = {"hex": lp.hex_distribution, "camel": lp.camel_distribution, "english": lp.english_distribution}
    D = lp.story_distribution(lm.tokenizer) if args.dist == "story" else build[args.dist](lm.tokenizer, args.k)
    hyper = {"itgis": {"temperature": args.temperature}, "mhis": {"temperature": args.temperature}}
    for k in args.depths:
        sc = lp.truncated(lm, k)
        print(f"single_token_calls_per_s_depth{k}: {calls_per_s(sc, D):.0f}", flush=True)
        print(f"single_token_grad_calls_per_s_depth{k}: {calls_per_s(sc, D, grad=True):.0f}", flush=True)
        for m in args.methods:
            est = lp.estimate(m, sc, D, 100, args.budget, seed=0, **hyper.get(m, {}))
            print(f"single_token_sec_per_target_{m}_depth{k}: {est.info['seconds']:.2f}", flush=True)
    if not args.table:
        return
    import pandas as pd

    frames = []
    for k in args.table_depths:
        sc = lp.truncated(lm, k)
        counts = lp.argmax_counts(sc, D, args.gt_samples, seed=12345)
        p = counts / counts.sum()
        targets = lp.select_targets(p, args.targets, p_min=1e-3, p_max=2e-2)
        gt = lp.ground_truth(sc, D, targets, counts=counts)
        print(f"depth {k}: targets", [(int(t), lm.tokenizer.convert_ids_to_tokens(int(t)), int(h))
                                      for t, h in zip(gt.target, gt.hits)], flush=True)
        frames.append(lp.compare_methods(sc, D, gt.target, gt.p, args.methods, args.budget, seed=1, hyper=hyper,
                                         label={"depth": k}))
    rec = pd.concat(frames, ignore_index=True)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3g}".format):
        print(rec[["depth", "method", "target", "p_true", "p_hat", "ci_low", "ci_high", "n_calls", "seconds"]]
              .to_string(index=False))
        print(lp.results_table(rec).to_string(index=False))


if __name__ == "__main__":
    main()
