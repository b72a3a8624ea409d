"""Numbers typeset for prose and tables: :func:`sci` writes 2.9 × 10⁻⁷, not 2.9e-07; :func:`typeset` follows a
format spec (``".2g"``, ``".0%"``, ``",d"``) without ever writing e-notation or a nonzero number as ``0.000``."""

from __future__ import annotations

import math
import re

_SPEC = re.compile(r"^(?P<head>[^.]*?)(?:\.(?P<prec>\d+))?(?P<type>[bcdeEfFgGnosxX%]?)$")


def sci(x: float, digits: int = 2) -> str:
    """``x`` typeset for prose: 2.9 × 10⁻⁷ for small or large magnitudes, 0.031 or 120 otherwise.

    ``digits`` significant digits; magnitudes in [10⁻³, 10⁴) are written plainly, others as m × 10ᵉ with a
    superscript exponent. NaN is "n/a" and infinities are "∞" / "−∞".
    """
    x = float(x)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(x)))) if x else 0
        plain = format(x, f".{decimals}f")  # like ".{digits}g", but never in e-notation (120, not 1.2e+02)
        plain = plain.rstrip("0").rstrip(".") if "." in plain else plain
        return plain.replace("-", "−")
    mantissa, exponent = format(x, f".{digits - 1}e").split("e")
    sup = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
    return f"{mantissa.replace('-', '−')} × 10{str(int(exponent)).translate(sup)}"


def typeset(x, fmt: str = ".3g") -> str:
    """``x`` typeset as the format spec ``fmt`` asks, for prose and tables.

    * ``e``, ``g`` (or no type): :func:`sci` with the spec's significant digits (``.1e`` -> 2, ``.3g`` -> 3, no
      precision -> 3): ``typeset(2.94e-7, ".1e") == "2.9 × 10⁻⁷"``, ``typeset(0.0123, ".2g") == "0.012"``;
    * ``%``: a percentage with the spec's decimals (``typeset(0.123, ".0%") == "12%"``); a nonzero share that would
      round to zero is written with :func:`sci` (``typeset(3e-8, ".2%") == "3.0 × 10⁻⁶%"``);
    * anything else (``.2f``, ``,d``, ``,.0f``): ``format(x, fmt)``, or :func:`sci` with two digits where that
      would show a nonzero number as zero (``0.00``).

    A ``+`` in the spec keeps the sign of positive numbers; the minus sign is U+2212. Booleans, integers formatted
    without a type and non-numbers are ``str(x)``.
    """
    m = _SPEC.match(fmt)
    if m is None:
        raise ValueError(f"fmt must be a format spec such as '.2g', '.0%' or ',d', got {fmt!r}")
    if isinstance(x, (bool, str)) or not hasattr(x, "__float__"):
        return str(x)
    kind, prec = m["type"], m["prec"]
    value = float(x)
    plus = "+" if "+" in m["head"] and value > 0 else ""
    if math.isnan(value) or math.isinf(value):
        return sci(value)
    if kind in ("e", "E"):
        return plus + sci(value, int(6 if prec is None else prec) + 1)
    if kind in ("g", "G") or (kind == "" and not isinstance(x, int)):
        return plus + sci(value, max(int(3 if prec is None else prec), 1))
    shown = format(x, fmt)
    if value != 0 and not re.search(r"[1-9]", shown):
        shown = plus + sci(value * 100, 2) + "%" if kind == "%" else plus + sci(value, 2)
    return shown.replace("-", "−")
