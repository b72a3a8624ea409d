"""Calling pymbar quietly: its import, its log output and warnings, its numpy solver's logsumexp, its MBAR object.

pymbar prints banners on import (JAX not found, a timeseries caveat), logs its solver's progress, reseeds numpy's
global RNG in ``pymbar.MBAR`` and spends much of its numpy solver in ``scipy.special.logsumexp``. Everything in the
package that calls pymbar (:mod:`rea.stats.diagnostics` for ``pymbar.timeseries``, :mod:`rea.stats.mbar` for
``pymbar.MBAR``) goes through these helpers:

* :func:`import_pymbar` -- ``import pymbar`` without the banners.
* :func:`captured_pymbar_output` -- a context that silences pymbar's logging and Python warnings and collects them.
* :func:`fast_pymbar_solver` -- a context that gives pymbar's numpy solver :func:`rea.stats.mbar_solver.fast_logsumexp`.
* :func:`quiet_pymbar_mbar` -- ``pymbar.MBAR(u_kn, N_k, ...)`` with all of the above and numpy's RNG state kept.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np
from scipy.special import logsumexp

from rea.stats.mbar_solver import fast_logsumexp

__all__ = ["captured_pymbar_output", "fast_pymbar_solver", "import_pymbar", "quiet_pymbar_mbar"]


@contextlib.contextmanager
def captured_pymbar_output():
    """Silence pymbar's logging and Python warnings; yield a list that collects their messages."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage().strip())

    logger = logging.getLogger("pymbar")
    handler = _Collect(level=logging.WARNING)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(w.message).strip() for w in caught)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


@contextlib.contextmanager
def fast_pymbar_solver(pymbar):
    """Temporarily give pymbar's numpy solver path a faster logsumexp (restored on exit; JAX path untouched)."""
    solvers = pymbar.mbar_solvers
    original = getattr(solvers, "logsumexp", None)
    patch = original is logsumexp and not getattr(solvers, "use_jit", False)
    if patch:
        solvers.logsumexp = fast_logsumexp
    try:
        yield
    finally:
        if patch:
            solvers.logsumexp = original


def import_pymbar():
    """Import pymbar without its import-time banners (JAX not found, timeseries caveat) on stderr."""
    with captured_pymbar_output():
        import pymbar
        import pymbar.timeseries  # noqa: F401
    return pymbar


def quiet_pymbar_mbar(pymbar, u_kn: np.ndarray, n_k: np.ndarray, **kwargs):
    """``pymbar.MBAR(u_kn, n_k, **kwargs)`` silenced, with the fast logsumexp -> (the MBAR object, its messages).

    ``pymbar`` the module (:func:`import_pymbar`), ``u_kn`` float ``[K, N]`` reduced potentials, ``n_k`` ``[K]``
    samples per state (samples sorted by state). pymbar.MBAR reseeds numpy's global RNG (``np.random.seed(None)``):
    its state is saved and restored. Errors of pymbar propagate unchanged.
    """
    rng_state = np.random.get_state()
    try:
        with captured_pymbar_output() as messages, fast_pymbar_solver(pymbar):
            mbar = pymbar.MBAR(u_kn, n_k, **kwargs)
    finally:
        np.random.set_state(rng_state)
    return mbar, messages
