"""rea: rare event analysis of language models -- the package behind the executable book.

The chapter-facing API is this module's ``__all__`` (loaded lazily, so ``import rea`` is instant); each name has one
home in a sub-package that says what it is:

* :mod:`rea.lm` -- models (the embedded SmolLM2, Hugging Face models, the exactly solvable toy, tiny random models);
* :mod:`rea.sampling` -- batched sampling with exact log-probs, teacher-forced scoring, the TPS regeneration move;
* :mod:`rea.observables` -- ARI, Log-Prob, Repeats and user observables;
* :mod:`rea.exact` -- exact answers for the toy model;
* :mod:`rea.stats` -- intervals, direct and importance-sampling estimators, MCMC diagnostics, bootstrap, MBAR;
* :mod:`rea.tps` -- transition path sampling (annealed, replica exchange, adaptive ladders) and its MBAR analysis;
* :mod:`rea.smc` -- sequential Monte Carlo (cloning) on prefixes: unbiased Z(λ) and tail estimates;
* :mod:`rea.single_token` -- single-token rare outputs (Wu & Hilton);
* :mod:`rea.sweep` -- tail probabilities over a grid of prompts, on Ray (``rea sweep``);
* :mod:`rea.book` -- profiles, records, plots, the chapter runner and golden checks;
* :mod:`rea.storage`, :mod:`rea.arguments`, :mod:`rea.cli`, :mod:`rea.validate`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_HOMES = {
    "rea.lm": ["load_model", "TOY_PROMPT"],
    "rea.sampling": ["sample", "score", "Samples", "Temperature", "LogitBias"],
    "rea.observables": ["ari", "ari_text", "ari_counts", "log_prob", "repeats", "repeats_tokens", "max_run"],
    "rea.stats": ["direct_tail", "wilson_interval", "z_value", "importance_estimate", "effective_sample_size",
                  "mixture_log_weights", "TiltedMBAR", "ISIntervalWarning", "OverlapWarning"],
    "rea.tps": ["TPSConfig", "run_tps", "tps_mbar", "tps_tokens", "ChainCountWarning"],
    "rea.sweep": ["run_sweep"],
}
_ALIASES = {"TOY_PROMPT": "DEFAULT_PROMPT"}
_MODULES = ["exact", "stats", "tps", "smc", "single_token"]
_HOME_OF = {name: home for home, names in _HOMES.items() for name in names}

__all__ = [name for names in _HOMES.values() for name in names] + _MODULES


def __getattr__(name: str):
    """Import a public name from its home on first use (PEP 562)."""
    if name in _MODULES:
        value = importlib.import_module(f"rea.{name}")
    elif name in _HOME_OF:
        value = getattr(importlib.import_module(_HOME_OF[name]), _ALIASES.get(name, name))
    else:
        raise AttributeError(f"module 'rea' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
