"""One text form per kind of number, shared by the CLI, the reports and the farm table.

Latency in µs (`us`), ns per extra process (`slope`), latency growth over a sweep
(`growth`), CPU time in ms (`ms`), counts (`count`). Missing values (None, NaN) print "-"
(`ms`: "inf" for an unbounded figure).
"""

from __future__ import annotations

import math


def _missing(x: float | None) -> bool:
    try:
        return x is None or bool(x != x)  # NaN is the one value unequal to itself
    except TypeError:  # pandas' NA: its truth value is ambiguous
        return True


def us(ns: float | None) -> str:
    """Latency, ns -> short µs text: 0.42, 9.1, 67, 362."""
    if ns is None or _missing(ns):
        return "-"
    x = ns / 1000
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def slope(ns: float | None, sign: bool = True) -> str:
    """ns per extra process: +0.02, +4.1, +36 (2 decimals below 1, 1 below 10); no "-0.00"."""
    if ns is None or _missing(ns):
        return "-"
    digits = 2 if abs(ns) < 1 else 1 if abs(ns) < 10 else 0
    ns = 0.0 if round(ns, digits) == 0 else ns
    return f"{ns:+.{digits}f}" if sign else f"{ns:.{digits}f}"


def growth(g: float | None) -> str:
    """Latency change over the sweep: "+3%" when small, "x8.5" when it multiplies."""
    if g is None or _missing(g):
        return "-"
    return f"{g:+.0%}" if g < 1 else f"x{1 + g:.1f}" if g < 99 else f"x{1 + g:.0f}"


def ms(ns: float) -> str:
    """CPU time, ns -> ms with 3 significant digits; "inf" when unbounded."""
    return "inf" if not math.isfinite(ns) else f"{ns / 1e6:.3g}"


def count(n: int) -> str:
    """A count with thousands separators: 12,800."""
    return f"{n:,}"
