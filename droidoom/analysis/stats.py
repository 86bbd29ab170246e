"""Per-group latency statistics over the samples frame, vectorised.

Groups are found from categorical codes and quantiles read off one sorted array, never by
looping over rows. `droidoom.analysis` (comparisons) and `droidoom.analysis.verdicts` (scaling fits)
both build on this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import DataError

#: Default grouping of `summary` and `compare`.
GROUP_KEYS: tuple[str, ...] = ("device", "kind", "mode", "population")
#: Column name -> quantile reported by `summary` (numpy "linear" interpolation).
QUANTILES: dict[str, float] = dict(
    p10_ns=0.10, p25_ns=0.25, median_ns=0.50, p75_ns=0.75, p90_ns=0.90, p99_ns=0.99
)

_U32 = np.int64(0xFFFFFFFF)


# --------------------------------------------------------------------------- grouping core


_MAX_CODES = 1 << 18  # key combinations searched directly; more are factorized first

#: Group codes of one key column -> that column's values (for the keys frame).
_Decoder = Callable[[npt.NDArray[np.intp]], Any]


def _categories(dt: pd.CategoricalDtype) -> _Decoder:
    return lambda i: pd.Categorical.from_codes(i, dtype=dt)


def _offset(lo: int, dt: np.dtype[Any]) -> _Decoder:
    return lambda i: (i + lo).astype(dt)


def _lookup(u: np.ndarray) -> _Decoder:
    return lambda i: u[i]


@dataclass(frozen=True)
class Sorted:
    """Rows sorted by (group, value) in one int64 array: ``code << 32 | value``.

    Codes [0, n) hold successful writes, [n, 2n) failed ones (err != 0) and [2n, 3n) rows
    without a value, so one sort splits them too. Row i of `keys` is group ``codes[i]`` whose
    successful values are ``packed[starts[i]:starts[i] + counts[i]] & 0xFFFFFFFF``.
    """

    keys: pd.DataFrame
    packed: np.ndarray
    codes: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    errors: np.ndarray

    def values(self, i: int) -> np.ndarray:
        return self.packed[self.starts[i] : self.starts[i] + self.counts[i]] & _U32


def sort_groups(df: pd.DataFrame, by: Sequence[str], column: str = "latency_ns") -> Sorted:
    """Group and sort `df` with as few full-size temporaries as possible (each costs page
    faults: this is most of summary()'s time on 10M rows)."""
    combined: npt.NDArray[np.int64] | None = None
    dims: list[int] = []
    decoders: list[_Decoder] = []
    for col in by:
        s = df[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            c, n, off = s.cat.codes.to_numpy(), len(s.cat.categories), 0
            if len(c) and c.min() < 0:
                raise DataError(f"column {col!r} has missing values; the run data is damaged")
            decoders.append(_categories(s.dtype))
        else:
            a = s.to_numpy()
            is_int = np.issubdtype(a.dtype, np.integer)
            lo, hi = (int(a.min()), int(a.max())) if is_int and len(a) else (0, 1 << 16)
            if hi - lo < 1 << 16:  # small integer range: the value is its own code
                c, n, off = a, hi - lo + 1, lo
                decoders.append(_offset(lo, a.dtype))
            else:
                c, u = pd.factorize(a, sort=True)
                n, off = max(len(u), 1), 0
                decoders.append(_lookup(u))
        if combined is None:
            combined = c.astype(np.int64)
        else:
            combined *= n
            combined += c
        if off:
            combined -= off
        dims.append(n)
    if combined is None:
        raise ValueError("sort_groups needs at least one column to group by")
    n_codes, lookup = int(np.prod(dims)), None
    if n_codes > _MAX_CODES:
        factorized, lookup = pd.factorize(combined, sort=True)
        combined, n_codes = factorized.astype(np.int64), len(lookup)
    err = df["err"].to_numpy() != 0
    combined[err] += n_codes
    vals = df[column]
    # Band 2, out of the statistics: successful rows without a value (e.g. no ftrace
    # event), and the warm-up writes right after a switch of kind (scenario.in_blocks).
    skip = df["warmup"].to_numpy(dtype=bool) if "warmup" in df.columns else None
    if vals.hasnans:
        nan = vals.isna().to_numpy()
        skip = nan if skip is None else skip | nan
        vals = vals.fillna(0)
    if skip is not None:
        combined[skip & ~err] += 2 * n_codes
    v = vals.to_numpy(dtype=np.int64)
    if len(v) and (v.min() < 0 or v.max() > _U32):  # the helper saturates at 2^32-1 anyway
        v = np.clip(v, 0, _U32)
    combined <<= 32
    combined |= v
    combined.sort()
    bounds = np.searchsorted(combined, np.arange(3 * n_codes + 1, dtype=np.int64) << 32)
    sizes = np.diff(bounds).reshape(3, n_codes)
    codes = np.flatnonzero(sizes.sum(axis=0))
    parts = np.unravel_index(codes if lookup is None else lookup[codes], dims)
    keys = pd.DataFrame({c: dec(p) for c, dec, p in zip(by, decoders, parts, strict=True)})
    return Sorted(keys, combined, codes, bounds[codes], sizes[0, codes], sizes[1, codes])


def _quantile(g: Sorted, q: float) -> np.ndarray:
    """Linear-interpolated quantile q of each group (NaN for groups without values)."""
    n = g.counts
    pos = g.starts + q * np.maximum(n - 1, 0)
    lo = np.minimum(np.floor(pos).astype(np.int64), len(g.packed) - 1)
    hi = np.minimum(lo + 1, np.maximum(g.starts + n - 1, 0))
    lo_v, hi_v = (g.packed[np.maximum(i, 0)] & _U32 for i in (lo, hi))
    return np.where(n > 0, lo_v + (hi_v - lo_v) * (pos - lo), np.nan)


def _mad(g: Sorted, medians: np.ndarray) -> np.ndarray:
    """Exact median absolute deviation per group, without a second sort.

    The k-th smallest |v - m| is the smallest t with #{v : m - t <= v <= m + t} > k; that count
    is two searchsorted calls on the sorted array, so bisect t for all groups at once. Work in
    doubled units so a half-integer median stays an integer.
    """
    ok = g.counts > 0
    m2 = np.where(ok, np.nan_to_num(medians) * 2, 0).astype(np.int64)
    code = g.codes.astype(np.int64) << 32

    def kth(k: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        # k-th (0-based) smallest doubled deviation per group
        lo = np.zeros(len(m2), dtype=np.int64)
        hi = np.full(len(m2), 2 * int(_U32) + 1, dtype=np.int64)
        while np.any(lo < hi):
            t = (lo + hi) // 2
            a = np.maximum(-((t - m2) // 2), 0)  # ceil((m2 - t) / 2): smallest v inside
            b = np.minimum((m2 + t) // 2, _U32)  # floor((m2 + t) / 2): largest v inside
            inside = np.searchsorted(g.packed, code | b, side="right")
            enough = inside - np.searchsorted(g.packed, code | a) > k
            hi = np.where(enough, t, hi)
            lo = np.where(enough, lo, t + 1)
        return lo

    mad2 = (kth((g.counts - 1) // 2) + kth(g.counts // 2)) / 4.0
    return np.where(ok, mad2, np.nan)


def summary(
    df: pd.DataFrame, by: Sequence[str] = GROUP_KEYS, column: str = "latency_ns"
) -> pd.DataFrame:
    """Latency statistics per device x kind x mode x population (or any `by`).

    Columns: the `by` keys, ``count`` (successful writes), ``errors`` (writes with err != 0,
    excluded from the statistics), ``median_ns``, ``p10_ns`` .. ``p99_ns`` (see `QUANTILES`,
    linear interpolation like numpy), ``mad_ns`` (raw median absolute deviation, not scaled
    by 1.4826), ``min_ns``, ``max_ns``. `column` may be ``kernel_ns`` (rows without a kernel
    event are skipped). Groups with only failed writes have NaN statistics.
    """
    by = list(by)
    stat_cols = ["median_ns"] + [c for c in QUANTILES if c != "median_ns"]
    cols = by + ["count", "errors", *stat_cols, "mad_ns", "min_ns", "max_ns"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    g = sort_groups(df, by, column)
    out = g.keys
    out["count"], out["errors"] = g.counts, g.errors
    for name in stat_cols:
        out[name] = _quantile(g, QUANTILES[name])
    out["mad_ns"] = _mad(g, out["median_ns"].to_numpy())
    out["min_ns"], out["max_ns"] = _quantile(g, 0.0), _quantile(g, 1.0)
    return out[cols]


def quantile_grid(
    df: pd.DataFrame, probs: Sequence[float] | np.ndarray, by: Sequence[str] = GROUP_KEYS
) -> tuple[pd.DataFrame, np.ndarray]:
    """Latency quantiles at `probs` per group: (group keys, array groups x probs) in ns."""
    g = sort_groups(df, list(by))
    return g.keys, np.stack([_quantile(g, q) for q in probs], axis=1)


def point_medians(df: pd.DataFrame) -> pd.DataFrame:
    """Median latency per sweep point (device x kind x mode x run x point x population)."""
    by = ["device", "kind", "mode", "run_id", "point", "population"]
    return summary(df, by=by)[by + ["count", "median_ns"]]
