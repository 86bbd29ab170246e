"""One run per device at a time: a lock on the device that survives crashes.

The lock is a directory made with `mkdir` (atomic on every filesystem a phone has) in
the device's work directory, named after the device's own serial (ro.serialno), so every
host and every adb connection that reaches the phone meets the same lock. It holds an
`owner` file (run id, host, host pid, run dir, workdir, creation time on the device)
and, once the helper runs, a `pid` file with the helper's pid on the device.

A lock is stale when its owner is provably gone: same host and the host process is
dead, or the device-side helper pid has exited, or no helper ever started and the lock
is older than STALE_SETUP_S. A stale lock is taken over and its owner returned, so the
runner can finish what that run left (records, a tracefs instance; see leftovers.py).
On a Linux host (`--local`) the lock lives in the user's private directory (see
private.py: never the shared temp directory, where anyone could plant a lock), and a lock
that is not the user's (or root's) own is refused, never taken over.

Every acquire and release also samples what else runs on the device (process count,
load average, other droidoom helpers), which the runner records in run.json.
"""

from __future__ import annotations

import os
import platform
import shlex
import time
from dataclasses import dataclass

from ..errors import DeviceBusyError, PermanentTargetError, TargetError
from ..private import LOCK_DIR_ENV as LOCK_DIR_ENV  # where it always was
from ..private import trusted
from ..protocol import key_values
from ..targets.base import Target

#: A lock whose run never started its helper is stale after this long (s).
STALE_SETUP_S = 600

#: Run ids whose lock this process holds (a lock naming this pid but not listed is stale).
_ACTIVE: set[str] = set()

_ACTIVITY = (
    'echo "procs=$(ls -d /proc/[0-9]* 2>/dev/null | wc -l)"; '
    'echo "loadavg=$(cut -d" " -f1-3 /proc/loadavg 2>/dev/null)"; '
    'echo "helpers=$(pidof droidoom-helper 2>/dev/null | wc -w)"; '
    'echo "now=$(date +%s)"'
)


@dataclass(frozen=True)
class Owner:
    """Who holds (or held) a device lock; parsed from its owner file."""

    run_id: str = ""
    host: str = ""
    host_pid: int = 0
    host_start: str = ""  # /proc/<pid>/stat start time: a reused pid is not the owner
    run_dir: str = ""
    workdir: str = ""
    created: int = 0  # device clock, s
    device_pid: int = 0  # helper pid on the device, 0 before it started

    @classmethod
    def parse(cls, kv: dict[str, str]) -> Owner:
        def num(key: str) -> int:
            try:
                return int(kv.get(key) or 0)
            except ValueError:
                return 0

        return cls(
            kv.get("run_id", ""), kv.get("host", ""), num("host_pid"), kv.get("host_start", ""),
            kv.get("run_dir", ""), kv.get("workdir", ""), num("created"), num("device_pid"),
        )  # fmt: skip

    def describe(self) -> str:
        return f"run {self.run_id or '?'} from {self.host or '?'} (pid {self.host_pid or '?'})"


@dataclass
class DeviceLock:
    """A held lock; `release()` is idempotent and never raises."""

    target: Target
    path: str
    run_id: str
    before: dict[str, int | str]  # device activity when the lock was taken
    stale: Owner | None = None  # the previous owner, if its lock was stale and taken over
    held: bool = True

    @property
    def pid_file(self) -> str:
        return f"{self.path}/pid"

    def wrap(self, command: str) -> str:
        """`command` recording its own pid (the helper's, after exec) in the lock."""
        return f"echo $$ > {shlex.quote(self.pid_file)}; {command}"

    def activity(self) -> dict[str, int | str]:
        """What runs on the device now (process count, load, droidoom helpers)."""
        try:
            res = self.target.sh(_ACTIVITY, timeout=30)
        except TargetError:
            return {}
        return _activity(key_values(res.stdout))

    def abandon(self) -> str:
        """Give the lock up without touching the device (its link is gone): the next
        run finds it stale (this process no longer runs it, or the host is gone)."""
        self.held = False
        _ACTIVE.discard(self.run_id)
        return f"the device lock {self.path} stays until the next run finds it stale"

    def release(self) -> str | None:
        """Remove the lock if it is still ours; return a warning instead of raising."""
        if not self.held:
            return None
        self.held = False
        _ACTIVE.discard(self.run_id)
        q, mine = shlex.quote(self.path), shlex.quote(f"run_id={self.run_id}")
        try:
            self.target.sh(f"grep -qx {mine} {q}/owner 2>/dev/null && rm -rf {q}", timeout=30)
        except TargetError as e:
            return f"could not remove the lock {self.path} ({e}); the next run finds it stale"
        return None


def _activity(kv: dict[str, str]) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for key in ("procs", "helpers"):
        if kv.get(key, "").isdigit():
            out[key] = int(kv[key])
    if kv.get("loadavg"):
        out["loadavg"] = kv["loadavg"]
    return out


def _proc_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _acquire_script(path: str, owner: str) -> str:
    q = shlex.quote(path)
    return (
        f"L={q}\n"
        f'if mkdir "$L" 2>/dev/null; then printf %s {shlex.quote(owner)} > "$L/owner"; '
        'echo "created=$(date +%s)" >> "$L/owner"; echo state=acquired; '
        'else echo state=held; cat "$L/owner" 2>/dev/null; '
        'echo "device_pid=$(cat "$L/pid" 2>/dev/null)"; '
        'p=$(cat "$L/pid" 2>/dev/null); '
        'if [ -n "$p" ] && [ -d "/proc/$p" ]; then echo device_alive=1; '
        "else echo device_alive=0; fi; "
        'echo "mtime=$(stat -c %Y "$L" 2>/dev/null)"; fi\n'
        + _ACTIVITY
    )


def is_stale(prev: Owner, kv: dict[str, str]) -> bool:
    """Is the run `prev` dead? `kv`: what the lock script said of the device side."""
    if prev.host == platform.node() and prev.host_pid == os.getpid():
        return prev.run_id not in _ACTIVE  # ours: stale unless that run is still going
    if prev.host == platform.node() and prev.host_pid > 0:
        start = _proc_start(prev.host_pid)  # reading /proc only: no signal is sent
        return not start or (bool(prev.host_start) and start != prev.host_start)
    if prev.device_pid > 0:
        return kv.get("device_alive") != "1"
    now = int(kv.get("now") or 0)
    since = prev.created or int(kv.get("mtime") or 0)
    return bool(now and since) and now - since > STALE_SETUP_S


def acquire(target: Target, run_id: str, run_dir: str) -> DeviceLock:
    """Take `target`'s lock for `run_id`, taking over a stale one; DeviceBusyError if a
    live run holds it."""
    key = target.lock_key()
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in key)[:64]
    path = f"{target.lock_home()}/droidoom-lock{'-' + safe if safe else ''}"
    me = os.getpid()
    owner = "".join(
        f"{k}={v}\n"
        for k, v in (
            ("run_id", run_id), ("host", platform.node()), ("host_pid", me),
            ("host_start", _proc_start(me)), ("run_dir", run_dir), ("workdir", target.workdir()),
        )  # fmt: skip
    )
    stale = None
    for _ in range(3):  # a takeover races other takers: mkdir decides who wins
        kv = key_values(target.sh(_acquire_script(path, owner), timeout=30).stdout)
        if kv.get("state") == "acquired":
            _ACTIVE.add(run_id)
            return DeviceLock(target, path, run_id, _activity(kv), stale)
        prev = Owner.parse(kv)
        if not target.is_remote:  # this host's files: a planted lock is not a stale run
            _refuse_foreign(path)
        if not is_stale(prev, kv):
            raise DeviceBusyError(_busy(target, path, prev))
        stale = prev
        q = shlex.quote(path)
        target.sh(f"mv {q} {q}.stale.$$ 2>/dev/null && rm -rf {q}.stale.$$", timeout=30)
        time.sleep(0.05)
    raise DeviceBusyError(_busy(target, path, stale or Owner()))


def _refuse_foreign(path: str) -> None:
    """PermanentTargetError if this host's lock at `path` (or its owner file) is not the
    user's or root's: such a lock is never read as a stale run to finish."""
    for p, what in ((path, "the lock"), (f"{path}/owner", "its owner file")):
        why = trusted(p, what)
        if why:
            raise PermanentTargetError(
                f"{why}. droidoom takes over only its own user's stale locks: remove it "
                f"(`rm -r {path}`) once you know whose it is"
            )


def _busy(target: Target, path: str, prev: Owner) -> str:
    where = target.name if target.is_remote else "this host"
    rm = target.shell_hint(f"rm -r {shlex.quote(path)}")
    return (
        f"{where} is busy: {prev.describe()} is profiling it (lock {path}). Two runs at "
        f"once would contaminate each other: wait for it to finish. If that run is gone "
        f"(its host crashed), remove the lock: `{rm}`"
    )
