r"""``smc_ladder_tail``: replicates of the SMC sampler across a bias ladder (:mod:`rea.smc.ladder`), pooled into
Z(λ_k) and tail estimates with intervals (:mod:`rea.smc.ladder_estimate`); an adaptive ladder, progress bars, and a
resumable run directory.

Ladder: a list λ_1, …, λ_K (strictly monotone away from λ_0 = 0), or ``"auto"``: one *pilot* replicate (its own
random streams, its tokens counted in the result) chooses each next bias by :func:`rea.smc.ladder.next_lambda` (the
conditional ESS of the step equals ``ess_target``), toward high φ for ``side="upper"`` (λ < 0) and low φ for
``"lower"``, until the weighted share of its particles beyond the deepest threshold reaches ``target_fraction``,
|λ| reaches ``lambda_max``, or ``max_biases`` biases are placed. The replicates then run that fixed ladder, so each
of their Ẑ is exactly unbiased (a schedule adapted on the replicate's own particles would make it only consistent).

Run directory (``out_dir``): ``config.json`` (the settings that determine the replicates; a rerun with other
settings is refused, naming them), ``provenance.json`` (settings, seed, model, package versions, git commit, date),
``ladder.json`` (an ``"auto"`` ladder and its pilot's tokens) and ``replicate_XXXXX.npz``, each replicate's state
and history, rewritten atomically after every bias. A rerun (or a call after ``max_steps``) continues every
replicate from its last finished bias and draws what an uninterrupted run would. Thresholds, the interval settings
and (for a given ladder) the side are not part of the config: tails are recomputed from the histories; an ``"auto"``
ladder records its side and target (the deepest threshold).

``target_fraction`` defaults to 0.5: an exponential tilt serves a threshold best near the bias whose tilted median
sits at it, so the pilot goes on until half its weight is beyond the deepest threshold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rea import storage
from rea.arguments import as_1d_finite, check_confidence, check_positive_int, check_side
from rea.sampling import auto_batch_size, encode_prompt
from rea.smc.estimate import INTERVALS
from rea.smc.ladder import (
    HISTORY,
    PILOT_KEY,
    LadderReplicate,
    advance,
    check_ladder,
    conditional_ess,
    next_lambda,
    start_replicates,
)
from rea.smc.ladder_estimate import LadderResult
from rea.smc.prefix import prefix_observable
from rea.smc.run import open_run_dir
from rea.tps.shooting import BATCHING

FORMAT = "rea.smc-ladder/1"
_STATE = ("tokens", "logp", "phi", "log_w", "a_tokens", "a_logp", "a_phi", "ancestor")


def _number(name: str, value, low: float, high: float, closed_low: bool, closed_high: bool) -> float:
    """``value`` as a float in the interval (low, high) with the given closed ends, else a one-line ValueError."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and (value >= low if closed_low else value > low) and (value <= high if closed_high else value < high)
    if not ok:
        ends = ("[" if closed_low else "(") + f"{low:g}, {high:g}" + ("]" if closed_high else ")")
        raise ValueError(f"{name} must be a number in {ends}, got {value!r}")
    return float(value)


MOVE_PROPOSALS = ("model", "tilt")
"""How a move draws its suffix: from p_M (forward shooting) or from the local tilt at the bias
(:func:`rea.tps.kernel.local_tilt`; additive observables: ``"count"``, ``"logprob"``)."""


def _settings(lambdas, n_particles, n_moves, n_replicates, seed, tau, ess_target, target_fraction, lambda_max,
              max_biases, n_annealed, interval, batching, head_fraction=0.0, move_proposal="model") -> dict:
    """Check the run's settings (one-line ValueErrors naming the parameter) -> the checked values."""
    out = dict(n_particles=check_positive_int("n_particles", n_particles, minimum=2),
               n_moves=check_positive_int("n_moves", n_moves, minimum=0),
               n_replicates=check_positive_int("n_replicates", n_replicates),
               seed=check_positive_int("seed", seed, minimum=0),
               tau=_number("tau", tau, 0, 1, False, True),
               ess_target=_number("ess_target", ess_target, 0, 1, False, False),
               target_fraction=_number("target_fraction", target_fraction, 0, 1, False, True),
               lambda_max=_number("lambda_max", lambda_max, 0, np.inf, False, False),
               max_biases=check_positive_int("max_biases", max_biases),
               n_annealed=check_positive_int("n_annealed", n_annealed, minimum=0),
               head_fraction=_number("head_fraction", head_fraction, 0, 1, True, True))
    out["lambdas"] = "auto" if isinstance(lambdas, str) and lambdas == "auto" else list(check_ladder(lambdas))
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
    if batching not in BATCHING:
        raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
    if move_proposal not in MOVE_PROPOSALS:
        raise ValueError(f"move_proposal must be one of {MOVE_PROPOSALS}, got {move_proposal!r}")
    if move_proposal != "model" and out["head_fraction"] > 0:
        raise ValueError("move_proposal='tilt' cannot be combined with head moves: use head_fraction=0")
    out["move_proposal"] = move_proposal
    return out


def _file(path: Path, r: int) -> Path:
    return path / f"replicate_{r:05d}.npz"


def save_ladder_replicate(path: Path, r: int, rep: LadderReplicate) -> None:
    """Write replicate ``r``'s state and history atomically (``replicate_XXXXX.npz``)."""
    arrays = {f"h_{k}": v for k, v in rep.arrays().items()}
    arrays.update({name: getattr(rep, name) for name in _STATE}, log_norm=rep.log_norm, key=np.array(rep.key))
    with storage.atomic_path(_file(path, r)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_ladder_replicate(path: Path, r: int) -> LadderReplicate | None:
    """Replicate ``r`` from ``path`` if saved, else None."""
    if path is None or not _file(path, r).exists():
        return None
    with np.load(_file(path, r)) as z:
        n_biases = len(z["h_lam"])  # a history saved before "scored" existed: no head moves, none scored
        history = {name: list(z[f"h_{name}"]) if f"h_{name}" in z else [0] * n_biases for name in HISTORY}
        return LadderReplicate(tuple(int(v) for v in z["key"]), z["tokens"], z["logp"], z["phi"], z["log_w"],
                               float(z["log_norm"]), z["a_tokens"], z["a_logp"], z["a_phi"], z["ancestor"], history)


def _deepest(thresholds: np.ndarray, side: str) -> float:
    return float(thresholds.max() if side == "upper" else thresholds.min())


def _reached(rep: LadderReplicate, target: float, side: str) -> float:
    """The weighted share of ``rep``'s particles at or beyond ``target``."""
    w = np.exp(rep.log_w - rep.log_w.max())
    beyond = rep.phi >= target if side == "upper" else rep.phi <= target
    return float(w[beyond].sum() / w.sum())


def auto_ladder(lm, prompt, prompt_ids, obs, length, target, side, s: dict, batching, progress) -> dict:
    """The pilot run of an ``"auto"`` ladder (module docstring) -> {"lambdas", "reached", "cess" (the conditional
    ESS fraction of each step, as placed), "pilot_tokens"}."""
    sign = -1 if side == "upper" else 1
    limit = sign * s["lambda_max"]
    pilot = start_replicates(lm, prompt, obs, [PILOT_KEY], s["n_particles"], 0, length, s["seed"])[0]
    cess = []
    with tqdm(desc="smc-ladder pilot", unit="bias", disable=not progress) as bar:
        while (pilot.n_biases <= s["max_biases"] and pilot.lam != limit
               and _reached(pilot, target, side) < s["target_fraction"]):
            lam = next_lambda(pilot.log_w, pilot.phi, pilot.lam, sign, s["ess_target"], limit)
            cess.append(conditional_ess(pilot.log_w, pilot.phi, lam - pilot.lam))
            advance(lm, prompt_ids, obs, [pilot], lam, s["n_moves"], s["tau"], s["seed"], batching,
                    head_fraction=s["head_fraction"], move_proposal=s["move_proposal"])
            bar.update(1)
            bar.set_postfix(lam=f"{lam:.3g}", refresh=False)
    return {"lambdas": [float(x) for x in pilot.history["lam"][1:]],
            "reached": _reached(pilot, target, side) >= s["target_fraction"], "cess": cess,
            "pilot_tokens": int(np.sum(pilot.history["generated"]))}


def _resolve_ladder(lm, prompt, prompt_ids, obs, length, path, thresholds, side, s, batching, progress) -> dict:
    """The ladder: the given list, or an ``"auto"`` one from ``path/ladder.json`` or a fresh pilot."""
    if s["lambdas"] != "auto":
        return {"lambdas": s["lambdas"], "reached": None, "pilot_tokens": 0}
    file = None if path is None else path / "ladder.json"
    if file is not None and file.exists():
        return json.loads(file.read_text())
    ladder = auto_ladder(lm, prompt, prompt_ids, obs, length, _deepest(thresholds, side), side, s, batching, progress)
    if not ladder["lambdas"]:
        raise ValueError(f"lambdas='auto' placed no bias: the pilot's particles already reach the deepest threshold "
                         f"{_deepest(thresholds, side):g} at λ = 0 (share ≥ target_fraction); estimate it directly")
    if file is not None:
        with storage.atomic_path(file) as tmp:
            Path(tmp).write_text(json.dumps(ladder, indent=1))
    return ladder


def _run_groups(lm, prompt, prompt_ids, obs, length, lams, path, s, batch_size, batching, max_steps, progress):
    """Run every replicate through ``lams`` (groups of replicates as one batch; laggards of a group catch up
    first), saving each after every bias -> the replicates, and whether all finished."""
    n, rows = s["n_replicates"], s["n_particles"] + s["n_annealed"]
    reps = {r: rep for r in range(n) if (rep := load_ladder_replicate(path, r)) is not None}
    per = max(1, batch_size // rows)
    stop = {r: (reps[r].n_biases if r in reps else 1) + (max_steps if max_steps is not None else len(lams))
            for r in range(n)}
    todo = sum(max(0, min(stop[r], len(lams) + 1) - (reps[r].n_biases if r in reps else 1)) for r in range(n))
    with tqdm(total=todo * rows * s["n_moves"], desc="smc-ladder", unit="move", disable=not progress) as bar:
        for lo in range(0, n, per):
            group = list(range(lo, min(n, lo + per)))
            fresh = [r for r in group if r not in reps]
            for r, rep in zip(fresh, start_replicates(lm, prompt, obs, [(1, r) for r in fresh], s["n_particles"],
                                                      s["n_annealed"], length, s["seed"]) if fresh else []):
                reps[r] = rep
                if path is not None:
                    save_ladder_replicate(path, r, rep)
            while True:
                live = [r for r in group if reps[r].n_biases < min(stop[r], len(lams) + 1)]
                if not live:
                    break
                k = min(reps[r].n_biases for r in live)
                step = [r for r in live if reps[r].n_biases == k]
                advance(lm, prompt_ids, obs, [reps[r] for r in step], lams[k - 1], s["n_moves"], s["tau"], s["seed"],
                        batching, on_moves=bar.update, head_fraction=s["head_fraction"],
                        move_proposal=s["move_proposal"])
                for r in step if path is not None else ():
                    save_ladder_replicate(path, r, reps[r])
    done = all(reps[r].n_biases == len(lams) + 1 for r in range(n))
    return [reps[r] for r in range(n)], done


def smc_ladder_tail(lm, prompt: str, length: int, observable, thresholds, lambdas="auto", n_particles: int = 500,
                    n_moves: int = 10, n_replicates: int = 10, seed: int = 0, side: str = "upper", tau: float = 0.5,
                    ess_target: float = 0.5, target_fraction: float = 0.5, lambda_max: float = 20.0,
                    max_biases: int = 50, n_annealed: int = 0, tokens=None, confidence: float = 0.95,
                    interval: str = "cox", batch_size: int | None = None, out_dir=None, max_steps: int | None = None,
                    progress: bool = True, batching: str = "auto", head_fraction: float = 0.0,
                    move_proposal: str = "model") -> LadderResult:
    """Tail probabilities P(φ ≥ a) (``side="upper"``; ``"lower"``: P(φ ≤ a)) at ``thresholds`` ``[S]`` and
    Z(λ_k) = E_{p_M}[e^{−λ_k φ}] along a bias ladder, by ``n_replicates`` independent runs of the SMC sampler of
    :mod:`rea.smc.ladder` (N = ``n_particles`` particles, m = ``n_moves`` forward-shooting moves per particle and bias).

    ``observable``: ``"repeats"``, ``"logprob"``, ``"count"`` (with ``tokens``), ``"ari"`` or a callable
    ``fn(tokens[B, L], logp[B, L]) -> φ[B]`` (:func:`rea.smc.prefix_observable`). ``lambdas``: a list λ_1..λ_K or
    ``"auto"`` (module docstring; ``ess_target``, ``target_fraction``, ``lambda_max``, ``max_biases``). ``tau``:
    resample when ESS < τN, τ in (0, 1]. ``n_annealed``: J annealed chains per replicate beside the particles, for the
    stuck-chain diagnostic (their tokens are counted apart). ``batch_size``: rows per decode (whole replicates of N + J
    rows). ``out_dir``: resumable run directory; ``max_steps``: advance each replicate by at most this many biases in
    this call (the result then has ``complete=False``). ``batching``: how the moves share the decoder
    (:data:`rea.tps.shooting.BATCHING`). ``head_fraction``: the probability in [0, 1] that a move is a head move
    (:func:`rea.tps.kernel.head_moves`) rather than forward shooting; recorded in the config only when > 0 (a run
    directory without it ran 0). Returns :class:`rea.smc.ladder_estimate.LadderResult` (``.p``, ``.ci_low``,
    ``.ci_high`` ``[S]``, ``.log_z`` ``[K+1]``, ``.tokens``, ``.per_bias()``). ``move_proposal``: ``"model"``
    (forward shooting from p_M) or ``"tilt"`` (suffixes from the local tilt at each bias, with the
    Metropolis–Hastings correction: :func:`rea.tps.kernel.proposal_moves`; ``"count"`` and ``"logprob"`` only);
    recorded in the config only when not ``"model"``.
    """
    s = _settings(lambdas, n_particles, n_moves, n_replicates, seed, tau, ess_target, target_fraction, lambda_max,
                  max_biases, n_annealed, interval, batching, head_fraction, move_proposal)
    confidence, side = check_confidence(confidence), check_side(side)
    thr = as_1d_finite("thresholds", thresholds)
    if max_steps is not None:
        max_steps = check_positive_int("max_steps", max_steps)
    prompt_ids = encode_prompt(lm, prompt, length)
    obs = prefix_observable(observable, lm, prompt, tokens)
    if move_proposal == "tilt" and obs.name not in ("count", "logprob"):
        raise ValueError(f"move_proposal='tilt' needs an additive observable ('count' or 'logprob'), got {obs.name!r}")
    config = {"format": FORMAT, "model": getattr(lm, "name", type(lm).__name__), "prompt": prompt, "length": length,
              "observable": obs.name, "tokens": None if tokens is None else [str(t) for t in np.atleast_1d(tokens)],
              "side": side, **{k: v for k, v in s.items() if k != "n_replicates" and (k != "head_fraction" or v)
                 and (k != "move_proposal" or v != "model")}}
    if s["lambdas"] == "auto":
        config["target"] = _deepest(thr, side)
    else:
        config = {k: v for k, v in config.items() if k not in ("side", "ess_target", "target_fraction", "lambda_max",
                                                                "max_biases")}  # an explicit ladder serves both tails
    path = open_run_dir(out_dir, config, what="an SMC-ladder run", kind="smc_ladder")
    ladder = _resolve_ladder(lm, prompt, prompt_ids, obs, length, path, thr, side, s, batching, progress)
    rows = batch_size or auto_batch_size(lm, len(prompt_ids) + length, cap=max(n_particles + n_annealed, 4096))
    reps, done = _run_groups(lm, prompt, prompt_ids, obs, length, ladder["lambdas"], path, s,
                             check_positive_int("batch_size", rows), batching, max_steps, progress)
    prov = storage.provenance(**config, n_replicates=n_replicates, ladder=ladder, kind="smc_ladder")
    return LadderResult(thr, side, confidence, interval, [rep.arrays() for rep in reps],
                        {**config, "n_replicates": n_replicates, "ladder": ladder}, ladder["pilot_tokens"], done, prov)
