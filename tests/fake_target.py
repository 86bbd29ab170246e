"""An in-memory Target for the runner's control flow (the shape of Mobly's
mock_android_device: a device object that records what it was asked and answers with
canned output).

`FakeTarget` records every command (`log`), keeps the files the runner puts on it in
memory (`files`), answers `sh` with what the device lock, `probe` and cleanup expect, and
plays `droidoom-helper run PLAN RECORDS` from the plan the runner pushed: the stdout lines
and the records file of device_scripts/PROTOCOL.md, one record per planned write. A
`Fault` makes it go wrong at a chosen step: the link drops after N lines, the helper
crashes (no `done`, a nonzero exit, a records file cut mid-record), it is interrupted, the
device's disk fills while recording, a push or pull hits a full disk.

This is for the runner's branches only: nothing here measures anything, and tests of
measurements use the real helper on a real kernel.
"""

from __future__ import annotations

import errno
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from droidoom.errors import PermanentTargetError, TransientTargetError
from droidoom.protocol import HEADER_SIZE, PROTO_VERSION, RECORD_DTYPE, RECORD_SIZE, RECORDS_MAGIC
from droidoom.targets.base import CommandResult, Process, Target, TargetFacts

HELPER = "droidoom-helper"
SERIAL = "FAKE0001"
#: what `droidoom-helper probe` prints (PROTOCOL.md "Lines on stdout")
PROBE = (
    "hello proto=1 source=fake abi=x86_64 pid=4242\n"
    "facts uid=0 euid=0 adj=0 adj_min=-1000 cap_sys_resource=1 pid_max=32768 "
    "threads_max=60000 tasks=300 nproc_limit=-1 cpus=4 clone_vm=1 uid_tasks=100 "
    "mem_available_kb=4000000 mem_task_kb=30 mem_proc_kb=64\n"
    "calib timer_ns=40 timer_min_ns=30\n"
)
ACTIVITY = "procs=300\nloadavg=0.10 0.10 0.10\nhelpers=0\nnow=1700000000\n"
LATENCY_NS = 1500  # every fake write "takes" this long: the numbers mean nothing


@dataclass(frozen=True)
class Fault:
    """One thing that goes wrong, at a chosen step. `after` counts the helper's `run`
    stdout lines served before it strikes (hello, facts, calib, targets, writer, then
    point/progress lines: see FakeTarget.run_lines)."""

    kind: str  # link_lost | crash | interrupted | device_full | push_full | pull_full
    after: int = 0
    short_records: bool = False  # crash: the records file ends mid-record


class FakeProcess(Process):
    """The helper's `run`, replayed from `lines`; each served line brings the records
    file on the target up to the writes that line reports."""

    def __init__(self, target: FakeTarget, lines: list[tuple[str, int]], records: str,
                 fault: Fault | None, rc: int):  # fmt: skip
        super().__init__()
        self._t, self._lines, self._records, self._fault = target, lines, records, fault
        self._rc: int | None = None
        self._final_rc = rc
        self.served = 0

    def lines(self, timeout: float) -> Iterator[str]:
        f = self._fault if self._fault and self._fault.kind in ("link_lost", "crash") else None
        for text, written in self._lines:
            if f is not None and self.served == f.after:
                self._strike(f, written)
                return
            self._t.write_records(self._records, written)
            self.served += 1
            yield text
        self._rc = self._final_rc

    def _strike(self, f: Fault, written: int) -> None:
        """The link drops (the device stays as it was), or the helper dies: no `done`,
        exit 139, maybe half a record at the end of its file."""
        if f.kind == "link_lost":
            self._t.link_up = False
            raise TransientTargetError(f"{self._t.name}: the fake link dropped")
        self._t.write_records(self._records, written, torn=f.short_records)
        self.stderr_tail.append("Segmentation fault")
        self._rc = 139

    def close(self, grace: float = 5.0) -> int | None:
        self._t.log.append(("close", ""))
        return self._rc

    @property
    def returncode(self) -> int | None:
        return self._rc


class FakeTarget(Target):
    """A device in memory. `remote=False` plays this host: its files then live in the
    real directory `workdir` (the runner checks the records file is there to keep it)."""

    def __init__(self, *, fault: Fault | None = None, remote: bool = True,
                 workdir: str = "/data/local/tmp/droidoom", name: str = "fake-1"):  # fmt: skip
        self.name, self.is_remote, self.fault = name, remote, fault
        self._workdir = workdir
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str]] = []
        self.link_up = True
        self.kept_workdir = False
        self.lock_held = False
        self.closed = False
        self.process: FakeProcess | None = None
        self._plan_writes = np.zeros(0, dtype=RECORD_DTYPE)  # set by run_lines()

    # --- files: in memory on a "device", on disk when playing this host ---------------

    def _put(self, path: str, data: bytes) -> None:
        if self.is_remote:
            self.files[path] = data
        else:
            Path(path).write_bytes(data)

    def _get(self, path: str) -> bytes | None:
        if self.is_remote:
            return self.files.get(path)
        return Path(path).read_bytes() if Path(path).is_file() else None

    def _remove(self, path: str) -> None:
        if self.is_remote:
            self.files.pop(path, None)
        else:
            Path(path).unlink(missing_ok=True)

    def exists(self, path: str) -> bool:
        """Whether the target holds `path` now."""
        return self._get(path) is not None

    def write_records(self, path: str, n: int, torn: bool = False) -> None:
        """The records file as the helper leaves it after `n` writes (PROTOCOL.md:
        header, then one 32-byte record per write; `torn` adds half a record)."""
        rec = np.zeros(n, dtype=RECORD_DTYPE)
        rec["t_ns"] = np.arange(n, dtype=np.int64) * 1000 + 1
        rec["latency_ns"] = LATENCY_NS
        plan = self._plan_writes
        rec["seq"] = np.arange(n)
        for field in ("adj_from", "adj_to", "point", "target", "role"):
            rec[field] = plan[field][:n]
        head = RECORDS_MAGIC + PROTO_VERSION.to_bytes(4, "little") + RECORD_SIZE.to_bytes(
            4, "little")  # fmt: skip
        assert len(head) == HEADER_SIZE
        self._put(path, head + rec.tobytes() + (b"\0" * (RECORD_SIZE // 2) if torn else b""))

    # --- Target ----------------------------------------------------------------------

    def facts(self) -> TargetFacts:
        return TargetFacts(device=self.name, transport="fake", model="Fake", abi="x86_64",
                           kernel_release="6.1.0-fake", cpus=4, root=True, pid_max=32768,
                           threads_max=60000)  # fmt: skip

    def _link(self, verb: str, what: str) -> None:
        self.log.append((verb, what))
        if not self.link_up:
            raise TransientTargetError(f"{self.name}: the fake link is down ({verb})")

    def sh(self, script: str, *, timeout: float = 60.0, root: bool = False) -> CommandResult:
        self._link("sh", script)
        if "getprop ro.serialno" in script:
            return CommandResult(0, SERIAL + "\n")
        if script.endswith(" probe"):
            return CommandResult(0, PROBE)
        if 'mkdir "$L"' in script:  # devlock's acquire script
            self.lock_held = True
            return CommandResult(0, "state=acquired\n" + ACTIVITY)
        if "procs=$(" in script:  # devlock's activity sample
            return CommandResult(0, ACTIVITY)
        if "grep -qx" in script and "rm -rf" in script:  # devlock's release
            self.lock_held = False
            return CommandResult(0, "")
        if script.startswith("rm -f "):
            for path in shlex.split(script)[2:]:
                self._remove(path)
            return CommandResult(0, "")
        if script.startswith("cat /sys/devices/system/cpu/online"):
            return CommandResult(0, "0-3\n")
        return CommandResult(0, "")

    def spawn(self, script: str, *, root: bool = False) -> Process:
        self._link("spawn", script)
        words = shlex.split(script.rsplit("exec ", 1)[-1])
        plan, records = words[words.index("run") + 1 :][:2]
        text = self._get(plan)
        if text is None:
            raise PermanentTargetError(f"{self.name}: {plan} is not on the fake")
        lines, rc = self.run_lines(text.decode())
        self.process = FakeProcess(self, lines, records, self.fault, rc)
        return self.process

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        self._link("push", remote)
        if self.fault is not None and self.fault.kind == "push_full":
            raise OSError(errno.ENOSPC, "No space left on device", remote)
        self._put(remote, Path(local).read_bytes())

    def pull(self, remote: str, local: Path) -> None:
        self._link("pull", remote)
        if self.fault is not None and self.fault.kind == "pull_full":
            raise OSError(errno.ENOSPC, "No space left on device", str(local))
        data = self._get(remote)
        if data is None:
            raise PermanentTargetError(f"{self.name}: {remote} is not on the fake")
        Path(local).write_bytes(data)

    def workdir(self) -> str:
        return self._workdir

    def find_files(self, pattern: str) -> list[str]:
        import fnmatch

        names = self.files if self.is_remote else [str(p) for p in Path(self._workdir).iterdir()]
        return sorted(p for p in names if fnmatch.fnmatch(p.rsplit("/", 1)[-1], pattern))

    def install_helper(self) -> str:
        self.helper_pushed = False
        return f"{self._workdir}/{HELPER}"

    def keep_workdir(self) -> None:
        self.kept_workdir = True

    def reach_again(self) -> list[str] | None:
        return ["--local"] if not self.is_remote else ["--serial", self.name]

    def close(self) -> None:
        self.closed = True

    # --- the helper's `run` ------------------------------------------------------------

    def run_lines(self, plan: str) -> tuple[list[tuple[str, int]], int]:
        """(stdout line, writes recorded once it is printed) of `droidoom-helper run` for
        the plan text, and its exit code; a `device_full` fault turns the line it strikes
        at into the helper's error (a full records disk) and ends there."""
        targets, points, writes = _parse_plan(plan)
        self._plan_writes = writes
        total = len(writes)
        out = [(line, 0) for line in PROBE.splitlines()]
        out += [(f"target idx={i} kind={k} pid={5000 + i} threads={n} status=ok", 0)
                for i, k, n in targets]  # fmt: skip
        out.append(("writer cpu=-1 pinned=0 pin_errno=0 fifo=0 fifo_errno=0", 0))
        done = 0
        for idx, population, threads, mode, count in points:
            out.append((f"point idx={idx} population={population} threads={threads} "
                        f"mode={mode} spawn_ns=1000 pids=0-0", done))  # fmt: skip
            done += count
            out.append((f"progress done={done} total={total}", done))
        out.append((f"done writes={done} status=complete reason=none", done))
        f = self.fault
        if f is not None and f.kind == "device_full":
            written = out[f.after - 1][1] if f.after else 0
            msg = "records file: write failed: No space left on device"
            return out[: f.after] + [(f'error code=runtime msg="{msg}"', written)], 4
        if f is not None and f.kind == "interrupted":
            written = out[f.after - 1][1] if f.after else 0
            return out[: f.after] + [
                (f"done writes={written} status=interrupted reason=signal", written)], 130
        return out, 0


_Point = tuple[int, int, int, str, int]  # idx, population, threads, mode, writes


def _parse_plan(text: str) -> tuple[list[tuple[int, str, int]], list[_Point], np.ndarray]:
    """(targets, points with their write counts, the writes' record fields) of a plan."""
    targets: list[tuple[int, str, int]] = []
    points: list[list[Any]] = []
    rows: list[tuple[int, int, int, int, int]] = []
    adj: dict[int, int] = {}
    for line in text.splitlines():
        w = line.split()
        if not w:
            continue
        if w[0] == "target":
            targets.append((int(w[1]), w[2], int(w[3])))
        elif w[0] == "point":
            points.append([int(w[1]), int(w[2]), int(w[3]), w[4], 0])
        elif w[0] == "w":
            t, to, role = int(w[1]), int(w[2]), int(w[3])
            rows.append((adj.get(t, 0), to, points[-1][0], t, role))
            adj[t] = to
            points[-1][4] += 1
    writes = np.array(rows, dtype=[("adj_from", "<i2"), ("adj_to", "<i2"), ("point", "<u2"),
                                   ("target", "u1"), ("role", "u1")])  # fmt: skip
    return targets, [tuple(p) for p in points], writes
