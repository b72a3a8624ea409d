"""Small helpers the chapters share: budgets by profile, glued numbers that are also printed, proposal scoring.

* :func:`budget` -- the knobs of a chapter for a profile (``"ci"`` tiny, ``"quick"`` CPU minutes, ``"paper"`` GPU),
  with explicit non-zero parameters winning over the profile's values.
* :func:`record` -- ``myst_nb.glue`` a number for the prose, print it, and log it for the golden checks.
* :func:`record_figure` -- glue a figure for a ``{glue:figure}`` directive and close it.
* :func:`score_proposal` -- teacher-forced log q(x) of given completions under any proposal (needed to evaluate
  every sample under every mixture component, [REA §3.3]).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

PROFILES = ("ci", "quick", "paper")


def budget(profile: str, table: dict[str, dict], **explicit) -> dict:
    """``table[profile]`` updated with the ``explicit`` values that are set (not 0, None, "" or []).

    A chapter's parameters use 0 for "from the profile", so ``-p n_samples 5000`` overrides just that knob.
    """
    if profile not in table:
        raise ValueError(f"profile must be one of {sorted(table)}, got {profile!r}")
    out = dict(table[profile])
    for key, value in explicit.items():
        if value not in (0, None, "", [], ()) or isinstance(value, bool):
            out[key] = value
    return out


TOLERANCES: dict[str, tuple[float, float]] = {
    "exact": (1e-9, 1e-12),   # exact answers of the toy (float64 arithmetic, no sampling): equal to the last digits
    "float": (1e-4, 1e-12),   # numbers through a float32 model: log-probs agree to ~1e-5 relative across kernels
    "volatile": (float("inf"), float("inf")),  # timings and round-off sizes: recorded, never compared
}
"""Golden tolerances ``(rtol, atol)`` by precision class: ``|x − x_golden| ≤ atol + rtol·|x_golden|``.

Integers, booleans and strings are compared exactly whatever the class. Measured (SmolLM2, 256 × 24 tokens, the same
tokens under other kernels and thread counts): per-token log-probs differ by ≤ 4.4e-5, 24-token sums by ≤ 2.7e-4 on
values of −30 to −60 (relative ≤ 1e-5), so ``"float"`` leaves a margin of ~10× on relative scale."""


def record(name: str, value, fmt: str = ".3g", unit: str = "", tol: str = "float") -> None:
    """Glue ``value`` under ``name`` (quote it with ``{glue:text}`name:.3g```) and print ``name = value``.

    ``tol`` names the precision class of the number (a key of :data:`TOLERANCES`): ``"exact"`` for exact toy-model
    answers, ``"float"`` (default) for anything computed through a model in float32, ``"volatile"`` for timings and
    sizes of round-off (checked by the chapter's own assertions, if at all). When the environment variable
    ``REA_RECORDS`` names a file, one JSON line ``{name, value, rtol, atol}`` is appended to it: the golden
    regression tests (:mod:`rea.book.golden`) compare those lines, not the printed text.
    """
    import json
    import os

    from myst_nb import glue

    if tol not in TOLERANCES:
        raise ValueError(f"tol must be one of {sorted(TOLERANCES)}, got {tol!r}")
    if isinstance(value, np.generic):
        value = value.item()
    glue(name, value, display=False)
    shown = format(value, fmt) if isinstance(value, (int, float, np.integer, np.floating)) else str(value)
    print(f"{name} = {shown}{unit}")
    log = os.environ.get("REA_RECORDS")
    if log:
        rtol, atol = TOLERANCES[tol]
        stored = value if isinstance(value, (bool, int, float, str)) else str(value)
        with open(log, "a") as fh:
            fh.write(json.dumps({"name": name, "value": stored, "rtol": rtol, "atol": atol}) + "\n")


def threshold_between(values, q: float) -> float:
    """A threshold near the ``q``-quantile of ``values`` that sits halfway between two distinct sample values.

    Counts such as #{φ_n ≥ a} at a threshold placed *on* a sample value (``np.quantile`` can return one) flip when
    float rounding on another machine moves that sample by 1e-6; halfway between the neighbouring distinct order
    statistics x_(k) < x_(k+1), k = ⌊q(n−1)⌋, the count is stable unless a value moves by half the gap.
    """
    x = np.unique(np.asarray(values, dtype=np.float64))
    if x.size < 2:
        raise ValueError(f"values must hold at least two distinct numbers, got {x.size}")
    if not 0 <= q <= 1:
        raise ValueError(f"q must be a quantile level in [0, 1], got {q!r}")
    k = min(int(np.searchsorted(x, np.quantile(values, q), side="right")) - 1, x.size - 2)
    k = max(k, 0)
    return float((x[k] + x[k + 1]) / 2)


def record_figure(name: str, fig) -> None:
    """Glue a matplotlib figure under ``name`` for ``{glue:figure}`` and close it (so it shows only there)."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, fig, display=False)
    plt.close(fig)


@torch.inference_mode()
def score_proposal(lm, prompt_ids, tokens, proposal=None, batch_size: int = 256) -> np.ndarray:
    """Per-token log q(x_τ | x_{<τ}) ``[N, L]`` of completions ``tokens[N, L]`` under ``proposal`` (teacher forced).

    ``proposal=None`` is the model itself (log p_M). One forward pass per batch; ``logits[:, P−1+τ]`` scores
    completion token τ, and ``proposal`` maps those logits before the log-softmax, exactly as the sampler does.
    """
    from rea.sampling import Proposal

    proposal = proposal or Proposal()
    tokens = np.asarray(tokens, dtype=np.int64)
    n, length = tokens.shape
    p = len(prompt_ids)
    out = np.zeros((n, length))
    for lo in range(0, n, batch_size):
        chunk = torch.as_tensor(tokens[lo : lo + batch_size], device=lm.device)
        ids = torch.cat([torch.tensor(list(prompt_ids), device=lm.device).expand(len(chunk), -1), chunk], dim=1)
        logits = lm.logits(ids)[:, p - 1 : p - 1 + length].float()
        flat = proposal(logits.reshape(-1, logits.shape[-1])).reshape(logits.shape)
        out[lo : lo + len(chunk)] = (
            torch.log_softmax(flat, -1).gather(2, chunk[..., None]).squeeze(2).double().cpu().numpy()
        )
    return out


# --------------------------------------------------------------------------------------------- shared real-model runs

REAL_TPS: dict[str, dict] = {
    # length L, chains J per direction, steps N per bias, biases per sign (|λ| grids below), direct samples
    "ci": dict(length=8, n_chains=2, n_steps=4, lambdas_ari=[0.05], lambdas_logprob=[0.01], n_direct=16),
    "quick": dict(length=24, n_chains=4, n_steps=40, lambdas_ari=[0.03, 0.1, 0.3],
                  lambdas_logprob=[0.01, 0.03, 0.1], n_direct=256),
    "paper": dict(length=100, n_chains=10, n_steps=40_000,
                  lambdas_ari=[0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2],
                  lambdas_logprob=[0.0005, 0.001, 0.002, 0.003, 0.005, 0.007, 0.01, 0.015, 0.02, 0.03],
                  n_direct=200_000),
}
"""The one real-model TPS budget chapters 3–6 share (same profile and knobs → the same cached run)."""


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
    ``book_runs_dir()/<hash>/`` with ``resume=True`` (a finished run is just loaded, an interrupted one continued).

    Chapters 4–6 call this with the same :class:`rea.tps.TPSConfig`, so the expensive run happens in whichever
    chapter executes first. Returns the :class:`rea.tps.TPSResult`.
    """
    from rea.tps import CHECKPOINT, load_tps, run_tps

    spec = config.to_dict()
    spec.pop("checkpoint_every", None)
    spec["model"] = lm.name
    out = book_runs_dir() / _run_key("tps", lm.name, spec)
    with _locked(out):  # two chapters executing at once share the run instead of racing for it
        if (out / "records.parquet").exists():
            return load_tps(out, lm=lm, config=config)
        return run_tps(lm, config, out, resume=(out / CHECKPOINT).exists(), progress=progress)


class _locked:
    """An exclusive ``fcntl`` lock on ``<path>.lock`` for the duration of a ``with`` block (no-op without fcntl)."""

    def __init__(self, path: Path):
        self.path = Path(str(path) + ".lock")

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "w")
        try:
            import fcntl

            fcntl.flock(self.fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        return self

    def __exit__(self, *exc):
        self.fh.close()  # closing releases the lock
        return False


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
    with _locked(path):
        if path.exists():
            return storage.load_samples(path)
        out = sample(lm, prompt, n=n, length=length, seed=stream, progress=False)
        storage.save_samples(out, path, storage.provenance(model=lm.name, prompt=prompt, n=n, length=length,
                                                           seed=stream))
    return out


def real_tps_configs(B: dict, prompt: str, seed: int, record_tokens_every: int | None = 1) -> dict:
    """The shared TPS configs ``{"ari": ..., "logprob": ...}`` of a :data:`REAL_TPS`-style budget ``B``."""
    from rea.tps import TPSConfig

    return {obs: TPSConfig(prompt=prompt, length=B["length"], lambdas_pos=list(B[f"lambdas_{obs}"]),
                           n_steps=B["n_steps"], n_chains=B["n_chains"], seed=seed, observable=obs,
                           record_tokens_every=record_tokens_every, checkpoint_every=max(B["n_steps"], 50))
            for obs in ("ari", "logprob")}


def max_run(tokens) -> np.ndarray:
    """Longest run of one repeated token per completion: int ``[N]`` for tokens ``[N, L]`` (1 = no repeats)."""
    tokens = np.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    best = np.ones(len(tokens), dtype=np.int64)
    cur = np.ones(len(tokens), dtype=np.int64)
    for t in range(1, tokens.shape[1]):
        same = tokens[:, t] == tokens[:, t - 1]
        cur = np.where(same, cur + 1, 1)
        best = np.maximum(best, cur)
    return best


TOY_TPS: dict[str, dict] = {
    "ci": dict(toy_length=20, toy_lambdas=[0.3, 0.6], toy_chains=3, toy_steps=40, toy_samples=2_000),
    "quick": dict(toy_length=30, toy_lambdas=[0.3, 0.6, 0.9], toy_chains=6, toy_steps=120, toy_samples=20_000),
    "paper": dict(toy_length=100, toy_lambdas=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], toy_chains=10,
                  toy_steps=4_000, toy_samples=200_000),
}
"""The toy-LM TPS budget (Repeats, both signs) chapters 3–6 share through :func:`cached_tps`."""


def book_budget(profile: str, **explicit) -> dict:
    """:func:`budget` over :data:`REAL_TPS` and :data:`TOY_TPS` merged (the knobs of chapters 3–6)."""
    return budget(profile, {p: {**REAL_TPS[p], **TOY_TPS[p]} for p in PROFILES}, **explicit)


def toy_tps_config(B: dict, seed: int = 0):
    """The shared toy-LM TPS config (observable Repeats, biases ±``B["toy_lambdas"]``) of a :func:`book_budget`."""
    from rea.lm import DEFAULT_PROMPT
    from rea.tps import TPSConfig

    return TPSConfig(prompt=DEFAULT_PROMPT, length=B["toy_length"], lambdas_pos=list(B["toy_lambdas"]),
                     n_steps=B["toy_steps"], n_chains=B["toy_chains"], seed=seed, observable="repeats",
                     checkpoint_every=10_000)
