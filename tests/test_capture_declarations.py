"""A capture source declares what it needs (root) and what it does to the writes (a notice):
the runner reads those typed attributes, whatever the source is called (issue 10, item 2)."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from droidoom import spec as specs
from droidoom.capture import CaptureResult, CaptureSource, build_sources
from droidoom.run.runner import profile
from droidoom.targets.local import LocalTarget

TINY = replace(specs.QUICK, populations=(0,), writes=20, warmup=2, kinds=("single",))
SLOW = "this source slows every write: compare only with runs under it"


class Passthrough(CaptureSource):
    """Wraps nothing and records nothing; only its declarations matter here."""

    name = "passthrough"
    slows_writes = SLOW

    def __init__(self) -> None:
        self.disarmed = False

    def unavailable(self, target) -> str | None:
        return None

    def arm(self, target, ctx) -> None:
        self.needs_root = False

    def wrap(self, command: str) -> str:
        return command

    def collect(self, target, samples: pd.DataFrame, run_dir, info) -> CaptureResult:
        return CaptureResult(samples, {"seen": len(samples)})

    def disarm(self, target) -> None:
        self.disarmed = True


class RootSpy(LocalTarget):
    """The real local target; remembers the `root` the runner asked spawn() for."""

    roots: list[bool]

    def spawn(self, script: str, *, root: bool = False):
        self.roots = [*getattr(self, "roots", []), root]
        return super().spawn(script, root=False)


def test_a_source_that_slows_the_writes_says_so_whatever_its_name(tmp_path):
    src = Passthrough()
    res = profile(LocalTarget(), TINY, tmp_path, captures=[src])
    assert res.status == "complete"
    assert SLOW in res.notices
    assert res.meta["captures"]["passthrough"] == {"seen": len(res.samples)}
    assert src.disarmed


def test_the_run_asks_for_root_when_a_source_declares_it(tmp_path):
    class NeedsRoot(Passthrough):
        slows_writes = None

        def arm(self, target, ctx) -> None:
            self.needs_root = True

    target = RootSpy()
    res = profile(target, TINY, tmp_path, captures=[NeedsRoot()])
    assert target.roots == [True]
    assert not any("slows" in n for n in res.notices)


def test_sources_are_built_in_wrap_order_and_declare_their_needs():
    ftrace, perfetto, perf = build_sources(["perf", "clock", "perfetto", "ftrace"])
    assert [s.name for s in (ftrace, perfetto, perf)] == ["ftrace", "perfetto", "perf"]
    assert ftrace.needs_root and "--capture ftrace" in (ftrace.slows_writes or "")
    assert perfetto.slows_writes is None and perf.slows_writes is None
