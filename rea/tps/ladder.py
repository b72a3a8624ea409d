r"""An adaptive bias ladder: short pilot runs place the biases of one direction so that neighbours overlap.

MBAR joins the tilted ensembles p_λ ∝ e^{−λφ} p_M only where neighbouring biases overlap: the paper requires an
overlap O_{k,k+1} ≥ 0.03 (MBAR overlap matrix, Klimovich et al. 2015); about 0.1–0.3 is efficient (more wastes
biases, less inflates the error). A fixed grid is either too fine near λ = 0 or too coarse where φ's distribution
narrows. :func:`adaptive_ladder` chooses the grid from pilots instead:

1. λ_0 = 0: direct samples φ^{(0)} of the model.
2. From the samples φ^{(k)} at λ_k, the next step Δ > 0 (λ_{k+1} = λ_k + sΔ, s = −1 toward high φ, +1 toward low
   φ) is the one at which reweighting them to λ_{k+1} keeps an effective sample fraction equal to the band's
   geometric middle ā:

       ESS(Δ)/n = (Σ_n w_n)² / (n Σ_n w_n²) = ā,      w_n = e^{−sΔ φ_n^{(k)}},

   solved by bisection on log Δ (the fraction falls as Δ grows).
3. A pilot TPS at λ_{k+1} (J chains, ``pilot_steps`` moves, started from the pilot at λ_k's final states: an
   annealing step) gives φ^{(k+1)}; MBAR on both pilots' samples gives O_{k,k+1}. Below the band's lower edge, Δ is
   halved and the pilot redone (at most ``max_retries`` times).
4. Stop once the pilot's median φ is beyond the ``target`` threshold (the samples reach the tail to be estimated),
   or after ``max_biases`` biases.

The chosen ladder, its pilots' overlaps and their tokens are returned as a :class:`Ladder` and recorded with the run
(:func:`resolve_ladder`, the ``ladder`` field of :class:`rea.tps.TPSConfig`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rea import storage
from rea.observables import evaluate
from rea.sampling import sample
from rea.stats import MBARConvergenceError, TiltedMBAR
from rea.tps.config import TPSConfig
from rea.tps.records import tps_tokens

LADDER_FILE = "ladder.json"
"""Where a run with ``"auto"`` biases keeps its chosen ladder, so that a resumed run does not redo the pilots."""


@dataclass(frozen=True)
class Ladder:
    """An adaptive ladder: ``lambdas`` (|λ| increasing, one direction), the pilots' MBAR ``overlaps`` of neighbours
    (λ_0 = 0 → λ_1, λ_1 → λ_2, …), whether the last pilot's median φ ``reached`` the target, and the tokens the
    pilots generated."""

    lambdas: tuple
    overlaps: tuple
    reached: bool
    pilot_tokens: int

    def to_dict(self) -> dict:
        return {"lambdas": list(self.lambdas), "overlaps": list(self.overlaps), "reached": self.reached,
                "pilot_tokens": self.pilot_tokens}


def ess_fraction(phi: np.ndarray, dlam: float) -> float:
    """ESS/n of samples ``phi [n]`` reweighted by w = e^{−Δλ φ} (from bias λ to λ + Δλ)."""
    log_w = -dlam * np.asarray(phi, dtype=np.float64)
    w = np.exp(log_w - log_w.max())
    return float(w.sum() ** 2 / (len(w) * np.sum(w * w)))


def next_step(phi: np.ndarray, sign: int, aim: float) -> float:
    """The step Δ > 0 with ESS fraction ``aim`` when reweighting ``phi`` by e^{−sΔφ}; bisection on log Δ over
    [1e-6, 1e3] (φ without spread never loses ESS: then 1/(1 + |mean φ|)).

    As Δ → ∞ the weight goes to the samples at the extreme φ the bias favours (the maximum for s = −1), so the
    fraction falls only to f, the share of samples tied there (a discrete φ such as a count). The aim is taken above
    that floor, f + (1 − f)·``aim``, so that ties cannot send the step to the bracket's end.
    """
    phi = np.asarray(phi, dtype=np.float64)
    if np.ptp(phi) == 0:
        return 1.0 / (1.0 + abs(float(np.mean(phi))))
    floor = float(np.mean(phi == (phi.max() if sign < 0 else phi.min())))
    aim = floor + (1.0 - floor) * aim
    lo, hi = math.log(1e-6), math.log(1e3)
    for _ in range(60):
        mid = (lo + hi) / 2
        if ess_fraction(phi, sign * math.exp(mid)) > aim:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


def _beyond(phi: np.ndarray, target: float, sign: int) -> bool:
    """Whether the median of ``phi`` is past ``target`` in the direction the biases push (s = −1: above)."""
    return bool(np.median(phi) >= target) if sign < 0 else bool(np.median(phi) <= target)


def _pilot_overlap(phi_prev: np.ndarray, phi: np.ndarray, dlam: float) -> float:
    """MBAR overlap of two neighbouring pilots, p_{λ_k} taken as the reference state (the overlap of (λ_k, λ) is
    that of (0, λ − λ_k) on the same samples); 0 when MBAR cannot join them at all (it does not converge)."""
    try:
        return TiltedMBAR.from_states([phi_prev, phi], [0.0, dlam]).min_neighbour_overlap()
    except MBARConvergenceError:
        return 0.0


def adaptive_ladder(lm, prompt: str, length: int, observable, target: float, run_pilot, sign: int = -1,
                    n_chains: int = 8, pilot_steps: int = 40, overlap_band=(0.1, 0.3), max_biases: int = 12,
                    max_retries: int = 3, seed: int = 0) -> Ladder:
    """Choose the biases of one direction for tails beyond ``target`` (see the module docstring).

    ``run_pilot(config, out_dir, initial)`` runs one pilot (:func:`rea.tps.run_tps` with ``initial`` states, passed
    in by :mod:`rea.tps.run`). ``sign`` −1 places negative biases (upper tail, φ ≥ target), +1 positive ones
    (lower tail). The pilots use ``n_chains`` chains of ``pilot_steps`` moves per bias (burn-in: the first 10 %),
    and ``n_chains × pilot_steps`` direct samples at λ = 0.
    """
    low, high = overlap_band
    if not (0 < low < high < 1):
        raise ValueError(f"overlap_band must be (low, high) with 0 < low < high < 1, got {overlap_band!r}")
    if sign not in (-1, 1):
        raise ValueError(f"sign must be -1 (negative biases, upper tail) or +1, got {sign!r}")
    direct = sample(lm, prompt, n_chains * pilot_steps, length, seed=seed, progress=False)
    phi_prev, lam_prev = evaluate(observable, direct), 0.0
    states, tokens = direct[:n_chains], len(direct) * length
    lambdas, overlaps, aim = [], [], math.sqrt(low * high)
    with tempfile.TemporaryDirectory() as tmp:
        while len(lambdas) < max_biases and not _beyond(phi_prev, target, sign):
            step = next_step(phi_prev, sign, aim)
            for attempt in range(max_retries + 1):
                lam = lam_prev + sign * step
                config = TPSConfig(prompt=prompt, length=length, lambdas_pos=[lam] if sign > 0 else [],
                                   lambdas_neg=[lam] if sign < 0 else [], n_steps=pilot_steps, n_chains=n_chains,
                                   seed=seed + 1 + len(lambdas), observable=observable, checkpoint_every=10**9)
                pilot = run_pilot(config, Path(tmp) / f"{len(lambdas)}-{attempt}", states)
                tokens += tps_tokens(pilot, length) - n_chains * length  # the initial states were given
                phi = pilot.post_burn_in(0.1)["phi"].to_numpy()
                overlap = _pilot_overlap(phi_prev, phi, lam - lam_prev)
                if overlap >= low:
                    break
                step /= 2
            lambdas.append(float(lam))
            overlaps.append(float(overlap))
            phi_prev, lam_prev, states = phi, lam, pilot.final
    return Ladder(tuple(lambdas), tuple(overlaps), _beyond(phi_prev, target, sign), int(tokens))


def resolve_ladder(lm, config: TPSConfig, out_dir, run_pilot) -> TPSConfig:
    """``config`` with ``"auto"`` biases replaced by an :func:`adaptive_ladder` toward ``config.target`` (pilots
    with the run's chains, seed and observable, run by ``run_pilot``), recorded in ``config.ladder`` and in
    ``out_dir/ladder.json``; a ladder already chosen for ``out_dir`` is reused. A config without ``"auto"`` is
    returned as it is."""
    if not config.auto_direction:
        return config
    sign = config.auto_direction
    path = Path(out_dir) / LADDER_FILE
    spec = {"prompt": config.prompt, "length": config.length, "observable": config.observable_name,
            "target": config.target, "sign": sign, "n_chains": config.n_chains, "seed": config.seed}
    stored = json.loads(path.read_text()) if path.exists() else None
    if stored is not None and stored["spec"] == spec:
        ladder = Ladder(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored["ladder"].items()})
    else:
        ladder = adaptive_ladder(lm, config.prompt, config.length, config.observable, config.target, run_pilot, sign,
                                 n_chains=config.n_chains, seed=config.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        with storage.atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps({"spec": spec, "ladder": ladder.to_dict()}, indent=1))
    lams = list(ladder.lambdas)
    return dataclasses.replace(config, lambdas_pos=lams if sign > 0 else [], lambdas_neg=lams if sign < 0 else [],
                               ladder=ladder.to_dict())
