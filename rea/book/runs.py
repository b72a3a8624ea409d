"""The runs chapters share: TPS runs and direct samples, computed once and reloaded by whichever chapter comes next.

* :func:`real_tps_configs`, :func:`toy_tps_config` -- the :class:`rea.tps.TPSConfig` of the shared runs, built from a
  chapter's settings (:func:`rea.book.profiles.chapter_settings`, table :data:`rea.book.profiles.SHARED_TPS`).
* :func:`cached_tps`, :func:`cached_samples` -- run or sample once per (spec, model, package source) under
  :func:`book_runs_dir`, holding a file lock so that two chapters executing at once share the work.
* :func:`direct_seed` -- the seed of direct samples, independent of the chains started from the same seed.
* :func:`toy_exchange_config` -- the toy run's replica-exchange counterpart; :func:`chain_bootstrap` -- bootstrap
  replicates over a run's chains and its direct samples.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from rea.storage import file_lock


def book_runs_dir() -> Path:
    """Where chapters share TPS runs and direct samples: ``$REA_BOOK_RUNS`` if set, else ``$REA_CACHE/book-runs``
    (default ``~/.cache/rea/book-runs``). The golden tests point ``REA_BOOK_RUNS`` at a fresh folder so that every
    number is recomputed."""
    import os

    from rea.lm import cache_dir

    return Path(os.environ["REA_BOOK_RUNS"]) if os.environ.get("REA_BOOK_RUNS") else cache_dir() / "book-runs"


def _run_key(kind: str, model: str, spec: dict) -> str:
    """Cache key of a shared run: its spec, the model and a hash of the package's source (so code changes rerun)."""
    import hashlib
    import json

    from rea.book.cache import ROOT, package_hash

    code = package_hash(ROOT)
    blob = json.dumps({**spec, "kind": kind, "model": model, "rea": code}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def cached_tps(lm, config, progress: bool = False):
    """Run annealed TPS once per (config, model, package source) and reuse it: :func:`rea.tps.run_tps` into
    ``book_runs_dir()/<hash>/``, resuming an interrupted run and just loading a finished one.

    Chapters 3–6 call this with the same :class:`rea.tps.TPSConfig`, so the expensive run happens in whichever
    chapter executes first. ``checkpoint_every`` is not part of the key (it does not change the results).
    ``config`` may also be a dict ``{name: TPSConfig}`` of runs of one prompt and length: those not cached yet then
    run together, their chains as one batch of the model (:func:`rea.tps.run_tps_many`), and the results come back
    as a dict with the same keys. Returns the :class:`rea.tps.TPSResult` (or the dict of them).
    """
    if isinstance(config, dict):
        return dict(zip(config, _cached_runs(lm, list(config.values()), progress)))
    return _cached_runs(lm, [config], progress)[0]


def _cached_runs(lm, configs: list, progress: bool) -> list:
    """The cached TPS results of ``configs``, computing the missing ones together."""
    from rea.tps import CHECKPOINT, load_tps, run_tps_many

    outs = []
    for config in configs:
        spec = config.to_dict()
        spec.pop("checkpoint_every", None)
        spec["model"] = lm.name
        outs.append(book_runs_dir() / _run_key("tps", lm.name, spec))
    with contextlib.ExitStack() as locks:  # two chapters executing at once share the runs instead of racing
        for out in outs:
            locks.enter_context(file_lock(out))
        todo = [i for i, out in enumerate(outs) if not (out / "records.parquet").exists()]
        fresh = dict(zip(todo, run_tps_many(lm, [configs[i] for i in todo], [outs[i] for i in todo],
                                            progress=progress, resume=[(outs[i] / CHECKPOINT).exists()
                                                                       for i in todo]))) if todo else {}
        return [fresh[i] if i in fresh else load_tps(out, lm=lm, config=config)
                for i, (config, out) in enumerate(zip(configs, outs))]


def direct_seed(seed: int) -> int:
    """The seed of a chapter's direct samples: a stream independent of the TPS chains drawn with ``seed``.

    :func:`rea.tps.run_tps` starts its 2J chains from ``sample(..., seed)``, completions 0..2J−1; direct samples
    drawn with the same seed would repeat them. ``numpy.random.SeedSequence([seed, "direct"])`` gives another key.
    """
    tag = int.from_bytes(b"direct", "little")
    return int(np.random.SeedSequence([int(seed), tag]).generate_state(1, dtype=np.uint32)[0])


def cached_samples(lm, prompt: str, n: int, length: int, seed: int = 0):
    """Direct samples of the model (:func:`rea.sampling.sample` with :func:`direct_seed` of ``seed``), stored once
    under ``book_runs_dir()`` and reloaded by later chapters (the same completions, since completion i depends only
    on (seed, i))."""
    from rea import storage
    from rea.sampling import sample

    stream = direct_seed(seed)
    path = book_runs_dir() / (_run_key("direct", lm.name, dict(prompt=prompt, n=n, length=length, seed=stream))
                              + ".parquet")
    with file_lock(path):
        if path.exists():
            return storage.load_samples(path)
        out = sample(lm, prompt, n=n, length=length, seed=stream, progress=False)
        storage.save_samples(out, path, storage.provenance(model=lm.name, prompt=prompt, n=n, length=length,
                                                           seed=stream))
    return out


def real_tps_configs(B: dict, prompt: str, seed: int) -> dict:
    """The shared real-model TPS configs ``{"ari": ..., "logprob": ...}`` of a chapter's settings ``B``.

    Uses the knobs ``length``, ``n_chains``, ``n_steps``, ``lambdas_ari``, ``lambdas_logprob`` (|λ|, used with both
    signs), ``checkpoint_every`` and ``record_tokens_every`` of :data:`rea.book.profiles.SHARED_TPS`.
    """
    from rea.tps import TPSConfig

    return {obs: TPSConfig(prompt=prompt, length=B["length"], lambdas_pos=list(B[f"lambdas_{obs}"]),
                           n_steps=B["n_steps"], n_chains=B["n_chains"], seed=seed, observable=obs,
                           record_tokens_every=B["record_tokens_every"], checkpoint_every=B["checkpoint_every"])
            for obs in ("ari", "logprob")}


def exchange_tps_configs(B: dict, prompt: str, seed: int) -> dict:
    """The replica-exchange counterparts ``{"ari": ..., "logprob": ...}`` of :func:`real_tps_configs`: the same
    biases, chains (as ladders), moves per bias and seed, every bias at once, swap rounds every
    ``B["exchange_every"]`` moves (:mod:`rea.tps.exchange`)."""
    import dataclasses

    return {obs: dataclasses.replace(c, exchange_every=B["exchange_every"])
            for obs, c in real_tps_configs(B, prompt, seed).items()}


def toy_tps_config(B: dict, seed: int = 0):
    """The shared toy-LM TPS config (observable Repeats, biases ±``B["toy_lambdas"]``) of a chapter's settings ``B``.

    Uses the ``toy_*`` knobs of :data:`rea.book.profiles.SHARED_TPS`; the prompt is the toy LM's
    :data:`rea.lm.DEFAULT_PROMPT`.
    """
    from rea.lm import DEFAULT_PROMPT
    from rea.tps import TPSConfig

    return TPSConfig(prompt=DEFAULT_PROMPT, length=B["toy_length"], lambdas_pos=list(B["toy_lambdas"]),
                     n_steps=B["toy_steps"], n_chains=B["toy_chains"], seed=seed, observable="repeats",
                     checkpoint_every=B["toy_checkpoint_every"], record_tokens_every=B["toy_record_tokens_every"])


def toy_exchange_config(B: dict, seed: int = 0):
    """The replica-exchange counterpart of :func:`toy_tps_config`: the same biases, chains (as ladders), moves per
    bias and seed, every bias at once, swap rounds every ``B["exchange_every"]`` moves (:mod:`rea.tps.exchange`)."""
    import dataclasses

    return dataclasses.replace(toy_tps_config(B, seed), exchange_every=B["exchange_every"])


def chain_bootstrap(kept, direct_phi, stat, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates ``[n_boot, ...]`` of ``stat(direct_phi*, kept*)`` over the independent units of a TPS run
    pooled with direct samples: the direct samples ``direct_phi`` ``[N]`` resampled with replacement, and the chains
    of ``kept`` (post-burn-in records, columns ``chain``, ``lam``) resampled with replacement within each direction
    (the sign of λ; a chain keeps all its biases), so that each replicate has as many chains per direction as
    ``kept``. ``stat`` returns a number or an array; the result stacks them. For annealed runs, whose chains are
    independent (a replica-exchange ladder spans both directions: resample ladders instead)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    chains = {c: g for c, g in kept.groupby("chain")}
    sides = {}
    for c, g in chains.items():
        sides.setdefault(int(np.sign(g["lam"].iloc[0])), []).append(c)
    direct_phi = np.asarray(direct_phi)
    out = []
    for _ in range(n_boot):
        pick = [c for ids in sides.values() for c in rng.choice(ids, len(ids))]
        out.append(stat(direct_phi[rng.integers(0, direct_phi.size, direct_phi.size)],
                        pd.concat([chains[c] for c in pick], ignore_index=True)))
    return np.asarray(out)
