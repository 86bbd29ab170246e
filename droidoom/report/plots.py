"""Figures of a samples frame: scaling curves, latency distributions, device comparison.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot), so importing this
module never changes the process-wide backend and works headless; `Figure.savefig` renders
with Agg. Every function returns a Figure; `save_figures` writes the standard set.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib import colormaps, ticker
from matplotlib.artist import Artist
from matplotlib.axis import Axis, XAxis
from matplotlib.figure import Figure

from .. import analysis, store
from ..errors import DataError
from ..schema import KINDS
from ..vocab import slug

#: One colour per target kind, used by every figure and the HTML report.
KIND_COLORS = {"single": "#4C72B0", "threaded": "#DD8452", "multiprocess": "#C44E52"}
_US = 1e-3  # ns -> us

#: How to read each figure (by file-stem prefix), shown under it in the HTML report.
FIGURE_HELP = {
    "scaling": "Median write latency (line) with its interquartile and p10-p90 bands against "
    "the number of extra processes alive; dashed: Theil-Sen fit, hatched: its 95% slope CI. "
    "Flat means O(1); a line rising with the population means every write walks all "
    "processes (O(N)): expected for multiprocess, the 2020 regression for threaded.",
    "distribution": "Fraction of writes at or below each latency (ECDF, log x), one line per "
    "population. Lines stacked on each other: population does not matter; lines shifting "
    "right as the population grows: the walk. A long flat top is a tail of slow writes.",
    "devices": "Median latency per device against population (log y): a device whose "
    "threaded line rises like its multiprocess line is regressed.",
}


def _pick(df: pd.DataFrame, device: str | None, mode: str | None) -> tuple[pd.DataFrame, str, str]:
    """Rows of one device x mode; defaults: the first device, "reopen" when present."""
    devices = sorted(df["device"].astype(str).unique())
    if not devices:
        raise DataError("no samples to plot: the runs hold no writes")
    device = device or devices[0]
    sub = df[df["device"].astype(str) == device]
    modes = list(dict.fromkeys(sub["mode"].astype(str)))
    mode = mode or ("reopen" if "reopen" in modes else modes[0])
    return sub[sub["mode"].astype(str) == mode], device, mode


def _kinds(df: pd.DataFrame) -> list[str]:
    present = set(df["kind"].astype(str).unique())
    return [k for k in KINDS if k in present] + sorted(present - set(KINDS))


def _fit_lines(fit: analysis.Fit, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Theil-Sen line and its slope-CI band: lines with the CI's slopes pivoting on the fit
    at mid-sweep (a bow tie showing how uncertain the slope is, not a prediction band)."""
    pivot = (fit.pop_min + fit.pop_max) / 2
    mid = fit.intercept_ns + fit.slope_ns * xs
    at_pivot = fit.intercept_ns + fit.slope_ns * pivot
    lines = [at_pivot + s * (xs - pivot) for s in (fit.ci_low, fit.ci_high)]
    return mid * _US, np.minimum(*lines) * _US, np.maximum(*lines) * _US


def plot_scaling(
    df: pd.DataFrame, *, device: str | None = None, mode: str | None = None, logy: bool = False
) -> Figure:
    """Median write latency vs population, one panel per kind.

    Bands: interquartile range (dark) and p10-p90 (light); small dots are per-point medians;
    the dashed line is the Theil-Sen fit with its 95% slope CI as a hatched band. Panels have
    their own y scale unless `logy` (then shared and logarithmic).
    """
    sub, device, mode = _pick(df, device, mode)
    stats = analysis.summary(sub)
    pts = analysis.point_medians(sub)
    fits = {f.kind: f for f in analysis.fits(sub)}
    kinds = _kinds(sub)
    fig = Figure(figsize=(4.6 * len(kinds), 4.4), layout="constrained")
    axes = fig.subplots(1, len(kinds), sharey=logy, squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=True):
        color = KIND_COLORS.get(kind, "#555555")
        s = stats[stats["kind"].astype(str) == kind].sort_values("population")
        p = pts[(pts["kind"].astype(str) == kind) & pts["median_ns"].notna()]
        x = s["population"].to_numpy()
        ax.fill_between(x, s["p10_ns"] * _US, s["p90_ns"] * _US, color=color, alpha=0.15,
                        lw=0, label="p10-p90")  # fmt: skip
        ax.fill_between(x, s["p25_ns"] * _US, s["p75_ns"] * _US, color=color, alpha=0.3,
                        lw=0, label="IQR")  # fmt: skip
        ax.plot(x, s["median_ns"] * _US, "o-", color=color, lw=2, ms=5, label="median")
        ax.plot(p["population"], p["median_ns"] * _US, ".", color="black", ms=3, alpha=0.5,
                label="point medians")  # fmt: skip
        fit = fits.get(kind)
        title = kind
        if fit is not None and np.isfinite(fit.slope_ns):
            xs = np.linspace(x.min(), x.max(), 50)
            mid, lo, hi = _fit_lines(fit, xs)
            ax.fill_between(xs, lo, hi, facecolor="none", edgecolor="0.35", hatch="////",
                            lw=0, alpha=0.6, label="fit 95% CI")  # fmt: skip
            ax.plot(xs, mid, "--", color="0.15", lw=1.2, label="Theil-Sen fit")
            title = f"{kind}: {fit.complexity}\n{fit.slope_text()}"
        elif fit is not None:
            title = f"{kind}: {fit.complexity}\n{fit.reason}"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("extra processes alive (population)")
        ax.grid(True, alpha=0.3)
        if logy:
            _log_axis(ax.yaxis)
        else:
            ax.set_ylim(bottom=0)
    axes[0].set_ylabel("write latency (µs)")
    handles: dict[str, Artist] = {}
    for ax in axes:  # one legend for all panels, below them, so it never hides data
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    labels = list(handles)
    fig.legend([handles[k] for k in labels], labels, loc="outside lower center",
               ncols=len(labels), fontsize=8, frameon=False)  # fmt: skip
    fig.suptitle(f"oom_score_adj write latency vs population - {device}, {mode} writes")
    return fig


class _PlainLog(ticker.LogFormatter):
    """LogFormatter's choice of which ticks to label, but "0.6" / "20" instead of "6e-01"."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:g}"


def _log_axis(axis: Axis) -> None:
    """Log scale with plain numbers; minor ticks labelled when the axis spans < a decade."""
    name: Literal["x", "y"] = "x" if isinstance(axis, XAxis) else "y"  # XAxis.axis_name
    if name == "x":
        axis.axes.set_xscale("log")
    else:
        axis.axes.set_yscale("log")
    axis.set_major_formatter(_PlainLog(labelOnlyBase=False))
    axis.set_minor_formatter(_PlainLog(minor_thresholds=(1, 0.4)))
    axis.axes.tick_params(axis=name, which="minor", labelsize=7)


def _ecdf_grid(sub: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Quantiles on a fixed probability grid per kind x population (an ECDF without plotting
    millions of points)."""
    probs = np.concatenate([np.linspace(0.001, 0.99, 150), np.linspace(0.991, 0.999, 9)])
    keys, grid = analysis.quantile_grid(sub, probs, by=("kind", "population"))
    return keys, probs, grid


def plot_distribution(
    df: pd.DataFrame, *, device: str | None = None, mode: str | None = None
) -> Figure:
    """Latency ECDF per population (colour), one panel per kind, log-x, p0.1..p99.9."""
    sub, device, mode = _pick(df, device, mode)
    keys, probs, grid = _ecdf_grid(sub)
    kinds = _kinds(sub)
    pops = sorted(keys["population"].unique())
    cmap = colormaps["viridis"]
    colors = {p: cmap(i / max(len(pops) - 1, 1) * 0.9) for i, p in enumerate(pops)}
    fig = Figure(figsize=(4.6 * len(kinds), 4.2), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=True):
        rows = np.flatnonzero(keys["kind"].astype(str).to_numpy() == kind)
        for r in rows:
            pop = keys["population"].iat[int(r)]
            if np.isfinite(grid[r]).all():
                ax.plot(grid[r] * _US, probs, color=colors[pop], lw=1.6, label=f"{pop}")
        _log_axis(ax.xaxis)
        ax.set_title(kind, fontsize=10, color=KIND_COLORS.get(kind, "black"))
        ax.set_xlabel("write latency (µs, log scale)")
        ax.grid(True, which="both", alpha=0.25)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("fraction of writes ≤ latency")
    fig.legend(*axes[-1].get_legend_handles_labels(), title="population", fontsize=8,
               loc="outside right center", frameon=False)  # fmt: skip
    fig.suptitle(f"Latency distribution (ECDF) per population - {device}, {mode} writes")
    return fig


def plot_devices(df: pd.DataFrame, *, mode: str | None = None, logy: bool = True) -> Figure:
    """Median latency vs population, one line per device, one panel per kind."""
    stats = analysis.summary(df)
    modes = list(dict.fromkeys(stats["mode"].astype(str)))
    mode = mode or ("reopen" if "reopen" in modes else modes[0])
    stats = stats[stats["mode"].astype(str) == mode]
    kinds = _kinds(stats)
    devices = sorted(stats["device"].astype(str).unique())
    fig = Figure(figsize=(4.6 * len(kinds), 4.4), layout="constrained")
    axes = fig.subplots(1, len(kinds), sharey=logy, squeeze=False)[0]
    markers = "osD^vP*X"
    for ax, kind in zip(axes, kinds, strict=True):
        for i, dev in enumerate(devices):
            s = stats[(stats["kind"].astype(str) == kind) & (stats["device"].astype(str) == dev)]
            s = s.sort_values("population")
            ax.plot(s["population"], s["median_ns"] * _US, marker=markers[i % len(markers)],
                    ms=4, lw=1.5, label=dev)  # fmt: skip
        ax.set_title(kind, fontsize=10, color=KIND_COLORS.get(kind, "black"))
        ax.set_xlabel("extra processes alive (population)")
        ax.grid(True, which="both", alpha=0.3)
        if logy:
            _log_axis(ax.yaxis)
    axes[0].set_ylabel("median write latency (µs)")
    fig.legend(*axes[0].get_legend_handles_labels(), title="device", fontsize=8,
               loc="outside right center", frameon=False)  # fmt: skip
    fig.suptitle(f"Median write latency per device - {mode} writes")
    return fig


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of a figure (for embedding)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def standard_figures(df: pd.DataFrame, logy: bool = False) -> list[tuple[str, str, Figure]]:
    """(file stem, caption, figure) for every device x mode, plus a per-device comparison
    when there are several devices."""
    out = []
    pairs = df[["device", "mode"]].drop_duplicates().sort_values(["device", "mode"]).astype(str)
    for device, mode in pairs.itertuples(index=False):  # categorical order: reopen first
        stem = f"{slug(device)}_{mode}"
        where = f"{device}, {mode} writes"
        out.append((f"scaling_{stem}", f"Scaling - {where}",
                    plot_scaling(df, device=device, mode=mode, logy=logy)))  # fmt: skip
        out.append((f"distribution_{stem}", f"Distribution - {where}",
                    plot_distribution(df, device=device, mode=mode)))  # fmt: skip
    if pairs["device"].nunique() > 1:
        for mode in dict.fromkeys(pairs["mode"]):
            out.append((f"devices_{mode}", f"Devices - {mode} writes", plot_devices(df, mode=mode)))
    return out


def save_figures(
    df: pd.DataFrame,
    outdir: str | Path,
    *,
    logy: bool = False,
    dpi: int = 110,
    figures: Sequence[tuple[str, str, Figure]] | None = None,
) -> list[Path]:
    """Write the standard figures (or `figures`, as `standard_figures` returns them) as PNG
    files into `outdir`; returns their paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    if figures is None:
        figures = standard_figures(df, logy=logy)
    for stem, _caption, fig in figures:
        path = outdir / f"{stem}.png"
        # through the checked writer: a link planted in the folder is not followed
        store.atomic_write(path, figure_png(fig, dpi), "--figures")
        paths.append(path)
    return paths


__all__: Sequence[str] = [
    "plot_scaling",
    "plot_distribution",
    "plot_devices",
    "figure_png",
    "FIGURE_HELP",
    "standard_figures",
    "save_figures",
]
