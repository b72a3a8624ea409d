"""``smc_tail``: independent replicates of the SMC particle filter, pooled into Z(λ) and tail estimates with
intervals; progress bars, and a resumable run directory.

Each replicate is an independent run of N particles (:func:`rea.smc.filter.run_group`); replicates are decoded
several at a time as one batch (``batch_size`` rows, at least N). With ``out_dir``, every finished replicate is saved
there (``replicate_XXXXX.npz``: log Ẑ before the final weights, the final weights and φ, the ESS history) next to
``config.json`` (the settings that determine the replicates); a rerun with the same settings loads the finished ones
and runs only the rest, a rerun with other settings is refused. Tails at any thresholds can be recomputed from the
saved replicates, so ``thresholds`` and the interval settings are not part of the config.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rea.arguments import as_1d_finite, check_confidence, check_positive_int, check_side
from rea.sampling import auto_batch_size, encode_prompt
from rea.smc.estimate import INTERVALS, SMCResult
from rea.smc.filter import Replicate, run_group
from rea.smc.prefix import prefix_observable
from rea.storage import atomic_path, provenance

FORMAT = "rea.smc/1"


def _check_settings(lam, n_particles, n_replicates, seed, ess_threshold, interval):
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)) or not np.isfinite(lam):
        raise ValueError(f"lam must be a finite number, got {lam!r}")
    check_positive_int("n_particles", n_particles)
    check_positive_int("n_replicates", n_replicates)
    check_positive_int("seed", seed, minimum=0)
    if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, (int, float)) or not 0 <= ess_threshold <= 1:
        raise ValueError(f"ess_threshold must be a number in [0, 1] (a fraction of n_particles), got {ess_threshold!r}")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")


def _config(lm, prompt, length, obs, tokens, lam, n_particles, seed, ess_threshold) -> dict:
    """The settings that determine every replicate (what a resumed run must share)."""
    return {"format": FORMAT, "model": getattr(lm, "name", type(lm).__name__), "prompt": prompt, "length": length,
            "observable": obs.name, "tokens": None if tokens is None else [str(t) for t in np.atleast_1d(tokens)],
            "lam": float(lam), "n_particles": n_particles, "seed": seed, "ess_threshold": float(ess_threshold)}


def open_run_dir(out_dir, config: dict, what: str = "an SMC run", kind: str | None = None) -> Path | None:
    """Create ``out_dir`` with ``config.json`` (and, given ``kind``, ``provenance.json``: versions, machine, the
    config), or check that an existing one holds the same config: a one-line ValueError naming the settings that
    differ. ``None`` stays ``None`` (nothing written)."""
    if out_dir is None:
        return None
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    cfg = path / "config.json"
    if cfg.exists():
        old = json.loads(cfg.read_text())
        if old != config:
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise ValueError(f"out_dir {str(path)!r} holds {what} with other settings ({', '.join(diff)}); "
                             f"use another out_dir or the same settings to resume")
        return path
    if kind is not None:
        with atomic_path(path / "provenance.json") as tmp:
            Path(tmp).write_text(json.dumps(provenance(**config, kind=kind), indent=1))
    with atomic_path(cfg) as tmp:
        Path(tmp).write_text(json.dumps(config, indent=1))
    return path


def _file(path: Path, r: int) -> Path:
    return path / f"replicate_{r:05d}.npz"


def save_replicate(path: Path, rep: Replicate) -> None:
    """Write one finished replicate atomically (``replicate_XXXXX.npz``)."""
    with atomic_path(_file(path, rep.replicate)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, log_norm=rep.log_norm, log_w=rep.log_w, phi=rep.phi, ess=rep.ess, resampled=rep.resampled)


def load_replicate(path: Path, r: int) -> Replicate | None:
    """Replicate ``r`` from ``path`` if it was saved, else None."""
    f = _file(path, r)
    if not f.exists():
        return None
    with np.load(f) as z:
        return Replicate(r, float(z["log_norm"]), z["log_w"], z["phi"], z["ess"], z["resampled"])


def smc_tail(lm, prompt: str, length: int, observable, lam: float, thresholds, n_particles: int = 1000,
             n_replicates: int = 10, seed: int = 0, ess_threshold: float = 0.5, confidence: float = 0.95,
             tokens=None, side: str = "upper", interval: str = "cox", batch_size: int | None = None,
             out_dir=None, keep_particles: bool = False, progress: bool = True) -> SMCResult:
    """Tail probabilities P(φ ≥ a) (``side="upper"``; ``"lower"``: P(φ ≤ a)) at ``thresholds`` and Z(λ) = E[e^{−λφ}]
    for completions of ``length`` tokens of ``prompt``, by ``n_replicates`` independent SMC runs of ``n_particles``.

    ``observable``: ``"repeats"``, ``"logprob"``, ``"count"`` (with ``tokens``), ``"ari"`` or a callable
    ``fn(tokens[B, t], logp[B, t]) -> φ[B]`` of prefixes (:mod:`rea.smc.prefix`). ``lam`` is the bias of the weights
    G_t = e^{−λΔφ} (λ < 0 pushes particles toward high φ: choose it so the tilted mean of φ sits near the threshold of
    interest). Resampling (systematic) happens when ESS < ``ess_threshold``·N. ``batch_size``: rows per decode (a
    multiple of N is used; default: what memory allows, at least N). ``out_dir``: save finished replicates there and
    skip them on a rerun. ``keep_particles`` keeps the final particles' tokens and log-probs in memory (saved
    replicates hold no tokens, so it runs every replicate again).
    Returns :class:`rea.smc.estimate.SMCResult`.
    """
    _check_settings(lam, n_particles, n_replicates, seed, ess_threshold, interval)
    confidence, side = check_confidence(confidence), check_side(side)
    thr = as_1d_finite("thresholds", thresholds)
    prompt_ids = encode_prompt(lm, prompt, length)
    obs = prefix_observable(observable, lm, prompt, tokens)
    path = open_run_dir(out_dir, _config(lm, prompt, length, obs, tokens, lam, n_particles, seed, ess_threshold))
    done = {r: rep for r in range(n_replicates)
            if path is not None and not keep_particles and (rep := load_replicate(path, r)) is not None}
    todo = [r for r in range(n_replicates) if r not in done]
    rows = batch_size or auto_batch_size(lm, len(prompt_ids) + length, cap=max(n_particles, 4096))
    per = max(1, check_positive_int("batch_size", rows) // n_particles)
    with tqdm(total=len(todo) * length, desc="smc", unit="step", disable=not progress) as bar:
        for lo in range(0, len(todo), per):
            group = todo[lo:lo + per]
            for rep in run_group(lm, prompt_ids, obs, float(lam), length, n_particles, group, seed, ess_threshold,
                                 keep_particles, on_step=functools.partial(bar.update, len(group))):
                done[rep.replicate] = rep
                if path is not None:
                    save_replicate(path, rep)
    return SMCResult(float(lam), length, n_particles, seed, float(ess_threshold), confidence, interval, side, thr,
                     [done[r] for r in range(n_replicates)])
