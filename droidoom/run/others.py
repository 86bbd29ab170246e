"""Other droidoom runs on the target while ours runs, seen at each sweep point.

The device lock keeps runs that share a lock apart, but two runs with different
DROIDOOM_LOCK_DIR (or adb runs with different DROIDOOM_DEVICE_WORKDIR) do not see each
other's lock; the activity sampled when the lock is taken and released (devlock) only
sees a run alive at those two moments. So the runner also counts the other runs' helpers
each time ours reaches a sweep point (its `point` line): a run that starts and ends
inside ours is seen too. Every multiprocess write walks the other run's population as
well, so any sighting makes the run "disturbed" (drift.disturbances).

Our own helper's processes (its targets and population are forks, named droidoom-helper
too) are not counted: only helpers whose parent is not a helper, other than ours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import TargetError
from ..targets.base import Target

#: Prints "others=N": top-level droidoom-helper processes other than pid $1's run.
_SCRIPT = (
    "n=0; for p in $(pidof droidoom-helper 2>/dev/null); do "
    '[ "$p" = {own} ] && continue; '
    "pp=$(cut -d' ' -f4 /proc/$p/stat 2>/dev/null); "
    '[ "$(cat /proc/$pp/comm 2>/dev/null)" = droidoom-helper ] && continue; '
    "n=$((n+1)); done; echo others=$n"
)


def other_helpers(target: Target, own_pid: int) -> int | None:
    """Runs of droidoom-helper on `target` other than the one whose helper is `own_pid`
    (None if the target could not say)."""
    try:
        res = target.sh(_SCRIPT.replace("{own}", str(int(own_pid))), timeout=15)
    except TargetError:
        return None
    for line in res.stdout.splitlines():
        if line.startswith("others=") and line[7:].strip().isdigit():
            return int(line[7:].strip())
    return None


@dataclass
class Watch:
    """Samples `other_helpers` at each sweep point; `seen` is what run.json records as
    device_activity.during."""

    target: Target
    own_pid: Callable[[], int]  # our helper's pid (from its hello line; 0 before it)
    seen: list[dict[str, Any]] = field(default_factory=list)

    def point(self, idx: int, population: int) -> None:
        """Progress.point: count the other runs now."""
        pid = self.own_pid()
        if pid <= 0:
            return
        n = other_helpers(self.target, pid)
        if n is not None:
            self.seen.append({"point": idx, "helpers": n})

    def wrap(self, point: Callable[[int, int], None]) -> Callable[[int, int], None]:
        """`point` that samples first."""

        def both(idx: int, population: int) -> None:
            self.point(idx, population)
            point(idx, population)

        return both
