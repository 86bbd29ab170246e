"""pytest plugin: timing checks skipped because the host was too busy are counted.

A timing check (marked `timing`) that cannot measure on a busy host skips through
`skip_busy`; the end of the run says how many did ("N timing check(s) of M skipped: host
busy"), and a run where more than a quarter of them skipped fails instead of passing
quietly: it proved nothing about timing.
"""

from __future__ import annotations

import pytest

#: The reason of a timing check skipped because the host was too busy to measure it.
BUSY = "host busy: "


def skip_busy(reason: str) -> None:
    """Skip a timing check (marked `timing`) because the host was too busy: counted at the
    end of the run, and a run where more than a quarter of them skip fails."""
    pytest.skip(BUSY + reason)


def _timing_outcomes(reporter) -> tuple[int, int]:
    """(timing checks that ran, of them skipped because the host was busy)."""
    ran, busy = set(), set()
    for outcome in ("passed", "failed", "skipped"):
        for rep in reporter.stats.get(outcome, []):
            if "timing" in getattr(rep, "keywords", {}):
                ran.add(rep.nodeid)
                if outcome == "skipped" and BUSY in str(rep.longrepr):
                    busy.add(rep.nodeid)
    return len(ran), len(busy)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    ran, busy = _timing_outcomes(terminalreporter)
    if busy:
        terminalreporter.write_line(f"{busy} timing check(s) of {ran} skipped: host busy")


def pytest_sessionfinish(session, exitstatus) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    ran, busy = _timing_outcomes(reporter)
    if ran and busy * 4 > ran:  # a quiet pass on a host too busy to measure proves nothing
        reporter.write_line(f"FAILED: {busy} of {ran} timing checks skipped (host busy): more "
                            "than a quarter; run the suite on a quieter machine")  # fmt: skip
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
