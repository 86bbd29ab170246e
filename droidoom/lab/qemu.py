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

QEMU = "qemu-system-x86_64"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class VmSpec:
    """How to boot the guest."""

    image: Path  # an x86_64 bzImage
    cpus: int = 2  # vCPUs
    memory_mb: int = 1024  # guest RAM
    accel: str = "auto"  # auto (kvm if a boot probe works, else tcg) | kvm | tcg
    timeout: float = 900.0  # the VM is killed after this many seconds, whatever happens
    boot_timeout: float = 60.0  # seconds for the guest's agent to answer under TCG
    append: str = ""  # extra kernel command line


def check_image(image: Path) -> None:
    """An x86 bzImage (boot protocol header "HdrS" at 0x202), else a clear UsageError."""
    try:
        with open(image, "rb") as f:
            f.seek(0x202)
            magic = f.read(4)
    except OSError as e:
        raise UsageError(f"--kernel {image}: {e.strerror}") from None
    if magic != b"HdrS":
        raise UsageError(
            f"--kernel {image} is not an x86 bzImage (arch/x86/boot/bzImage of a kernel "
            "build); other architectures are not supported yet"
        )


def qemu_version() -> str:
    """`qemu-system-x86_64 --version` first line, or a UsageError saying what to install."""
    exe = shutil.which(QEMU)
    if exe is None:
        raise UsageError(f"{QEMU} not found: `apt-get install qemu-system-x86`")
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


def _deathsig() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Machine:
    """A running QEMU guest: `sock` is the connected agent channel."""

    def __init__(self, spec: VmSpec, initrd: Path, accel: str):
        self.spec, self.accel = spec, accel
        self._dir = tempfile.TemporaryDirectory(prefix="droidoom-vm-")
        self.console_log = Path(self._dir.name) / "console.log"
        path = str(Path(self._dir.name) / "agent.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        cmd = [
            shutil.which(QEMU) or QEMU, "-nodefaults", "-display", "none", "-no-reboot",
            "-monitor", "none", "-accel", accel, "-smp", str(spec.cpus),
            "-m", str(spec.memory_mb), "-kernel", str(spec.image), "-initrd", str(initrd),
            "-append", f"console=ttyS0 panic=-1 quiet rdinit=/init {spec.append}".strip(),
            "-serial", f"file:{self.console_log}",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=agent,path={path}",
            "-device", "virtserialport,chardev=agent,name=droidoom",
        ]  # fmt: skip
        if accel == "kvm":
            cmd += ["-cpu", "host"]
        self.started = time.monotonic()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_deathsig,
            start_new_session=True,  # a terminal Ctrl-C reaches droidoom, which kills QEMU
        )
        self._watchdog = threading.Timer(spec.timeout, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()
        self.timed_out = False
        listener.settimeout(10.0)
        try:
            self.sock, _ = listener.accept()
        except OSError:
            self.close()
            raise PermanentTargetError(
                f"QEMU did not start: {self.stderr_text() or 'no error output'}"
            ) from None
        finally:
            listener.close()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL QEMU (our own child: its pid is > 0 and recorded)."""
        if self._proc.poll() is None and self._proc.pid > 0:
            self._proc.kill()

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
        self._dir.cleanup()
