"""VmTarget: a kernel image booted in QEMU, driven like a phone.

Only the static x86_64 helper runs in the guest (Python stays on the host: emulated Python
imports alone take ~40 s under TCG). The guest's userspace is droidoom's own initramfs
(droidoom/lab/initramfs.py); the host talks to its agent over one virtio serial port:

    host -> guest  one line per request: VERB ID [base64 script/path] [size] [mode]
    guest -> host  RUN   "__DD_R ID RC OUTLEN ERRLEN\\n" + stdout + stderr (exact lengths)
                   PUT   "__DD_GO ID" then the host sends SIZE raw bytes; "__DD_OK ID SIZE"
                         (PUTZ: the same with SIZE gzipped bytes, on the slow UART channel)
                   GET   "__DD_F ID MISSING SIZE\\n" + SIZE raw bytes
                   SPAWN stdout streams as is, then "\\n__DD_X ID RC"; CLOSE ID closes its
                         stdin (the helper's "host gone" signal), KILL ID sends SIGTERM;
                         a run's records file streams beside it (droidoom/lab/follow.py)

Lengths and exit codes are framed, so output is never truncated silently and no exit code is
lost (the lesson of `adb shell` v1).
"""

from __future__ import annotations

import base64
import gzip
import json
import platform
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..errors import PermanentTargetError, TransientTargetError
from ..lab import cache_dir, follow
from ..lab.arch import Image, channels, detect, lacks
from ..lab.initramfs import GUEST_HELPER, MISSING_MARK, initramfs
from ..lab.qemu import Machine, VmSpec, kvm_usable, qemu_version, sha256
from .base import CommandResult, Process, Target, TargetFacts, find_files_sh

_T = TypeVar("_T")

#: Seconds a KVM boot may take before we call KVM unusable and fall back to TCG.
KVM_PROBE_TIMEOUT = 8.0


class Channel:
    """Bytes from the agent's socket, buffered by a reader thread; reads with deadlines."""

    def __init__(self, sock: socket.socket, why_dead: Callable[[], str]):
        self._sock, self._why_dead = sock, why_dead
        self._buf = bytearray()
        self._cv = threading.Condition()
        self._eof = False
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except OSError:
                data = b""
            with self._cv:
                if data:
                    self._buf += data
                else:
                    self._eof = True
                self._cv.notify_all()
            if not data:
                return

    def send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise TransientTargetError(f"the VM is gone ({e}); {self._why_dead()}") from None

    def _wait(self, ready: Callable[[], _T | None], timeout: float, what: str) -> _T:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                got = ready()
                if got is not None:
                    return got
                if self._eof:
                    raise TransientTargetError(f"the VM stopped while {what}; {self._why_dead()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransientTargetError(
                        f"no answer from the VM for {timeout:.0f} s while {what}; "
                        f"{self._why_dead()}"
                    )
                self._cv.wait(min(left, 1.0))

    def line(self, timeout: float, what: str) -> str:
        def ready() -> str | None:
            i = self._buf.find(b"\n")
            if i < 0:
                return None
            out = bytes(self._buf[:i])
            del self._buf[: i + 1]
            return out.decode(errors="replace")

        return self._wait(ready, timeout, what)

    def exact(self, n: int, timeout: float, what: str) -> bytes:
        def ready() -> bytes | None:
            if len(self._buf) < n:
                return None
            out = bytes(self._buf[:n])
            del self._buf[:n]
            return out

        return self._wait(ready, timeout, what)

    def reply(self, tag: str, rid: int, timeout: float, what: str) -> list[str]:
        """Skip lines up to the one starting "TAG RID"; return its remaining words."""
        prefix = f"{tag} {rid}"
        while True:
            ln = self.line(timeout, what)
            if ln == prefix or ln.startswith(prefix + " "):
                return ln.split()[2:]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class VmProcess(Process):
    """A SPAWNed script whose stdout streams over the channel until its "__DD_X" line."""

    def __init__(self, target: VmTarget, rid: int):
        super().__init__()
        self._t, self._id = target, rid
        self._sink = target._sinks.pop(rid, None)
        self._rc: int | None = None
        self._done = False

    def lines(self, timeout: float) -> Iterator[str]:
        mark = f"__DD_X {self._id} "
        while not self._done:
            ln = self._t._chan.line(timeout, "the helper ran")
            if ln.startswith(mark):
                self._rc, self._done = int(ln.split()[2]), True
                return
            if self._sink is not None and follow.take(ln, self._id, self._sink):
                continue  # a piece of the records file: kept on the host, not an event
            if ln:
                yield ln + "\n"

    def close(self, grace: float = 5.0) -> int | None:
        if self._done:
            return self._rc
        try:
            self._t._send(f"CLOSE {self._id}\n".encode())
            for verb in ("KILL", None):
                try:
                    for _ in self.lines(grace):
                        pass
                    return self._rc
                except TransientTargetError:
                    if verb is None:
                        break
                    self._t._send(f"{verb} {self._id}\n".encode())
        except TransientTargetError:
            pass
        return self._rc

    @property
    def returncode(self) -> int | None:
        return self._rc


class VmTarget(Target):
    """A kernel image booted in QEMU (TCG, or KVM when a boot probe works)."""

    def __init__(self, spec: VmSpec, *, label: str | None = None):
        from ..native import binary_path

        self.image: Image = detect(spec.image)
        self.arch = self.image.arch
        self.spec = spec
        self.qemu = qemu_version(self.arch)
        self.image_sha = sha256(spec.image)
        # a generic file name says nothing: its directory does (kernels/<key>/regressed/Image)
        generic = ("bzImage", "vmlinuz", "Image", "Image.gz", "Image.lz4")
        stem = spec.image.parent.name if spec.image.name in generic else spec.image.stem
        self.name = f"qemu:{label or stem}-{self.image_sha[:8]}"
        self._initrd = initramfs(binary_path(self.arch.abi), cache_dir(), self.arch)
        self._channels = channels(self.image) if spec.channel == "auto" else [spec.channel]
        self.channel = self._channels[0]
        self._lock = threading.Lock()
        self._rid = 0
        self._facts: TargetFacts | None = None
        self.machine: Machine | None = None
        self.kvm_note = ""
        self._follow: tuple[str, follow.Sink] | None = None  # for the next spawn
        self._sinks: dict[int, follow.Sink] = {}
        self._boot()

    # --- boot -----------------------------------------------------------------------

    def _kvm_probe_file(self) -> Path:
        return cache_dir() / "kvm-probe" / f"{self.image_sha[:16]}-{self.qemu}.json"

    def _accels(self) -> list[str]:
        if self.spec.accel != "auto":
            return [self.spec.accel]
        ok, why = kvm_usable()
        host = platform.machine().lower()
        if host not in ({"x86_64", "amd64"} if self.arch.name == "x86_64" else
                        {"aarch64", "arm64"}):  # fmt: skip
            ok, why = False, f"an {self.arch.name} guest on an {host} host runs under TCG only"
        probe = self._kvm_probe_file()
        if ok and probe.is_file():
            ok, why = False, json.loads(probe.read_text()).get("why", "a cached probe failed")
        self.kvm_note = why
        return ["kvm", "tcg"] if ok else ["tcg"]

    def _boot(self) -> None:
        accels = self._accels()
        for accel in accels:
            fallback = accel == "kvm" and len(accels) > 1
            timeout = KVM_PROBE_TIMEOUT if fallback else self.spec.boot_timeout
            try:
                self._boot_with(accel, timeout)
                return
            except PermanentTargetError as e:
                if not fallback:
                    raise
                self.kvm_note = f"KVM boot probe failed ({str(e).splitlines()[0][:120]})"
                probe = self._kvm_probe_file()
                probe.parent.mkdir(parents=True, exist_ok=True)
                probe.write_text(json.dumps({"why": self.kvm_note}))

    def _boot_with(self, accel: str, timeout: float) -> None:
        """Boot on the first agent channel that works (an arm64 image may have a virtio
        console on PCI or MMIO, or only the PL011 UART); say what the image lacks if none."""
        tried: list[str] = []
        for i, channel in enumerate(self._channels):
            try:
                self._boot_channel(accel, timeout, channel)
                self.channel = channel
                return
            except PermanentTargetError as e:
                tried.append(f"{channel}: {str(e).splitlines()[0].split('; ')[0]}")
                # a missing virtio port (init says so, or, with no console to say it on, just
                # powers off: "QEMU exited"), or no agent on the UART: the next channel may
                # work; a panic would be the same on every channel
                marks = ("virtio serial port", "did not reach", "QEMU exited while booting")
                if not any(m in str(e) for m in marks):
                    raise
                if i < len(self._channels) - 1:
                    continue
                miss = lacks(self.image) if self.arch.name == "arm64" else ""
                if not miss:
                    raise
                earlier = f" (tried {'; '.join(tried[:-1])})" if len(tried) > 1 else ""
                raise PermanentTargetError(
                    f"no agent channel worked{earlier}: {self.spec.image} may lack {miss}. "
                    f"Last: {e}"
                ) from None

    def _boot_channel(self, accel: str, timeout: float, channel: str) -> None:
        m = Machine(self.spec, self._initrd, accel, self.arch, channel, self.image.path)
        self.machine = m
        self._chan = Channel(m.sock, self._why_dead)
        t0 = time.monotonic()
        try:
            while True:
                try:
                    ln = self._chan.line(0.5, "booting")
                except TransientTargetError:
                    ln = None
                if ln and ln.startswith("__DD_READY"):
                    self.release = (ln.split() + ["?"])[1]
                    break
                if ln is not None and channel == "serial":  # the console is the channel
                    with open(m.console_log, "a") as log:
                        log.write(ln + "\n")
                tail = m.console_tail(40)
                if "Kernel panic" in tail or MISSING_MARK in tail or not m.alive() or (
                    time.monotonic() - t0 > timeout
                ):
                    raise PermanentTargetError(self._boot_failure(accel, timeout, tail))
        except BaseException:
            self.machine = None
            m.close()
            raise
        self.boot_s = time.monotonic() - m.started
        self.accel = accel

    def _boot_failure(self, accel: str, timeout: float, tail: str) -> str:
        missing = [ln.split(MISSING_MARK, 1)[1].strip() for ln in tail.splitlines()
                   if MISSING_MARK in ln]  # fmt: skip
        if missing:
            head = f"kernel {self.spec.image} lacks {'; '.join(missing)}"
        elif "Kernel panic" in tail:
            head = f"kernel {self.spec.image} panicked while booting ({accel})"
        elif not self.machine or not self.machine.alive():
            head = f"QEMU exited while booting {self.spec.image} ({accel})"
        else:
            head = f"{self.spec.image} did not reach droidoom's agent in {timeout:.0f} s ({accel})"
        if not tail:
            tail = (
                "(no console output: the kernel needs CONFIG_SERIAL_8250_CONSOLE, console=ttyS0)"
                if self.arch.name == "x86_64" else "(no console output: the kernel needs "
                "CONFIG_SERIAL_AMBA_PL011_CONSOLE, console=ttyAMA0)"
            )  # fmt: skip
        hint = (f"`droidoom doctor --kernel {self.spec.image}` says what it can do, "
                f"`droidoom lab config --arch {self.arch.name}` prints the config it needs")
        return f"{head}; {hint}. Console tail:\n{tail}"

    def _why_dead(self) -> str:
        m = self.machine
        if m is None:
            return "no VM"
        if m.timed_out:
            return f"the VM hit its {m.limit_s:.0f} s limit and was stopped"
        tail = m.console_tail(8)
        how = m.exit_text()
        how = f"{how}; " if how else ""
        return f"{how}console tail:\n{tail}" if tail else f"{how}the console is empty"

    # --- Target ---------------------------------------------------------------------

    def _next(self) -> int:
        self._rid += 1
        return self._rid

    def sh(self, script: str, *, timeout: float = 60.0, root: bool = False) -> CommandResult:
        with self._lock:
            rid = self._next()
            self._chan.send(f"RUN {rid} {_b64(script)}\n".encode())
            rc, n_out, n_err = map(int, self._chan.reply("__DD_R", rid, timeout, "a command ran"))
            out = self._chan.exact(n_out, timeout, "reading output")
            err = self._chan.exact(n_err, timeout, "reading output")
        return CommandResult(rc, out.decode(errors="replace"), err.decode(errors="replace"))

    def spawn(self, script: str, *, root: bool = False) -> Process:
        # Under the channel lock like every other request: an unlocked SPAWN could take
        # the id another thread's request just took, or interleave its line with a PUT.
        with self._lock:
            rid = self._next()
            if self._follow is not None:
                (records, self._sinks[rid]), self._follow = self._follow, None
                script = follow.follow_script(script, records, rid)
            self._chan.send(f"SPAWN {rid} {_b64(script)}\n".encode())
        return VmProcess(self, rid)

    def _send(self, data: bytes) -> None:
        """One request line sent whole under the channel lock (VmProcess's CLOSE/KILL)."""
        with self._lock:
            self._chan.send(data)

    ephemeral = True
    streams_records = True

    def stream_records(self, remote: str, sink: follow.Sink) -> None:
        """The next spawned script streams `remote` to `sink` as it grows: the guest's
        files die with it, what reached the host does not."""
        self._follow = (remote, sink)

    def expect_run(self, seconds: float) -> None:
        """The next run may take `seconds`: the VM's watchdog allows that from now."""
        if self.machine is not None:
            self.machine.set_limit(seconds)

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        data = Path(local).read_bytes()
        # Over the UART host->guest bytes crawl (~6 KB/s under TCG): send them gzipped
        # (PUTZ; a quick run's 170 KB plan is 7 KB so). The guest checks the unpacked size.
        verb, wire = ("PUTZ", gzip.compress(data, 6)) if self.channel == "serial" else ("PUT", data)
        with self._lock:
            rid = self._next()
            self._chan.send(f"{verb} {rid} {_b64(remote)} {len(wire)} {mode:o}\n".encode())
            self._chan.reply("__DD_GO", rid, 30, "starting a push")
            self._chan.send(wire)
            (size,) = self._chan.reply("__DD_OK", rid, 60, "pushing a file")
        if int(size) != len(data):
            raise TransientTargetError(f"push of {remote}: {size} of {len(data)} bytes arrived")

    def pull(self, remote: str, local: Path) -> None:
        with self._lock:
            rid = self._next()
            self._chan.send(f"GET {rid} {_b64(remote)}\n".encode())
            missing, size = map(int, self._chan.reply("__DD_F", rid, 60, "pulling a file"))
            if missing:
                raise TransientTargetError(f"{self.name}: {remote} does not exist in the guest")
            Path(local).write_bytes(self._chan.exact(size, 120, "pulling a file"))

    def workdir(self) -> str:
        return "/tmp"

    def lock_key(self) -> str:
        """"": the guest is this process's own (no getprop there either)."""
        return ""

    def find_files(self, pattern: str) -> list[str]:
        return find_files_sh(self, [self.workdir()], pattern)

    def install_helper(self) -> str:
        self.helper_pushed = False  # it is part of the initramfs
        return GUEST_HELPER

    def facts(self) -> TargetFacts:
        if self._facts is None:
            res = self.sh(
                # one line each, also without sysctl files (CONFIG_PROC_SYSCTL=n: 0)
                "uname -r; nproc; for f in pid_max threads-max; do "
                "cat /proc/sys/kernel/$f 2>/dev/null || echo 0; done; uname -v", timeout=30,
            )  # fmt: skip
            rel, cpus, pid_max, threads_max, version = (res.stdout.splitlines() + [""] * 5)[:5]
            self._facts = TargetFacts(
                device=self.name,
                transport="qemu",
                model=f"QEMU {self.qemu} ({self.accel})",
                abi=self.arch.abi,
                kernel_release=rel,
                cpus=int(cpus or 0),
                root=True,
                pid_max=int(pid_max or 0),
                threads_max=int(threads_max or 0),
                fingerprint=f"{self.spec.image.name} sha256:{self.image_sha[:16]}",
                extra={"kernel_version": version, "vm": self.vm_info(),
                       "machine": self.arch.qemu.removeprefix("qemu-system-")},  # fmt: skip
            )
        return self._facts

    def vm_info(self) -> dict[str, Any]:
        """What run.json records about the VM."""
        return {
            "image": str(self.spec.image.resolve()),
            "image_sha256": self.image_sha,
            "arch": self.arch.name,
            "compression": self.image.compression,
            "machine": self.arch.machine,
            "cpu": "host" if self.accel == "kvm" else self.arch.tcg_cpu,
            "channel": self.channel,
            "accel": self.accel,
            "accel_note": self.kvm_note,
            "qemu": self.qemu,
            "vcpus": self.spec.cpus,
            "memory_mb": self.spec.memory_mb,
            "boot_s": round(self.boot_s, 3),
            "kernel_release": self.release,
        }

    def close(self) -> None:
        if self.machine is not None:
            self.machine.close()
            self.machine = None
