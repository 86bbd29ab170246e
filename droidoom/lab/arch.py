"""Which architecture a kernel image is for, and how QEMU boots it.

`detect(path)` reads the image's own header (never its file name): an x86 bzImage has the boot
protocol magic "HdrS" at 0x202, an arm64 `Image` has b"ARM\\x64" at byte 56 (its boot header,
Documentation/arm64/booting.rst). `Image.gz` is gunzipped and `Image.lz4` (the kernel's legacy
lz4 frame) is decompressed with the `lz4` tool into the lab cache first, so QEMU and the
channel probe see the plain Image.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from . import DATA_DIR, cache_dir


@dataclass(frozen=True)
class Arch:
    """Everything that differs between the lab's architectures."""

    name: str  # "x86_64" | "arm64" (run.json's vm.arch)
    abi: str  # droidoom helper ABI (droidoom/bin/<abi>)
    qemu: str  # QEMU system emulator
    qemu_package: str  # the apt package that has it
    machine: str  # QEMU -M ("pc" is QEMU's default for x86)
    tcg_cpu: str  # QEMU -cpu under TCG ("host" under KVM)
    console: str  # the kernel's serial console device
    dpkg_arch: str  # Debian architecture (busybox-static:<dpkg_arch>)
    elf_machine: int  # ELF e_machine of its binaries
    make_arch: str  # the kernel's ARCH=
    cross_compile: str  # CROSS_COMPILE= ("" when the host's gcc builds it)
    make_target: str  # make target of the boot image
    image_path: str  # the boot image in a built tree
    fragment: Path  # config fragment merged onto tinyconfig (`lab config`)


X86_64 = Arch(
    name="x86_64", abi="x86_64", qemu="qemu-system-x86_64", qemu_package="qemu-system-x86",
    machine="pc", tcg_cpu="qemu64", console="ttyS0", dpkg_arch="amd64", elf_machine=62,
    make_arch="x86", cross_compile="", make_target="bzImage",
    image_path="arch/x86/boot/bzImage", fragment=DATA_DIR / "kernel.config",
)  # fmt: skip
ARM64 = Arch(
    name="arm64", abi="arm64-v8a", qemu="qemu-system-aarch64", qemu_package="qemu-system-arm",
    # pauth-impdef: QEMU's own pointer-auth hash instead of QARMA, which under TCG costs a
    # kernel built with ARM64_PTR_AUTH (GKI, defconfig) much of its speed on every call
    machine="virt", tcg_cpu="max,pauth-impdef=on", console="ttyAMA0", dpkg_arch="arm64",
    elf_machine=183,
    make_arch="arm64", cross_compile="aarch64-linux-gnu-", make_target="Image",
    image_path="arch/arm64/boot/Image", fragment=DATA_DIR / "kernel-arm64.config",
)  # fmt: skip
ARCHES = {a.name: a for a in (X86_64, ARM64)}


def by_name(name: str) -> Arch:
    """The Arch called `name` (aliases aarch64, x86, amd64), else a UsageError."""
    alias = {"aarch64": "arm64", "x86": "x86_64", "amd64": "x86_64"}.get(name, name)
    if alias not in ARCHES:
        raise UsageError(f"--arch {name!r}: use {', '.join(ARCHES)}")
    return ARCHES[alias]


@dataclass(frozen=True)
class Image:
    """A kernel image as QEMU boots it."""

    arch: Arch
    path: Path  # what QEMU gets: the given file, or its decompressed copy in the cache
    compression: str  # "none" | "gzip" | "lz4"
    source: Path  # the file the user gave


GZIP_MAGIC = b"\x1f\x8b"
LZ4_MAGICS = (b"\x02\x21\x4c\x18", b"\x04\x22\x4d\x18")  # legacy (the kernel's), frame
ELF_MAGIC = b"\x7fELF"


def _header(path: Path, n: int = 0x210) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as e:
        raise UsageError(f"--kernel {path}: {e.strerror}") from None


def arch_of_header(head: bytes) -> Arch | None:
    """The architecture a plain (decompressed) boot image's header names, else None."""
    if head[0x202:0x206] == b"HdrS":
        return X86_64
    if head[56:60] == b"ARM\x64":
        return ARM64
    return None


def detect(path: Path) -> Image:
    """What `path` is and how to boot it; a UsageError that says what to give instead."""
    path = Path(path)
    head = _header(path)
    arch = arch_of_header(head)
    if arch is not None:
        _check_arm64_endian(path, head, arch)
        return Image(arch, path, "none", path)
    if head[:2] == GZIP_MAGIC:
        plain = _decompressed(path, "gzip")
    elif head[:4] in LZ4_MAGICS:
        plain = _decompressed(path, "lz4")
    else:
        raise UsageError(f"--kernel {path}: {_not_an_image(head)}")
    inner = _header(plain)
    arch = arch_of_header(inner)
    if arch is None:
        raise UsageError(f"--kernel {path}: decompressed, it is not a kernel boot image either "
                         f"({_not_an_image(inner)})")  # fmt: skip
    _check_arm64_endian(path, inner, arch)
    return Image(arch, plain, "gzip" if head[:2] == GZIP_MAGIC else "lz4", path)


def _check_arm64_endian(path: Path, head: bytes, arch: Arch) -> None:
    # flags (le64 at byte 24), bit 0: 1 = big-endian kernel; the helper is little-endian
    if arch is ARM64 and head[24] & 1:
        raise UsageError(f"--kernel {path} is a big-endian arm64 kernel: droidoom's helper and "
                         "initramfs are little-endian (CONFIG_CPU_BIG_ENDIAN=n)")  # fmt: skip


def _not_an_image(head: bytes) -> str:
    if head[:4] == ELF_MAGIC:
        return ("this is an ELF file (vmlinux?): give the boot image instead, "
                "arch/x86/boot/bzImage or arch/arm64/boot/Image[.gz|.lz4]")  # fmt: skip
    if head[0x24:0x28] == b"\x18\x28\x6f\x01":
        return "this is a 32-bit ARM zImage: droidoom boots x86_64 bzImages and arm64 Images"
    return ("neither an x86_64 bzImage (\"HdrS\" at 0x202) nor an arm64 Image (\"ARM\\x64\" at "
            "byte 56), plain, gzip or lz4 compressed")  # fmt: skip


def _decompressed(path: Path, how: str) -> Path:
    """The decompressed image in the lab cache (named by the compressed file's sha256)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    out = cache_dir() / "images" / f"{h.hexdigest()[:16]}-Image"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if how == "gzip":
        try:
            with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError) as e:
            tmp.unlink(missing_ok=True)
            raise UsageError(f"--kernel {path}: gunzip failed ({e})") from None
    else:
        lz4 = shutil.which("lz4")
        if lz4 is None:
            raise UsageError(
                f"--kernel {path} is lz4-compressed and the `lz4` tool is missing: "
                f"`apt-get install lz4`, or decompress it yourself (`lz4 -d {path} Image`) and "
                "give the Image"
            )
        p = subprocess.run([lz4, "-d", "-f", "-q", str(path), str(tmp)], capture_output=True,
                           text=True)  # fmt: skip
        if p.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise UsageError(f"--kernel {path}: lz4 -d failed: {p.stderr.strip()[-300:]}")
    tmp.replace(out)
    return out


#: Strings a built-in driver leaves in an uncompressed Image (driver and device names).
_PROBES = {
    "virtio_console": (b"virtio_console",),
    "virtio_pci": (b"virtio-pci",),
    "virtio_mmio": (b"virtio-mmio",),
    "pl011": (b"uart-pl011",),
}


def drivers(image: Path) -> set[str]:
    """Which agent-channel drivers an uncompressed kernel Image has built in (by the names
    their drivers register, which stay in the Image as strings)."""
    data = image.read_bytes()
    return {name for name, marks in _PROBES.items() if any(m in data for m in marks)}


#: The agent channels, most capable first: a virtio console on PCI, on MMIO, the PL011 UART.
CHANNELS = ("virtio-pci", "virtio-mmio", "serial")


def channels(img: Image) -> list[str]:
    """The channels to try for `img`, best first. x86 bzImages are compressed (no strings to
    read): virtio-pci as always. arm64: what the Image has built in; when the strings say
    nothing (a stripped or unusual build), every channel in turn."""
    if img.arch is X86_64:
        return ["virtio-pci"]
    have = drivers(img.path)
    out = []
    if "virtio_console" in have:
        out += [c for c in ("virtio-pci", "virtio-mmio") if c.replace("-", "_") in have]
    if "pl011" in have:
        out.append("serial")
    return out or list(CHANNELS)


def lacks(img: Image) -> str:
    """What `img` lacks for every agent channel, in config options."""
    have = drivers(img.path) if img.arch is ARM64 else set()
    miss = []
    if "virtio_console" not in have:
        miss.append("CONFIG_VIRTIO_CONSOLE")
    if not {"virtio_pci", "virtio_mmio"} & have:
        miss.append("CONFIG_VIRTIO_PCI or CONFIG_VIRTIO_MMIO")
    if "pl011" not in have:
        miss.append("CONFIG_SERIAL_AMBA_PL011 (+ _CONSOLE)")
    return ", ".join(miss)
