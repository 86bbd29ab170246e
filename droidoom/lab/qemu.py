"""One QEMU guest as a child process that never outlives droidoom.

QEMU runs with PR_SET_PDEATHSIG=SIGKILL (it dies with us even on SIGKILL/SIGTERM), is killed
in `close()` (a context manager, so Ctrl-C and errors too) and by a watchdog after `timeout`
seconds. The console goes to a log file (its tail explains a failed boot); the agent's
virtio serial port is a unix socket that QEMU connects to.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import PermanentTargetError, UsageError
from .arch import X86_64, Arch, detect

QEMU = X86_64.qemu
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class VmSpec:
    """How to boot the guest."""

    image: Path  # an x86_64 bzImage
    cpus: int = 2  # vCPUs
    memory_mb: int = 1024  # guest RAM
    accel: str = "auto"  # auto (kvm if a boot probe works, else tcg) | kvm | tcg
    # The VM is killed after this many seconds from boot unless a run asks for longer
    # (Machine.set_limit: a run's limit follows its plan, droidoom/run/planned.py).
    timeout: float = 900.0
    boot_timeout: float = 60.0  # seconds for the guest's agent to answer under TCG
    append: str = ""  # extra kernel command line
    channel: str = "auto"  # agent channel: auto (what the image has), virtio-pci/-mmio, serial


def check_image(image: Path) -> None:
    """A kernel boot image droidoom can boot (droidoom.lab.arch.detect), else a UsageError."""
    detect(image)


def qemu_version(arch: Arch = X86_64) -> str:
    """`qemu-system-<arch> --version` first line, or a UsageError saying what to install."""
    exe = shutil.which(arch.qemu)
    if exe is None:
        raise UsageError(f"{arch.qemu} not found: `apt-get install {arch.qemu_package}`")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else out.strip()[:40]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def kvm_usable() -> tuple[bool, str]:
    """(try KVM?, why not). PVM hosts (kvm_pvm loaded) boot only PVM guests: skip them."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    if Path("/sys/module/kvm_pvm").exists():
        return False, "this host's KVM is PVM (kvm_pvm), which boots only PVM guest kernels"
    return True, ""


#: Where the guest's socket and console log go: a short path whatever TMPDIR is (a unix
#: socket path has room for 107 bytes) and one QEMU's option parser reads as it is.
SHORT_DIRS = ("/tmp", "/run", "/dev/shm")
_SUN_PATH_MAX = 107


def private_dir() -> Path:
    """A new directory of our own (mode 0700) with a short, comma-free path, for the
    VM's socket and console log; TMPDIR only if none of SHORT_DIRS will do."""
    for parent in (*SHORT_DIRS, tempfile.gettempdir()):
        if "," in parent or len(parent) > 60:
            continue
        try:
            return Path(tempfile.mkdtemp(prefix="droidoom-vm-", dir=parent))
        except OSError:
            continue
    raise PermanentTargetError(
        f"no short writable directory for QEMU's socket ({', '.join(SHORT_DIRS)} and TMPDIR "
        "are not usable): make /tmp writable or set TMPDIR to a short path without commas"
    )


def qemu_opt(value: str | Path) -> str:
    """`value` as a QEMU option value (`key=value,...`): a comma is written twice."""
    return str(value).replace(",", ",,")


#: QEMU's virtio-serial controller per agent channel ("serial": none, the UART is the agent's).
VIRTIO_SERIAL = {"virtio-pci": "virtio-serial-pci", "virtio-mmio": "virtio-serial-device"}


def qemu_command(spec: VmSpec, initrd: Path, accel: str, sock: Path, console: Path,
                 arch: Arch = X86_64, channel: str = "virtio-pci",
                 kernel: Path | None = None) -> list[str]:  # fmt: skip
    """QEMU's argv (a list, no shell) for `spec`, its agent on the unix socket `sock` (a
    server that QEMU connects to) and its console written to `console`. `channel` is how the
    agent talks: a virtio console port on PCI or MMIO, or ("serial") the serial console
    itself, whose output then reaches `sock` instead of `console`. `kernel` is the image
    QEMU loads (default spec.image; a decompressed copy for Image.gz)."""
    if len(str(sock)) > _SUN_PATH_MAX:
        raise PermanentTargetError(f"QEMU's socket path is too long for a unix socket: {sock}")
    # init is /bin/busybox with the arguments after "--" (the kernel passes them to init):
    # `busybox sh /init` runs the script without CONFIG_BINFMT_SCRIPT
    append = f"console={arch.console} panic=-1 quiet rdinit=/bin/busybox"
    if channel == "serial":  # init reads droidoom.port from /proc/cmdline
        append += f" droidoom.port={arch.console}"
    chardev = f"socket,id=agent,path={qemu_opt(sock)}"  # key=value,...: escaped
    cmd = [
        shutil.which(arch.qemu) or arch.qemu, "-nodefaults", "-display", "none", "-no-reboot",
        "-monitor", "none", "-accel", accel, "-smp", str(spec.cpus),
        "-m", str(spec.memory_mb), "-kernel", str(kernel or spec.image), "-initrd", str(initrd),
        "-append", f"{append} {spec.append} -- sh /init", "-chardev", chardev,
    ]  # fmt: skip
    if arch.machine != "pc":
        cmd += ["-M", arch.machine]
    if channel == "serial":
        cmd += ["-serial", "chardev:agent"]
    else:
        # -serial file: takes the rest as the path; -kernel/-initrd take a bare path
        cmd += ["-serial", f"file:{console}", "-device", VIRTIO_SERIAL[channel],
                "-device", "virtserialport,chardev=agent,name=droidoom"]  # fmt: skip
    if accel == "kvm":
        cmd += ["-cpu", "host"]
    elif arch.machine != "pc":  # x86 keeps QEMU's default CPU model under TCG, as before
        cmd += ["-cpu", arch.tcg_cpu]
    return cmd


def _deathsig() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Machine:
    """A running QEMU guest: `sock` is the connected agent channel."""

    def __init__(self, spec: VmSpec, initrd: Path, accel: str, arch: Arch = X86_64,
                 channel: str = "virtio-pci", kernel: Path | None = None):  # fmt: skip
        self.spec, self.accel, self.arch, self.channel = spec, accel, arch, channel
        self._dir = private_dir()
        self.console_log = self._dir / "console.log"
        path = self._dir / "agent.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
        except OSError:
            listener.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        listener.listen(1)
        cmd = qemu_command(spec, initrd, accel, path, self.console_log, arch, channel, kernel)
        self.started = time.monotonic()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_deathsig,
            start_new_session=True,  # a terminal Ctrl-C reaches droidoom, which kills QEMU
        )
        self.timed_out = False
        self.limit_s = 0.0  # seconds from `started` the watchdog allows (set_limit)
        self._watchdog: threading.Timer | None = None
        self.set_limit(spec.timeout)
        try:
            self.sock = self._accept(listener, 10.0)
        except OSError:
            self.kill()
            self._proc.wait()
            why = self.stderr_text() or "no error output"  # before close() closes the pipe
            self.close()
            raise PermanentTargetError(f"QEMU did not start: {why}") from None
        finally:
            listener.close()

    def _accept(self, listener: socket.socket, timeout: float) -> socket.socket:
        """QEMU's connection to the agent socket; OSError if it exits or `timeout` passes."""
        listener.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return listener.accept()[0]
            except TimeoutError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise

    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def pid(self) -> int:
        """QEMU's pid (our own child)."""
        return self._proc.pid

    def exit_text(self) -> str:
        """How QEMU ended ("" while it runs): its exit code or the signal that killed it."""
        rc = self._proc.poll()
        if rc is None:
            return ""
        if rc < 0:
            try:
                return f"QEMU was killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"QEMU was killed by signal {-rc}"
        return f"QEMU exited with code {rc}"

    def kill(self) -> None:
        """SIGKILL QEMU (our own child: its pid is > 0 and recorded)."""
        if self._proc.poll() is None and self._proc.pid > 0:
            self._proc.kill()

    def set_limit(self, seconds: float) -> None:
        """Let the VM live `seconds` more from now (never less than it already may: a
        limit is only ever extended), then the watchdog kills it."""
        left = self.limit_s - (time.monotonic() - self.started)
        if self._watchdog is not None and left >= seconds:
            return
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.limit_s = time.monotonic() - self.started + seconds
        self._watchdog = threading.Timer(seconds, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _expire(self) -> None:
        self.timed_out = True
        self.kill()

    def stderr_text(self) -> str:
        if self._proc.poll() is None or self._proc.stderr is None:
            return ""
        return self._proc.stderr.read().decode(errors="replace").strip()[-500:]

    def console_tail(self, lines: int = 15) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def close(self) -> None:
        """Kill QEMU, reap it, remove the temp dir. Idempotent."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        try:
            self.sock.close()
        except AttributeError:
            pass
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)
