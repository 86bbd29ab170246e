"""`droidoom doctor --kernel IMAGE`: what a kernel image can do in droidoom's lab, read from the
file alone (nothing is booted): its architecture and compression, the agent channels it has
built in, and, when it embeds its config (CONFIG_IKCONFIG), the options droidoom's guest needs,
each with how to get it.
"""

from __future__ import annotations

import re
import shutil
import zlib
from pathlib import Path

from ..analysis.kernels import kernel_expectation
from ..lab.arch import ARM64, X86_64, Image, detect, drivers
from .doctor import LIMITED, MISSING, OK, Check

IKCFG_START, IKCFG_END = b"IKCFG_ST", b"IKCFG_ED"


def ikconfig(data: bytes) -> str | None:
    """The config a kernel embeds (CONFIG_IKCONFIG): the gzip stream after "IKCFG_ST", as
    scripts/extract-ikconfig reads it; None when there is none (or it is compressed away)."""
    at = data.find(IKCFG_START)
    while at >= 0:
        try:
            d = zlib.decompressobj(wbits=31)  # gzip; the data after its end is ignored
            return d.decompress(data[at + len(IKCFG_START):]).decode(errors="replace")
        except zlib.error:
            at = data.find(IKCFG_START, at + 1)  # a stray mark, e.g. in the code reading it
    return None


#: Options the guest needs, why, and (when a kernel lacks it) what it costs.
NEEDED = (
    ("CONFIG_BLK_DEV_INITRD", "boot", "droidoom's initramfs is the guest's whole userspace"),
    ("CONFIG_BINFMT_ELF", "boot", "runs busybox and the helper"),
    ("CONFIG_PROC_FS", "writes", "/proc/<pid>/oom_score_adj itself"),
    ("CONFIG_TMPFS", "boot", "/tmp for plans and records"),
    ("CONFIG_FUTEX", "writes", "the helper's threads"),
    ("CONFIG_MULTIUSER", "writes", "root vs non-root writes"),
)
#: Options that make the lab closer to a phone, not needed to run.
NICE = (
    ("CONFIG_PREEMPT", "kernel", "preemptible like GKI (without it: a server kernel's timing)"),
    ("CONFIG_FTRACE", "tracing", "tracefs for --capture ftrace (GKI has it)"),
    ("CONFIG_SMP", "kernel", "several vCPUs"),
    ("CONFIG_PROC_SYSCTL", "writes", "pid_max raised to 32768 for the populations"),
    ("CONFIG_DEVTMPFS", "boot", "/dev (without it init makes the port's node from sysfs)"),
)


def _has(config: str, opt: str) -> bool:
    return re.search(rf"^{opt}=[ym]$", config, re.M) is not None


def _value(config: str, opt: str) -> str | None:
    m = re.search(rf"^{opt}=(.*)$", config, re.M)
    return m.group(1) if m else None


def checks(path: Path) -> list[Check]:
    """What `path` can do in the lab, each check with its fix; a UsageError (exit 2) when it
    is no kernel boot image at all."""
    img = detect(path)
    out = [_arch_check(img), _compression_check(img)]
    data = img.path.read_bytes()
    ver = re.search(rb"Linux version (\S+)", data)
    if ver:  # a bzImage's banner is compressed: no release
        rel = ver.group(1).decode(errors="replace")
        out.append(Check("image", "release", OK, f"{rel}: {kernel_expectation(rel)} by version "
                         "(MMF_MULTIPROCESS, 67197a4f28d2); a revert or backport shows only "
                         "when profiled"))  # fmt: skip
    out.append(_qemu_check(img))
    config = ikconfig(data)
    if img.arch is ARM64:
        out += _channel_checks(img, config)
    if config is None:
        why = ("a bzImage's kernel is compressed inside it: its config is not readable here"
               if img.arch is X86_64 else "no embedded config (CONFIG_IKCONFIG=n)")  # fmt: skip
        out.append(Check("config", "embedded config", LIMITED, why,
                         "build with CONFIG_IKCONFIG=y to have every option checked here; "
                         f"compare your .config with `droidoom lab config --arch {img.arch.name}`"))
        return out
    out.append(Check("config", "embedded config", OK, f"{len(config.splitlines())} lines"))
    for opt, area, why in NEEDED:
        if not _has(config, opt):
            out.append(Check(area, opt, MISSING, f"not set: {why}", f"{opt}=y"))
    missing = {c.name for c in out if c.status == MISSING}
    if not missing & {o for o, _, _ in NEEDED}:
        out.append(Check("boot", "initramfs, /proc, /dev, /tmp", OK,
                         "every option the guest needs is set"))  # fmt: skip
    for opt, area, why in NICE:
        status = OK if _has(config, opt) else LIMITED
        out.append(Check(area, opt, status, why, "" if status == OK else f"{opt}=y"))
    if not _has(config, "CONFIG_BASE_FULL"):
        out.append(Check("writes", "CONFIG_BASE_FULL", LIMITED,
                         "pid_max is 4096 at most: populations stay small",
                         "CONFIG_BASE_FULL=y"))  # fmt: skip
    return out


def _arch_check(img: Image) -> Check:
    return Check("image", "architecture", OK, f"{img.arch.name} (QEMU {img.arch.qemu} "
                 f"-M {img.arch.machine}, TCG -cpu {img.arch.tcg_cpu})")  # fmt: skip


def _compression_check(img: Image) -> Check:
    if img.compression == "none":
        return Check("image", "compression", OK, "none (booted as is)")
    return Check("image", "compression", OK,
                 f"{img.compression}: booted from the decompressed copy {img.path}")  # fmt: skip


def _qemu_check(img: Image) -> Check:
    if shutil.which(img.arch.qemu) is None:
        return Check("boot", "QEMU", MISSING, f"{img.arch.qemu} not found",
                     f"apt-get install {img.arch.qemu_package}")  # fmt: skip
    return Check("boot", "QEMU", OK, img.arch.qemu)


def _channel_checks(img: Image, config: str | None) -> list[Check]:
    """The agent channel an arm64 Image offers: virtio console (PCI/MMIO), else PL011."""
    have = drivers(img.path)
    if config is not None:  # the config is the truth; the strings are a fallback
        have = {d for d, opt in (("virtio_console", "CONFIG_VIRTIO_CONSOLE"),
                                 ("virtio_pci", "CONFIG_VIRTIO_PCI"),
                                 ("virtio_mmio", "CONFIG_VIRTIO_MMIO"),
                                 ("pl011", "CONFIG_SERIAL_AMBA_PL011_CONSOLE"))
                if _value(config, opt) == "y"}  # fmt: skip
    buses = [b for b in ("pci", "mmio") if f"virtio_{b}" in have]
    if "virtio_console" in have and buses:
        return [Check("channel", "virtio console", OK, f"built in, on {' and '.join(buses)}")]
    out = []
    if "pl011" in have:
        out.append(Check("channel", "PL011 serial", OK, "the agent talks over ttyAMA0 (slower "
                         "than virtio; kernel messages are silenced once it runs)"))  # fmt: skip
        out.append(Check("channel", "virtio console", LIMITED, "not built in",
                         "CONFIG_VIRTIO_CONSOLE=y with CONFIG_VIRTIO_MMIO=y or CONFIG_VIRTIO_PCI=y"
                         " (+ CONFIG_PCI_HOST_GENERIC=y)"))  # fmt: skip
        return out
    return [Check("channel", "agent channel", MISSING,
                  "neither a virtio console nor the PL011 UART is built in (modules cannot load: "
                  "the initramfs has none)",
                  "CONFIG_VIRTIO_CONSOLE=y + CONFIG_VIRTIO_MMIO=y, or CONFIG_SERIAL_AMBA_PL011=y"
                  " + CONFIG_SERIAL_AMBA_PL011_CONSOLE=y")]  # fmt: skip
