"""Analysis of samples: per-group summaries, O(1)/O(N) scaling fits, the fixed/regressed
verdict, run-to-run comparison, drift, the kill verdict and what a trace's churn costs.

The names below are the library API (`droidoom.analysis.verdict(...)` and so on); the
submodules hold the parts: `stats`, `verdicts`, `kernels`, `comparison`, `drift`, `kill`, `cost`.
"""

from .comparison import (
    FIX_BACKPORTS,
    FIX_MAINLINE,
    GROUP_KEYS,
    MIN_COMPARED_WRITES,
    MIN_POPULATIONS,
    O1_MAX_GROWTH,
    ON_MIN_GROWTH,
    QUANTILES,
    WALK_INTRODUCED,
    WALK_MIN_SLOPE_NS,
    Comparison,
    Fit,
    Verdict,
    compare,
    fits,
    kernel_expectation,
    load_meta,
    parse_release,
    point_medians,
    quantile_grid,
    scaling,
    summary,
    verdict,
)

__all__ = [
    "GROUP_KEYS",
    "QUANTILES",
    "load_meta",
    "summary",
    "quantile_grid",
    "point_medians",
    "Comparison",
    "compare",
    "Fit",
    "fits",
    "scaling",
    "Verdict",
    "verdict",
    "kernel_expectation",
    "parse_release",
    "FIX_BACKPORTS",
    "FIX_MAINLINE",
    "WALK_INTRODUCED",
    "MIN_POPULATIONS",
    "O1_MAX_GROWTH",
    "ON_MIN_GROWTH",
    "WALK_MIN_SLOPE_NS",
    "MIN_COMPARED_WRITES",
]
