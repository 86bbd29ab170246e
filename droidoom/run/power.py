"""Will a phone stay awake for a run? Android suspends with the screen off unless
something holds a wakelock, and a suspended phone stops the helper mid-sweep (the run then
times out). The facts come from `dumpsys power` (targets/adb_facts.parse_power)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STAYON = "`adb shell svc power stayon true` (undo: `svc power stayon false`)"


def suspend_risk(power: Mapping[str, Any] | None) -> str | None:
    """One sentence on why the phone may suspend during a run and what to do, or None
    when it is kept awake (stay on) or the state is unknown (no dumpsys: not Android)."""
    if not power or power.get("wakefulness") is None:
        return None
    if power.get("stay_on"):
        return None
    wake = power.get("wakefulness")
    if wake != "Awake":
        return (
            f"the phone's screen is off ({wake}): it may suspend mid-run and stall the "
            f"helper; wake it and keep it awake with {STAYON}"
        )
    if not power.get("powered"):
        timeout = power.get("screen_off_timeout_ms")
        after = f" after {timeout // 1000} s" if timeout and timeout > 0 else ""
        return (
            f"the phone runs on battery and its screen turns off{after}, after which it may "
            f"suspend mid-run; keep it awake with {STAYON}, or plug it in with Developer "
            "options > Stay awake on"
        )
    return None
