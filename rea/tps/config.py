r"""The parameters of one TPS run: :class:`TPSConfig` and its bias schedules.

Each direction has its own schedule λ_1, …, λ_K of strictly increasing |λ| (positive biases favour low φ, negative
ones high φ, since p_λ ∝ e^{−λφ} p_M). Annealed (the paper's method): each chain spends ``n_steps`` moves at each bias
in turn, K_max × ``n_steps`` moves with K_max the longer schedule's length. Replica exchange (``exchange_every``):
every bias runs at once for ``n_steps`` moves, and neighbouring biases swap states (:mod:`rea.tps.exchange`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rea.arguments import check_positive_int
from rea.observables import get_observable


def bias_schedule(name: str, values, sign: int) -> tuple[float, ...]:
    """Check an annealing schedule of one direction -> the biases as a tuple of floats ``[K]``.

    ``values`` must be finite numbers of the direction's sign (``sign`` +1: λ ≥ 0, −1: λ ≤ 0) with strictly
    increasing |λ_1| < |λ_2| < … < |λ_K|; anything else raises a ValueError naming ``name``.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise ValueError(f"{name} must be a list of numbers, got {values!r}")
    try:
        lams = tuple(float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a list of numbers, got {values!r}") from err
    if not all(math.isfinite(v) for v in lams):
        raise ValueError(f"{name} must hold finite numbers, got {list(lams)}")
    if any(sign * v < 0 for v in lams):
        raise ValueError(f"{name} must hold {'non-negative' if sign > 0 else 'non-positive'} biases, got {list(lams)}")
    mags = [abs(v) for v in lams]
    if any(b <= a for a, b in zip(mags, mags[1:])):
        raise ValueError(f"{name} must have strictly increasing |λ| (an annealing schedule), got {list(lams)}")
    return lams


@dataclass
class TPSConfig:
    """Parameters of one TPS run (annealed, or replica exchange with ``exchange_every``).

    Parameters
    ----------
    prompt : the prompt (non-empty).
    length : L, the fixed completion length in tokens.
    lambdas_pos : biases λ_1 < … < λ_K ≥ 0 of the positive direction (favour low φ); may be empty.
    lambdas_neg : biases 0 ≥ λ_1 > … > λ_K of the negative direction (favour high φ); ``None`` mirrors
        ``lambdas_pos`` (−λ); ``[]`` runs the positive direction only.
    n_steps : N, moves per bias (per chain, or per replica).
    n_chains : J, independent chains per direction (annealed) or independent ladders (replica exchange).
    seed : seeds the initial direct samples and the move RNG.
    observable : ``'ari'``, ``'logprob'``, ``'repeats'`` or a callable of a :class:`~rea.sampling.Samples` batch
        (recorded by name; resuming checks the name only).
    model : name of the model (``lm.name``); ``None`` takes it from the model passed to :func:`rea.tps.run_tps`.
    checkpoint_every : write a checkpoint every this many steps (changing it does not change the results).
    record_tokens_every : if set, store the tokens of every chain after every this-many-th step of each bias
        segment (steps s with (s+1) % record_tokens_every == 0).
    exchange_every : None (annealed) or M: replica exchange, all biases of both schedules at once as J ladders,
        neighbouring biases of a ladder trying to swap states after every M moves.
    target : with ``lambdas_neg="auto"`` (or ``lambdas_pos="auto"``): the threshold a of the tail φ ≥ a (φ ≤ a)
        to reach; :func:`rea.tps.run_tps` then places that direction's biases by pilot runs
        (:mod:`rea.tps.ladder`) and runs the other direction not at all.
    ladder : the record of an adaptive ladder (filled by :func:`rea.tps.run_tps`; leave None).
    """

    prompt: str
    length: int
    lambdas_pos: Sequence[float]
    lambdas_neg: Sequence[float] | None = None
    n_steps: int = 1000
    n_chains: int = 10
    seed: int = 0
    observable: str | Callable = "ari"
    model: str | None = None
    checkpoint_every: int = 500
    record_tokens_every: int | None = None
    exchange_every: int | None = None
    target: float | None = None
    ladder: dict | None = None

    def __post_init__(self):
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {self.prompt!r}")
        self.length = check_positive_int("length", self.length)
        self._check_auto()
        if self.lambdas_pos != "auto":
            self.lambdas_pos = bias_schedule("lambdas_pos", self.lambdas_pos, +1)
        if self.lambdas_neg is None:
            self.lambdas_neg = tuple(-v for v in self.lambdas_pos) if self.lambdas_pos != "auto" else ()
        if self.lambdas_neg != "auto":
            self.lambdas_neg = bias_schedule("lambdas_neg", self.lambdas_neg, -1)
        if not self.lambdas_pos and not self.lambdas_neg:
            raise ValueError("lambdas_pos and lambdas_neg are both empty; give at least one bias")
        self.n_steps = check_positive_int("n_steps", self.n_steps)
        self.n_chains = check_positive_int("n_chains", self.n_chains)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        self.seed = int(self.seed)
        get_observable(self.observable)  # raises a clear ValueError for unknown names
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ValueError(f"model must be a model name or None, got {self.model!r}")
        self.checkpoint_every = check_positive_int("checkpoint_every", self.checkpoint_every)
        if self.record_tokens_every is not None:
            self.record_tokens_every = check_positive_int("record_tokens_every", self.record_tokens_every)
        if self.exchange_every is not None:
            self.exchange_every = check_positive_int("exchange_every", self.exchange_every)

    def _check_auto(self) -> None:
        """``"auto"`` biases: one direction only, and a finite ``target``."""
        auto = [name for name in ("lambdas_pos", "lambdas_neg") if getattr(self, name) == "auto"]
        if len(auto) == 2:
            raise ValueError("lambdas_pos and lambdas_neg cannot both be 'auto': choose the tail (one direction)")
        if auto and (self.target is None or not math.isfinite(float(self.target))):
            raise ValueError(f"{auto[0]}='auto' needs target, the threshold of the tail to reach, got "
                             f"{self.target!r}")
        if auto and self.lambdas_pos == "auto" and self.lambdas_neg not in (None, [], ()):
            raise ValueError("with lambdas_pos='auto' the negative direction does not run: leave lambdas_neg empty")
        if auto and self.lambdas_neg == "auto" and self.lambdas_pos not in ([], ()):
            raise ValueError("with lambdas_neg='auto' the positive direction does not run: set lambdas_pos=[]")
        if self.target is not None:
            self.target = float(self.target)

    @property
    def auto_direction(self) -> int:
        """−1 or +1 for the direction whose biases are ``"auto"``, 0 when none is."""
        return -1 if self.lambdas_neg == "auto" else 1 if self.lambdas_pos == "auto" else 0

    # -- derived quantities
    @property
    def observable_name(self) -> str:
        """The observable's name: itself for a built-in, ``callable:<function name>`` for a callable."""
        obs = self.observable
        return obs if isinstance(obs, str) else f"callable:{getattr(obs, '__name__', type(obs).__name__)}"

    @property
    def n_biases(self) -> int:
        """Number of bias segments (the longer of the two schedules)."""
        return max(len(self.lambdas_pos), len(self.lambdas_neg))

    @property
    def total_steps(self) -> int:
        """Moves of the longest-running chain: n_biases × n_steps annealed, n_steps with replica exchange."""
        return self.n_steps if self.exchange_every is not None else self.n_biases * self.n_steps

    @property
    def directions(self) -> list[int]:
        """The directions that run: +1 if ``lambdas_pos`` is non-empty, −1 if ``lambdas_neg`` is."""
        return [d for d, lams in ((1, self.lambdas_pos), (-1, self.lambdas_neg)) if lams]

    def to_dict(self) -> dict:
        """JSON-friendly dict (the observable by name)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["observable"] = self.observable_name
        for name in ("lambdas_pos", "lambdas_neg"):
            value = getattr(self, name)
            out[name] = value if value == "auto" else list(value)
        return out
