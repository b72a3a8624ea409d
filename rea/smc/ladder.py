r"""The SMC sampler across a bias ladder: annealed importance sampling with resampling, forward shooting as the kernel.

Annealed forward-shooting TPS carries chains from bias to bias and trusts them to equilibrate; at strong bias they do
not, and nothing in the chains says so. Giving every chain an importance weight makes the annealing correct whether or
not the moves mix (Neal 2001; Del Moral, Doucet & Jasra 2006; Chopin & Papaspiliopoulos 2020, ch. 17). Targets:

    p_λ(x) = Z(λ)^{-1} e^{−λφ(x)} p_M(x),      Z(λ) = E_{p_M}[e^{−λφ}],      λ_0 = 0, λ_1, …, λ_K.

N particles start as direct samples of p_M with log-weights log w = 0 and log Ẑ = 0. For k = 1..K (:func:`advance`):

1. reweight: log w^i += −(λ_k − λ_{k−1}) φ(x^i)  (:func:`incremental_log_weights`);
2. resample (systematic, :func:`rea.smc.filter.systematic_resample`) when ESS = (Σw)²/Σw² < τN: log_norm +=
   log mean_i w^i, the ancestors are drawn ∝ w, and w := 1 (Ẑ is unchanged);
3. move: m moves of every particle at λ_k (:func:`rea.tps.kernel.shoot`), each a forward-shooting move
   (acceptance min(1, e^{−λ_k Δφ})) or, with probability ``head_fraction`` drawn independently of the state, a head
   move (:func:`rea.tps.kernel.head_moves`: new head x'_{<c} from p_M, old suffix s kept, acceptance
   min(1, p_M(s | x'_{<c}) / p_M(s | x_{<c}) · e^{−λ_k Δφ})); both, and so their mixture, are p_{λ_k}-invariant.
   The weights do not change.

Then at every k, with W^i = w^i / Σ_j w^j the normalised weights of the moved particles,

    Ẑ(λ_k) = exp(log_norm_k) · (1/N) Σ_i w^i                is unbiased for Z(λ_k)/Z(0),
    Σ_i W^i f(x^i)                                          is consistent for E_{λ_k}[f],
    P̂_k(φ ≥ a) = Ẑ(λ_k) Σ_i W^i e^{λ_k φ(x^i)} 1[φ(x^i) ≥ a]   is unbiased for P(φ ≥ a)  (≤ a: the lower tail),

for any m ≥ 0: the moves only reduce the variance (a kernel that does not mix costs precision, never correctness).
The ladder can be given, or chosen by :func:`next_lambda` (conditional ESS, Zhou, Johansen & Aston 2016).

Beside the particles, a replicate may carry J *annealed chains*: the paper's method on the same ladder and kernel
(direct samples, m moves per bias, never weighted nor resampled). Their plain mean of φ is what annealed TPS reports;
its gap from the particles' weighted mean, in standard errors, is the stuck-chain diagnostic
(:meth:`rea.smc.ladder_estimate.LadderResult.per_bias`).

Limits (measured on the toy, adverb count): unbiased is not the same as reliable. Forward shooting regenerates a
suffix from p_M, so at strong bias only moves with late cuts are accepted and the early tokens stay as they were
drawn at weaker biases (``frozen`` in the history: the share of positions no accepted move at λ_k changed, 0.8 at
λ = −3 for L = 10). The weights then importance-sample those early tokens from a population that rarely holds what
p_λ needs there, and Ẑ and the tails become heavy-tailed: unbiased over many replicates, but a typical replicate
falls short, the ESS stays high, and intervals from a few replicates miss. L = 20, N = 1000, m = 10, λ by 0.25 to
−3, 10 replicates: weighted means within 2.1 SE of the exact tilted means down to λ = −1.5, then −2.9, −4.6, −13
and −24 SE at λ = −1.75, −2, −2.5, −3 (log Ẑ(−3) = 11.9 against 14.6); L = 10, N = 1000, m = 5: within 2.2 SE down
to −2, −15 SE at −3. L = 6, N = 150, m = 3, λ = −1 … −5, 100 repeats of 5 replicates: Cox's interval covers
P(φ ≥ 3) = 1.7e-3 in 96 % of them, but P(φ = 6) = 1.6e-7 gets an estimate in 35 and is covered in 4. More
particles push the limit out only as fast as the population holds the needed prefixes; moves that refresh early
tokens are what fix it. Head moves (``head_fraction`` > 0, :func:`rea.tps.kernel.head_moves`) refresh the start
but do not fix it: they too propose from p_M, so at strong bias only short heads are accepted (L = 10, λ = −3:
weighted acceptance 0.27–0.30 for cuts c ≤ 2, 0.01–0.08 for c ≥ 4) and the middle of a completion stays frozen.
Measured (same settings, half the moves head moves, equal tokens generated), at λ = −3:
L = 10, m = 5: −8.9 SE instead of −15.9 (frozen 0.83 against 0.85), but m = 20: −5.4 against −1.8 SE; L = 20,
m = 10: −18.9 against −24.1 SE (log Ẑ(−3) = 12.3 against 11.9, exact 14.6; frozen 0.87 against 0.88); L = 6,
N = 150: P(φ = 6) gets an estimate in 30 of 100 repeats, covered in 4 (baseline 35, 4). Moves that propose
adverb-rich heads or middles (a tilted proposal, infilling) or SMC on prefixes (:mod:`rea.smc.filter`) remain.

The tilted proposal fixes it for additive observables: with ``move_proposal="tilt"`` every move draws its suffix from
the local tilt at λ_k (:func:`rea.tps.kernel.local_tilt`: for a token count, the model's logits + |λ_k| on the
counted tokens) and is accepted with the Metropolis–Hastings ratio (:func:`rea.tps.kernel.proposal_moves`), so cuts
at the start are accepted at strong bias too and no position stays frozen. Measured, adverb count: L = 6, N = 150,
3 moves, λ = −0.5 … −5 by 0.5, 100 repeats of 8 replicates: Cox's 95 % interval covers P(φ = 6) = 1.6e-7 in 93 of
100 repeats (forward shooting: 4), P(φ ≥ 3) in 94; L = 20, N = 250, 10 moves, ``"auto"`` ladder to |λ| ≤ 4
(7–8 biases), 12 repeats of 10 replicates, 96 % intervals: P(φ ≥ 10) = 1.4e-8 covered 12 of 12 (median 0.95× the
truth, relative RMSE 0.20), P(φ ≥ 14) = 1.7e-13 covered 11 of 12 (0.95×, 0.51), 2.1–2.4 × 10⁶ tokens per estimate.

Randomness: replicate r's initial completions are ``sample`` draws of the seed :func:`stream_seed` (seed, r); its
resampling uniform at bias k comes from ``default_rng([seed, RESAMPLE_STREAM, *key, k])`` and its moves' random
numbers (particles, then annealed chains; :func:`rea.tps.kernel.draw_moves`) from ``default_rng([seed,
MOVE_STREAM, *key, k])``, key = (1, r) (the adaptive pilot: (0, 0)). A replicate depends on (seed, r) only, not on
the batch it shares, and a run resumed at bias k draws what an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from rea.sampling import sample_streams
from rea.smc.filter import systematic_resample
from rea.tps.kernel import Moves, draw_moves, local_tilt, shoot

INIT_STREAM, RESAMPLE_STREAM, MOVE_STREAM = 0x5EC2, 0x5EC3, 0x5EC4
"""Tags of a replicate's random streams (apart from :mod:`rea.smc.filter`'s)."""
PILOT_KEY = (0, 0)
"""The random-stream key of the adaptive ladder's pilot; replicate r has key (1, r)."""
HISTORY = ("lam", "log_norm", "log_w", "phi", "ess", "resampled", "accepted", "generated", "n_unique", "n_ancestors",
           "frozen", "annealed_phi", "annealed_accepted", "annealed_generated", "scored")
"""What a replicate records at each bias k (see :class:`LadderReplicate`)."""


# --------------------------------------------------------------------------------------------- weights and schedule


def incremental_log_weights(phi, dlam: float) -> np.ndarray:
    """log g = −Δλ φ ``[N]``: the incremental weight of moving the target from p_λ to p_{λ+Δλ}, g = e^{−Δλ φ}."""
    return -float(dlam) * np.asarray(phi, dtype=np.float64)


def conditional_ess(log_w, phi, dlam: float) -> float:
    """Conditional ESS fraction of the step Δλ (Zhou, Johansen & Aston 2016):

        CESS/N = (Σ_i W^i g^i)² / Σ_i W^i (g^i)²,     g = e^{−Δλ φ},   W = w / Σ w,

    for log-weights ``log_w [N]`` and ``phi [N]``: 1 for Δλ = 0, falling as the step grows (the fraction of the
    particles the reweighting keeps effective, whatever the weights were before)."""
    log_w = np.asarray(log_w, dtype=np.float64)
    log_w = log_w - logsumexp(log_w)
    log_g = incremental_log_weights(phi, dlam)
    return float(np.exp(2 * logsumexp(log_w + log_g) - logsumexp(log_w + 2 * log_g)))


def next_lambda(log_w, phi, lam: float, sign: int, target: float, limit: float) -> float:
    """The next bias λ + sΔ (s = ``sign``: −1 toward high φ, +1 toward low φ) whose :func:`conditional_ess` is
    ``target``, by bisection on log Δ in [1e-8, |limit − λ|]; ``limit`` if even that step keeps the target.

    As Δ → ∞ the conditional ESS falls only to f, the weight of the particles tied at the extreme φ the bias favours
    (a count), so the aim is taken above that floor, f + (1 − f)·``target``, as :func:`rea.tps.ladder.next_step`
    does. Particles without spread in φ never lose ESS: then the step is 1/(1 + |mean φ|).
    """
    phi = np.asarray(phi, dtype=np.float64)
    room = abs(float(limit) - float(lam))
    if room <= 0:
        return float(limit)
    if np.ptp(phi) == 0:
        return float(lam + sign * min(room, 1.0 / (1.0 + abs(float(phi.mean())))))
    weights = np.exp(np.asarray(log_w) - logsumexp(log_w))
    floor = float(weights[phi == (phi.max() if sign < 0 else phi.min())].sum())
    aim = floor + (1.0 - floor) * target
    if conditional_ess(log_w, phi, sign * room) >= aim:
        return float(limit)
    lo, hi = math.log(1e-8), math.log(room)
    for _ in range(60):
        mid = (lo + hi) / 2
        if conditional_ess(log_w, phi, sign * math.exp(mid)) > aim:
            lo = mid
        else:
            hi = mid
    return float(lam + sign * math.exp((lo + hi) / 2))


def check_ladder(lambdas) -> tuple[float, ...]:
    """An explicit ladder λ_1, …, λ_K -> tuple of floats; with λ_0 = 0 prepended it must be finite and strictly
    monotone (one direction: all λ_k > 0 increasing, or all < 0 decreasing), else a one-line ValueError."""
    if isinstance(lambdas, (str, bytes)) or np.ndim(lambdas) != 1:
        raise ValueError(f"lambdas must be 'auto' or a list of biases, got {lambdas!r}")
    try:
        lams = tuple(float(v) for v in lambdas)
    except (TypeError, ValueError):
        raise ValueError(f"lambdas must be 'auto' or a list of numbers, got {lambdas!r}") from None
    if not lams:
        raise ValueError("lambdas is empty; pass 'auto' or at least one bias")
    if not all(math.isfinite(v) for v in lams):
        raise ValueError(f"lambdas must be finite, got {list(lams)}")
    steps = np.diff((0.0,) + lams)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        raise ValueError(f"lambdas must be strictly monotone away from λ_0 = 0 (e.g. -0.5, -1, -2), got {list(lams)}")
    return lams


def stream_seed(seed: int, key: tuple) -> int:
    """The ``sample`` seed of a replicate's initial completions: a 32-bit integer hashed from (seed, tag, *key)."""
    return int(np.random.SeedSequence([int(seed), INIT_STREAM, *key]).generate_state(1)[0])


# --------------------------------------------------------------------------------------------- one replicate


@dataclass
class LadderReplicate:
    """The particle system of one replicate and its record per bias.

    State: ``tokens`` int64 ``[N, L]``, ``logp`` ``[N, L]``, ``phi`` ``[N]``, ``log_w`` ``[N]`` (since the last
    resampling), ``log_norm`` (Σ over resamplings of log mean w); the annealed chains ``a_tokens``, ``a_logp``
    ``[J, L]``, ``a_phi`` ``[J]``; ``ancestor`` int ``[N]``: the direct sample at λ_0 each particle descends from.

    ``history[name]`` holds one entry per bias reached (k = 0 is λ_0 = 0, the direct samples), for ``name`` in
    :data:`HISTORY`: λ_k; log_norm and log_w ``[N]`` and φ ``[N]`` of the moved particles (so log Ẑ(λ_k) =
    log_norm + log mean w); the ESS fraction after the reweighting; whether it resampled; accepted moves and tokens
    generated (forward moves Σ L − c, head moves Σ c, rejected proposals included; at k = 0, N·L for the direct
    samples); distinct completions among the particles; distinct λ_0 ancestors; ``frozen``, the mean share of
    positions that no accepted move at λ_k changed (:attr:`rea.tps.kernel.Shot.frozen`); the annealed chains' φ
    ``[J]``, accepted moves and tokens; ``scored``, the suffix tokens the particles' head moves teacher-forced
    (Σ L − c; not in ``generated``). ``frozen`` says
    what the weights rest on: positions the moves at λ_k leave alone were drawn at weaker biases, and the particles
    are only an importance sample of them, however large the ESS.
    """

    key: tuple
    tokens: np.ndarray
    logp: np.ndarray
    phi: np.ndarray
    log_w: np.ndarray
    log_norm: float
    a_tokens: np.ndarray
    a_logp: np.ndarray
    a_phi: np.ndarray
    ancestor: np.ndarray
    history: dict = field(default_factory=lambda: {name: [] for name in HISTORY})

    @property
    def n_particles(self) -> int:
        return len(self.phi)

    @property
    def n_annealed(self) -> int:
        return len(self.a_phi)

    @property
    def n_biases(self) -> int:
        """Biases reached, λ_0 = 0 included."""
        return len(self.history["lam"])

    @property
    def lam(self) -> float:
        return self.history["lam"][-1]

    def reweight(self, dlam: float) -> float:
        """Multiply the weights by g = e^{−Δλ φ} -> the ESS fraction (Σw)²/(N Σw²) after it."""
        self.log_w = self.log_w + incremental_log_weights(self.phi, dlam)
        return float(np.exp(2 * logsumexp(self.log_w) - logsumexp(2 * self.log_w)) / self.n_particles)

    def resample(self, u: float) -> None:
        """Systematic resampling with the uniform ``u``: log_norm += log mean w, particles := ancestors, w := 1."""
        top = self.log_w.max()
        w = np.exp(self.log_w - top)
        self.log_norm += float(top + np.log(w.mean()))
        anc = systematic_resample(w, u)
        self.tokens, self.logp, self.phi = self.tokens[anc], self.logp[anc], self.phi[anc]
        self.ancestor = self.ancestor[anc]
        self.log_w = np.zeros(self.n_particles)

    def record(self, lam, ess, resampled, accepted, generated, frozen, a_accepted, a_generated, scored=0) -> None:
        """Append bias k's entry to the history (the current state after its moves)."""
        entry = dict(lam=float(lam), log_norm=float(self.log_norm), log_w=self.log_w.copy(), phi=self.phi.copy(),
                     ess=float(ess), resampled=bool(resampled), accepted=int(accepted), generated=int(generated),
                     n_unique=len(np.unique(self.tokens, axis=0)), n_ancestors=len(np.unique(self.ancestor)),
                     frozen=float(frozen), annealed_phi=self.a_phi.copy(),
                     annealed_accepted=int(a_accepted), annealed_generated=int(a_generated), scored=int(scored))
        for name in HISTORY:
            self.history[name].append(entry[name])

    def arrays(self) -> dict:
        """The history as arrays ``[K+1]`` (``log_w``, ``phi``: ``[K+1, N]``; ``annealed_phi``: ``[K+1, J]``)."""
        return {name: np.array(values) for name, values in self.history.items()}


def start_replicates(lm, prompt: str, observable, keys, n_particles: int, n_annealed: int, length: int,
                     seed: int) -> list[LadderReplicate]:
    """Replicates of ``keys`` at λ_0 = 0: N particles and J annealed chains each, N + J direct samples of p_M
    (the seed :func:`stream_seed` of (seed, key); all replicates decoded as shared batches), log w = 0."""
    n = n_particles + n_annealed
    drawn = sample_streams(lm, prompt, [(stream_seed(seed, key), n) for key in keys], length, progress=False)
    out = []
    for key, s in zip(keys, drawn):
        phi = observable(s.tokens, s.logp)
        rep = LadderReplicate(key, s.tokens[:n_particles], s.logp[:n_particles], phi[:n_particles],
                              np.zeros(n_particles), 0.0, s.tokens[n_particles:], s.logp[n_particles:],
                              phi[n_particles:], np.arange(n_particles))
        rep.record(0.0, 1.0, False, 0, n_particles * length, 0.0, 0, n_annealed * length)
        out.append(rep)
    return out


# --------------------------------------------------------------------------------------------- one bias


def advance(lm, prompt_ids, observable, reps: list[LadderReplicate], lam: float, n_moves: int, tau: float,
            seed: int, batching: str = "auto", on_moves=None, head_fraction: float = 0.0,
            move_proposal: str = "model") -> None:
    """Take the replicates ``reps`` (all at the same last bias) to bias ``lam``: reweight, resample where
    ESS < τN, then ``n_moves`` moves of every particle and annealed chain at ``lam`` (head moves with probability
    ``head_fraction``, forward shooting otherwise; with ``move_proposal="tilt"`` every move draws its suffix from
    the local tilt at ``lam``, :func:`rea.tps.kernel.local_tilt`), all replicates as one batch of the decoder;
    record the bias (see the module docstring)."""
    if len({rep.n_biases for rep in reps}) != 1:
        raise ValueError("advance: the replicates must stand at the same bias")
    k, length = reps[0].n_biases, reps[0].tokens.shape[1]
    ess, resampled, parts = [], [], []
    for rep in reps:
        ess.append(rep.reweight(lam - rep.lam))
        resampled.append(ess[-1] < tau)
        if resampled[-1]:
            rep.resample(float(np.random.default_rng([int(seed), RESAMPLE_STREAM, *rep.key, k]).random()))
        rng = np.random.default_rng([int(seed), MOVE_STREAM, *rep.key, k])
        parts += [draw_moves(rng, rep.n_particles, n_moves, length, head_fraction),
                  draw_moves(rng, rep.n_annealed, n_moves, length, head_fraction)]
    order = [(rep, annealed) for rep in reps for annealed in (False, True)]
    states = [(rep.a_tokens, rep.a_logp, rep.a_phi) if annealed else (rep.tokens, rep.logp, rep.phi)
              for rep, annealed in order]
    shot = shoot(lm, prompt_ids, np.concatenate([s[0] for s in states]), np.concatenate([s[1] for s in states]),
                 np.concatenate([s[2] for s in states]), lam, Moves.concat(parts), observable, batching, on_moves,
                 proposal=local_tilt(observable, lam) if move_proposal == "tilt" else None)
    lo, stats = 0, []
    for (rep, annealed), state in zip(order, states):
        hi = lo + len(state[2])
        new = (shot.tokens[lo:hi], shot.logp[lo:hi], shot.phi[lo:hi])
        if annealed:
            rep.a_tokens, rep.a_logp, rep.a_phi = new
        else:
            rep.tokens, rep.logp, rep.phi = new
        stats.append((int(shot.accepted[lo:hi].sum()), int(shot.generated[lo:hi].sum()),
                      float(np.mean(shot.frozen[lo:hi])) if hi > lo else 0.0, int(shot.scored[lo:hi].sum())))
        lo = hi
    for j, rep in enumerate(reps):
        (acc, gen, frozen, scored), (a_acc, a_gen, _, _) = stats[2 * j], stats[2 * j + 1]
        rep.record(lam, ess[j], resampled[j], acc, gen, frozen, a_acc, a_gen, scored)
