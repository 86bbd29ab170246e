"""droidoom.units: one text form per kind of number (issue 10, item 4)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from droidoom import units


def test_latency_in_us_keeps_about_three_digits():
    assert [units.us(x) for x in (420, 9_100, 67_000, 362_400)] == ["0.42", "9.10", "67.0", "362"]


def test_slope_is_signed_and_never_minus_zero():
    assert [units.slope(x) for x in (0.021, 4.14, 36.4, -1.25)] == ["+0.02", "+4.1", "+36", "-1.2"]
    assert units.slope(-0.001) == "+0.00"  # rounds to zero: no "-0.00"
    assert units.slope(41.2, sign=False) == "41"


def test_growth_counts_and_cpu_time():
    assert [units.growth(g) for g in (0.03, 7.5, 150.0)] == ["+3%", "x8.5", "x151"]
    assert units.count(12800) == "12,800"
    assert units.ms(2_345_678) == "2.35" and units.ms(math.inf) == "inf"


def test_missing_values_print_a_dash():
    for missing in (None, math.nan, np.float64("nan"), pd.NA):
        assert units.us(missing) == units.slope(missing) == units.growth(missing) == "-"
