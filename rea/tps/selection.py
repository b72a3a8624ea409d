"""Which biases :func:`rea.tps.tps_mbar` pools (``keep=``): Gelman–Rubin per replica (the default), the biases an
equilibrium table marks ``equilibrated`` (:func:`rea.tps.equilibrium_check`, METHODS §11), or an explicit list.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["kept_biases", "KEEP"]

KEEP = ("gelman_rubin", "equilibrium table", "list of λ")


def kept_biases(keep, lambdas) -> frozenset | None:
    """The biases MBAR uses, from ``keep`` of :func:`tps_mbar` and the records' biases ``lambdas`` ``[K]``: None for
    ``"gelman_rubin"`` (decided by GR per replica); the λ with ``equilibrated`` True of an equilibrium table; or the
    given list, each matched to a λ of the records (|Δλ| ≤ 1e-9·max(1, |λ|)). A one-line ValueError otherwise."""
    if isinstance(keep, str):
        if keep != "gelman_rubin":
            raise ValueError(f"keep must be one of {KEEP}, got {keep!r}")
        return None
    if isinstance(keep, pd.DataFrame):
        if not {"lam", "equilibrated"} <= set(keep.columns):
            raise ValueError(f"keep: an equilibrium table needs columns lam, equilibrated (has {list(keep.columns)})")
        keep = keep.loc[keep["equilibrated"].astype(bool), "lam"].tolist()
    try:
        want = np.asarray(keep, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"keep must be one of {KEEP}, got {keep!r}") from None
    lambdas = np.asarray(lambdas, dtype=np.float64)
    match = [lambdas[np.abs(lambdas - x) <= 1e-9 * max(1.0, abs(x))] for x in want]
    unknown = [float(x) for x, m in zip(want, match) if m.size == 0]
    if unknown:
        raise ValueError(f"keep: biases {unknown} are not in the records (λ grid {lambdas.tolist()})")
    return frozenset(float(m[0]) for m in match)
