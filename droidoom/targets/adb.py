"""AdbTarget: a phone (or anything speaking adbd) through an adb server, via adbutils.

Round trips are the cost here (~20 ms each through adbutils), so facts come from one
script, the helper push is skipped when its hash matches, and every command that
matters runs over shell protocol v2, whose exit packet cannot be lost silently (plain
`shell:` returns whatever arrived when a device drops).
"""

from __future__ import annotations

import queue
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path

import adbutils
from adbutils.errors import AdbError, AdbTimeout

from ..errors import PermanentTargetError, TransientTargetError
from ..helpers import ABIS
from .base import CommandResult, Process, Target, TargetFacts
from .select import AdbServer

#: Candidate working directories, best first: /data/local/tmp is writable and exec for
#: the shell user on every Android release.
WORKDIRS = ("/data/local/tmp/droidoom", "/data/local/tmp")

# Shell v2 packet ids.
_STDIN, _STDOUT, _STDERR, _EXIT, _CLOSE_STDIN = 0, 1, 2, 3, 4

# One script, one round trip: every fact we record, as key=value lines.
_FACTS_SCRIPT = r"""
for kv in model=ro.product.model device=ro.product.device brand=ro.product.brand \
  manufacturer=ro.product.manufacturer fingerprint=ro.build.fingerprint \
  sdk=ro.build.version.sdk release=ro.build.version.release abi=ro.product.cpu.abi \
  abilist=ro.product.cpu.abilist build_type=ro.build.type debuggable=ro.debuggable; do
  echo "${kv%%=*}=$(getprop ${kv#*=})"
done
echo "kernel=$(uname -r)"
echo "machine=$(uname -m)"
echo "cpus_online=$(cat /sys/devices/system/cpu/online 2>/dev/null)"
echo "cpus=$(grep -c ^processor /proc/cpuinfo)"
g=/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor
echo "governors=$(cat $g 2>/dev/null | sort -u | tr '\n' ' ')"
echo "pid_max=$(cat /proc/sys/kernel/pid_max)"
echo "threads_max=$(cat /proc/sys/kernel/threads-max)"
echo "uid=$(id -u)"
echo "shell_oom_score_adj=$(cat /proc/$$/oom_score_adj)"
echo "battery_temp=$(cat /sys/class/power_supply/battery/temp 2>/dev/null)"
echo "thermal_temp=$(cat /sys/class/thermal/thermal_zone0/temp 2>/dev/null)"
if [ "$(su 0 id -u 2>/dev/null)" = 0 ]; then echo su=aosp
elif [ "$(su -c 'id -u' 2>/dev/null)" = 0 ]; then echo su=magisk
else echo su=; fi
for d in /sys/kernel/tracing /sys/kernel/debug/tracing; do
  [ -e "$d/events" ] && { echo "tracefs=$d"; break; }
done
echo "tracefs_readable=$([ -r /sys/kernel/tracing/trace ] && echo 1 || echo 0)"
echo "simpleperf=$(command -v simpleperf)"
echo "perf=$(command -v perf)"
echo "perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null)"
"""


def _client(server: AdbServer) -> adbutils.AdbClient:
    return adbutils.AdbClient(host=server.host, port=server.port, socket_timeout=30)


def list_serials(server: AdbServer) -> list[str]:
    """Serials of devices in state `device` on `server` (never starts a server)."""
    try:
        return [i.serial for i in _client(server).list() if i.state == "device"]
    except (AdbError, OSError) as e:
        raise TransientTargetError(f"adb server {server} did not answer: {e}") from e


def _translate(e: BaseException, name: str) -> Exception:
    text = str(e)
    if "not found" in text or "offline" in text or "unauthorized" in text:
        return PermanentTargetError(
            f"{name}: {text.strip()}. Check `droidoom devices`, the cable, and the "
            "authorization prompt on the phone"
        )
    return TransientTargetError(f"{name}: connection lost ({text.strip() or type(e).__name__})")


class AdbProcess(Process):
    """A shell v2 stream: stdout lines through a reader thread, exit code from its packet."""

    def __init__(self, conn, name: str):
        self._conn = conn
        self._name = name
        self._q: queue.Queue = queue.Queue()
        self._rc: int | None = None
        self.stderr_tail: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                header = self._conn.read_exact(5)
                kind, n = header[0], int.from_bytes(header[1:5], "little")
                data = self._conn.read_exact(n) if n else b""
                if kind == _STDOUT:
                    buf += data
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        self._q.put(line.decode(errors="replace"))
                elif kind == _STDERR:
                    self.stderr_tail = (
                        self.stderr_tail + data.decode(errors="replace").splitlines()
                    )[-20:]
                elif kind == _EXIT:
                    self._rc = data[0] if data else 255
                    break
        except (AdbError, EOFError, OSError) as e:
            self._q.put(_translate(e, self._name))
        if buf:
            self._q.put(buf.decode(errors="replace"))
        self._q.put(None)

    def lines(self, timeout: float) -> Iterator[str]:
        while True:
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                raise TransientTargetError(
                    f"{self._name}: no output for {timeout:.0f} s; device stalled or unplugged"
                ) from None
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self, grace: float = 5.0) -> int | None:
        if self._rc is None:
            try:  # stdin EOF: the helper tears down and exits on its own
                self._conn.conn.sendall(bytes([_CLOSE_STDIN]) + (0).to_bytes(4, "little"))
            except OSError:
                pass
            self._thread.join(grace)
        # Closing the stream makes adbd hang up the process if it is still there.
        self._conn.close()
        self._thread.join(1.0)
        return self._rc

    @property
    def returncode(self) -> int | None:
        return self._rc


class AdbTarget(Target):
    """A device behind an adb server, addressed by serial."""

    def __init__(self, serial: str, server: AdbServer | None = None, workdir: str | None = None):
        self.serial = serial
        self.name = serial
        self.server = server or AdbServer.from_env()
        self._device = _client(self.server).device(serial)
        self._workdir = workdir
        self._facts: TargetFacts | None = None
        self._raw: dict[str, str] = {}

    # --- plumbing -----------------------------------------------------------------

    def _wrap_root(self, script: str, root: bool) -> str:
        if not root or self._facts is None or self._raw.get("uid") == "0":
            return script
        su = self._raw.get("su")
        if su == "aosp":
            return f"su 0 sh -c {shlex.quote(script)}"
        if su == "magisk":
            return f"su -c {shlex.quote(script)}"
        raise PermanentTargetError(
            f"{self.name}: this needs root and the device has none (no `adb root`, no su); "
            "use a userdebug/eng build or drop the root-only option"
        )

    def sh(self, script: str, *, timeout: float = 60.0, root: bool = False) -> CommandResult:
        script = self._wrap_root(script, root)
        try:
            r = self._device.shell2(script, timeout=timeout, v2=True)
        except AdbTimeout as e:
            raise TransientTargetError(
                f"{self.name}: command timed out after {timeout:.0f} s: {script[:80]}"
            ) from e
        except (AdbError, EOFError, OSError) as e:
            raise _translate(e, self.name) from e
        return CommandResult(r.returncode, r.stdout, r.stderr)

    def spawn(self, script: str, *, root: bool = False) -> Process:
        script = self._wrap_root(script, root)
        try:
            conn = self._device.open_transport(timeout=None)
            conn.send_command(f"shell,v2,raw:{script}")
            conn.check_okay()
        except (TimeoutError, AdbError, EOFError, OSError) as e:
            raise _translate(e, self.name) from e
        return AdbProcess(conn, self.name)

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        try:
            self._device.sync.push(Path(local), remote, mode=mode, check=True)
        except (AdbError, EOFError, OSError) as e:
            raise _translate(e, self.name) from e

    def pull(self, remote: str, local: Path) -> None:
        try:
            self._device.sync.pull_file(remote, Path(local))
        except (AdbError, EOFError, OSError) as e:
            raise _translate(e, self.name) from e

    def workdir(self) -> str:
        if self._workdir is None:
            for d in WORKDIRS:
                q = shlex.quote(d)
                if self.sh(f"mkdir -p {q} && touch {q}/.w && rm {q}/.w", timeout=30).ok:
                    self._workdir = d
                    break
            else:
                raise PermanentTargetError(
                    f"{self.name}: none of {', '.join(WORKDIRS)} is writable; pass --workdir"
                )
        return self._workdir

    def clean(self) -> str:
        """Remove everything droidoom put on the device; returns the directory cleaned."""
        d = self.workdir()
        q = shlex.quote(d)
        if d.rstrip("/") == "/data/local/tmp":  # shared dir: remove only our files
            self.sh(f"rm -f {q}/droidoom-helper {q}/plan-*.txt {q}/records-*.bin")
        else:
            self.sh(f"rm -rf {q}")
        return d

    # --- facts --------------------------------------------------------------------

    def facts(self) -> TargetFacts:
        if self._facts is not None:
            return self._facts
        res = self.sh(_FACTS_SCRIPT, timeout=60)
        raw = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
        self._raw = raw
        abis = [raw.get("abi", "")] + raw.get("abilist", "").split(",")
        abi = next((a for a in abis if a in ABIS), None)
        if abi is None:
            raise PermanentTargetError(
                f"{self.name}: ABI {raw.get('abi')!r} has no droidoom helper "
                f"(have {', '.join(ABIS)})"
            )
        root = raw.get("uid") == "0" or bool(raw.get("su"))
        sdk = raw.get("sdk", "")
        self._facts = TargetFacts(
            device=self.serial,
            transport="adb",
            model=raw.get("model", ""),
            abi=abi,
            kernel_release=raw.get("kernel", ""),
            cpus=int(raw.get("cpus") or 0),
            root=root,
            pid_max=int(raw.get("pid_max") or 0),
            threads_max=int(raw.get("threads_max") or 0),
            fingerprint=raw.get("fingerprint", ""),
            sdk=int(sdk) if sdk.isdigit() else None,
            extra={k: v for k, v in raw.items() if k not in ("kernel", "pid_max", "threads_max")}
            | {"adb_server": str(self.server)},
        )
        return self._facts
