"""What a kernel's version predicts about the __set_oom_adj process walk.

The walk came with 44a70adec910 (v4.8); 67197a4f28d2 (MMF_MULTIPROCESS, v5.10) limited it to
mms shared without CLONE_THREAD, and was backported to the stable releases in
`FIX_BACKPORTS`. `droidoom.analysis.verdicts` cross-checks measured behaviour against these facts.
"""

from __future__ import annotations

import re

from ..vocab import VerdictStatus

#: Stable releases that carry 67197a4f28d2 (MMF_MULTIPROCESS), all released 2020-10-29.
FIX_BACKPORTS: dict[tuple[int, int], int] = {(4, 14): 203, (4, 19): 153, (5, 4): 73}
WALK_INTRODUCED = (4, 8)  # 44a70adec910
FIX_MAINLINE = (5, 10)


def parse_release(release: str | None) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a kernel release such as ``5.4.61-android11-2-g...``."""
    if not release:
        return None
    m = re.search(r"(?<![\d.])(\d{1,2})\.(\d{1,3})(?:\.(\d{1,4}))?", release)
    if not m or not 2 <= int(m.group(1)) <= 9:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def kernel_expectation(release: str | None) -> str:
    """What the kernel version predicts for threaded writes.

    "unaffected" before v4.8 (no walk), "fixed" from v5.10 or a stable release carrying the
    backport (`FIX_BACKPORTS`), "regressed" for other 4.8 <= version < 5.10, "unknown" when the
    release cannot be parsed. Vendor kernels may differ: `verdict` reports disagreement.
    """
    v = parse_release(release)
    if v is None:
        return "unknown"
    if v[:2] < WALK_INTRODUCED:
        return "unaffected"
    if v[:2] >= FIX_MAINLINE:
        return "fixed"
    fixed_at = FIX_BACKPORTS.get(v[:2])
    return "fixed" if fixed_at is not None and v[2] >= fixed_at else "regressed"


def kernel_note(
    status: VerdictStatus, release: str | None, both_flat: bool
) -> tuple[bool | None, str]:
    """(behaviour agrees with the version?, sentence) - None when it cannot be told."""
    v, expect = parse_release(release), kernel_expectation(release)
    if v is None:
        return None, "kernel release unknown: no version cross-check."
    ver, fixed_at = "{}.{}.{}".format(*v), FIX_BACKPORTS.get(v[:2])
    disagree = "(version and behaviour disagree)"
    if expect == "unaffected":
        what = f"{ver} predates the walk (v4.8)"
        if status != VerdictStatus.INCONCLUSIVE:
            return False, f"{what}, yet writes walk: the kernel carries 44a70adec910 {disagree}."
        return (
            (True, f"{what}: consistent with no walk at all.") if both_flat else (None, what + ".")
        )
    if expect == "fixed":
        what = f"{ver} is post-fix"
        other = (f"{ver} is post-fix by version, yet threaded writes walk: the kernel (a vendor "
                 "change?) undoes 67197a4f28d2")  # fmt: skip
    else:
        what = f"{ver} predates the fix ({f'{v[0]}.{v[1]}.{fixed_at}' if fixed_at else '5.10'})"
        other = f"{what}, yet threaded writes are O(1): the vendor kernel carries a backport"
    if status == expect:
        return True, f"{what}: consistent."
    if status == VerdictStatus.INCONCLUSIVE:
        return None, f"{what}."
    return False, f"{other} {disagree}."
