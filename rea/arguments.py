"""Argument checks shared by the whole package: each raises a one-line ``ValueError`` naming the parameter and what
is allowed, before any work starts."""

from __future__ import annotations

import numpy as np


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer (not a bool) ≥ ``minimum``; else a one-line ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer ≥ {minimum}")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_confidence(confidence) -> float:
    """A confidence level in (0, 1) as a float."""
    if not (isinstance(confidence, (int, float, np.floating)) and 0 < confidence < 1):
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    return float(confidence)


def as_1d_finite(name: str, values, allow_empty: bool = False) -> np.ndarray:
    """``values`` as a finite 1-D float64 array (a scalar becomes shape [1])."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} is empty; pass at least one value")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (first at index {int(np.argmax(bad))}); "
            f"drop or fix those samples"
        )
    return arr


def check_edges(bin_edges) -> np.ndarray:
    """Histogram bin edges: at least 2 strictly increasing finite values."""
    edges = as_1d_finite("bin_edges", bin_edges)
    if edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("bin_edges must hold at least 2 strictly increasing values")
    return edges


def check_side(side: str) -> str:
    """The tail of a tail probability: ``"upper"`` (P(φ ≥ a)) or ``"lower"`` (P(φ ≤ a))."""
    if side not in ("upper", "lower"):
        raise ValueError(f"side must be 'upper' (P(φ ≥ a)) or 'lower' (P(φ ≤ a)), got {side!r}")
    return side
