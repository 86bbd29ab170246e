"""One vocabulary (issue 10, item 4): the enums' values are file-format values (run.json,
farm.json, verdict tables), so they are pinned here; members must serialise as them."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd

from droidoom.vocab import (
    Complexity,
    DeviceStatus,
    FarmStatus,
    RunStatus,
    VerdictStatus,
    now,
    slug,
)


def test_values_are_the_strings_files_have_always_held():
    assert [*map(str, RunStatus)] == ["running", "complete", "partial", "failed"]
    assert [*map(str, DeviceStatus)] == [
        "pending", "running", "complete", "partial", "failed", "cancelled"
    ]  # fmt: skip
    assert [*map(str, FarmStatus)] == ["running", "complete", "partial", "interrupted"]
    assert [*map(str, VerdictStatus)] == ["fixed", "regressed", "inconclusive"]
    assert [*map(str, Complexity)] == ["O(1)", "O(N)", "inconclusive"]


def test_members_serialise_as_plain_strings():
    doc = {"status": RunStatus.PARTIAL, "complexity": Complexity.ON}
    assert json.dumps(doc) == '{"status": "partial", "complexity": "O(N)"}'
    assert f"{VerdictStatus.FIXED}" == "fixed" and RunStatus("complete") == "complete"
    csv = pd.DataFrame({"c": [Complexity.O1]}).to_csv(index=False)
    assert csv.splitlines() == ["c", "O(1)"]


def test_slug_and_now():
    assert slug("emulator-5554 (Pixel 7)") == "emulator-5554_Pixel_7"
    assert slug("///") == "device" and slug("", "run") == "run"
    stamp = dt.datetime.fromisoformat(now())
    assert stamp.tzinfo is not None and abs(dt.datetime.now(dt.UTC) - stamp).total_seconds() < 60
