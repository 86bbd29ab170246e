"""The guest's whole userspace: a newc initramfs with busybox, the static helper and an agent.

The host drives the guest like a phone over one virtio serial port: `init` mounts what the
helper needs, checks the kernel has it (naming the config option when not) and hands the
port to `agent`, a busybox shell loop that runs scripts with framed, exit-code-carrying
replies and moves files (see droidoom/targets/vm.py for the host side of the protocol).
Nothing of the host's filesystem is shared, so the guest needs no 9p, block device or udev.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from ..errors import UsageError
from .arch import X86_64, Arch

#: Where the helper sits in the guest.
GUEST_HELPER = "/droidoom/droidoom-helper"
#: Lines `init` prints on the console when the kernel lacks something; the host quotes them.
MISSING_MARK = "DROIDOOM-MISSING:"

#: The kernel runs init as `/bin/busybox sh /init` (QEMU_INIT_ARGS): no script, not even
#: init or the agent, needs CONFIG_BINFMT_SCRIPT, which a kernel's config may lack.
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/tmp
miss() { echo "DROIDOOM-MISSING: $*"; }
mount -t proc proc /proc || miss "procfs (CONFIG_PROC_FS)"
mount -t sysfs sysfs /sys || miss "sysfs (CONFIG_SYSFS)"
# without devtmpfs (tinyconfig has none), the agent's port gets its node from sysfs (mkdev)
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdev() {
  [ -e "/dev/$1" ] && return
  for d in /sys/class/*/"$1"/dev; do
    [ -f "$d" ] && read -r mm <"$d" && mknod "/dev/$1" c "${mm%:*}" "${mm#*:}" && return
  done
  miss "/dev/$1 (CONFIG_DEVTMPFS, or sysfs to find its device number)"
}
# without tmpfs, /tmp stays on the initramfs itself (ramfs: writable too)
mount -t tmpfs tmpfs /tmp 2>/dev/null
# without sysctl files pid_max stays at the kernel's default (the helper reads the limit)
# tinyconfig kernels start with pid_max 4096; its hard limit is 32768 even then.
echo 32768 > /proc/sys/kernel/pid_max 2>/dev/null
# The agent's channel: the serial console itself when the host says so (droidoom.port=, an
# image without a virtio console), else the virtio console port named "droidoom".
port=
for w in $(cat /proc/cmdline); do
  case "$w" in droidoom.port=*) port=/dev/${w#droidoom.port=};; esac
done
if [ -n "$port" ]; then
  mkdev "${port#/dev/}"
  # a raw line: no echo, no CR/LF mapping, no ^C, no 4096-byte line limit; and no kernel
  # messages from now on, they would land in the middle of a reply
  stty -F "$port" raw -echo -ixon -ixoff || miss "a working $port (CONFIG_SERIAL_AMBA_PL011)"
  echo 1 >/proc/sys/kernel/printk
  echo "droidoom agent on $port (serial)"
  exec sh /droidoom/agent <>"$port" >&0 2>/dev/null
fi
for i in 1 2 3 4 5 6 7 8 9 10; do
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = droidoom ] && port=/dev/${p##*/} && mkdev "${p##*/}"
  done
  [ -n "$port" ] && [ -e "$port" ] && break
  sleep 0.2
done
if [ -z "$port" ]; then
  miss "the virtio serial port (CONFIG_VIRTIO_CONSOLE and CONFIG_VIRTIO_PCI or CONFIG_VIRTIO_MMIO)"
  reboot -f
fi
echo "droidoom agent on $port"
exec sh /droidoom/agent <>"$port" >&0 2>/dev/console
"""

# One request per line: VERB ID [ARGS]; scripts and paths travel base64-encoded.
AGENT = r"""#!/bin/sh
b() { echo "$1" | base64 -d; }
echo "__DD_READY $(uname -r) $(nproc)"
while read -r cmd id a n m; do
  t=/tmp/.dd$id
  case "$cmd" in
  RUN)
    b "$a" >$t.s; sh $t.s </dev/null >$t.o 2>$t.e; rc=$?
    echo "__DD_R $id $rc $(wc -c <$t.o) $(wc -c <$t.e)"; cat $t.o $t.e; rm -f $t.s $t.o $t.e;;
  PUT)
    p=$(b "$a"); echo "__DD_GO $id"; head -c "$n" >"$p"; chmod "$m" "$p"
    echo "__DD_OK $id $(wc -c <"$p")";;
  PUTZ)
    p=$(b "$a"); echo "__DD_GO $id"; head -c "$n" | gunzip >"$p"; chmod "$m" "$p"
    echo "__DD_OK $id $(wc -c <"$p")";;
  GET)
    p=$(b "$a")
    if [ -f "$p" ]; then echo "__DD_F $id 0 $(wc -c <"$p")"; cat "$p"
    else echo "__DD_F $id 1 0"; fi;;
  SPAWN)
    b "$a" >$t.s; rm -f $t.i; mkfifo $t.i
    ( sh $t.s <$t.i 2>$t.e & echo $! >$t.p; wait $!; rc=$?; echo; echo "__DD_X $id $rc" ) &
    exec 4>$t.i;;
  CLOSE) exec 4>&-;;
  KILL) [ -s $t.p ] && kill "$(cat $t.p)";;
  esac
done
"""


def _entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
           ino: int = 0) -> bytes:  # fmt: skip
    """One newc (SVR4 "070701") cpio record, padded to 4 bytes."""
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = head + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4) + data
    return out + b"\0" * (-len(out) % 4)


def build_cpio(files: dict[str, tuple[int, bytes]], dirs: list[str],
               chardevs: dict[str, tuple[int, int]]) -> bytes:  # fmt: skip
    """newc archive of `dirs`, char devices and regular files (name -> (perm, bytes))."""
    buf, ino = io.BytesIO(), 1
    for d in dirs:
        buf.write(_entry(d, stat.S_IFDIR | 0o755, ino=ino))
        ino += 1
    for name, dev in chardevs.items():
        buf.write(_entry(name, stat.S_IFCHR | 0o600, rdev=dev, ino=ino))
        ino += 1
    for name, (perm, data) in files.items():
        buf.write(_entry(name, stat.S_IFREG | perm, data, ino=ino))
        ino += 1
    buf.write(_entry("TRAILER!!!", 0))
    return buf.getvalue()


def _static_for(path: Path, elf_machine: int) -> bool:
    """A static ELF executable for `elf_machine` (e_machine, little-endian 64-bit)?"""
    head = path.read_bytes()[:65536]
    return (head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == elf_machine
            and b"ld-linux" not in head)  # fmt: skip


def find_busybox(arch: Arch = X86_64, cache: Path | None = None) -> Path:
    """A static busybox for the guest's architecture: the host's own (apt install
    busybox-static) when it runs there, else Debian's busybox-static for `arch`, fetched once
    into `cache` with `apt-get download` (needs `dpkg --add-architecture`, `apt-get update`)."""
    env = f"DROIDOOM_BUSYBOX{'' if arch is X86_64 else '_' + arch.name.upper()}"
    cands = [os.environ.get(env), "/bin/busybox", shutil.which("busybox")]
    if cache is not None:
        cands.append(str(cache / "busybox" / arch.dpkg_arch / "busybox"))
    for cand in cands:
        if cand and Path(cand).is_file() and _static_for(Path(cand), arch.elf_machine):
            return Path(cand)
    if arch is not X86_64 and cache is not None:
        return _fetch_busybox(arch, cache / "busybox" / arch.dpkg_arch, env)
    raise UsageError(
        "a static busybox is needed for the guest: `apt-get install busybox-static` "
        f"(or set {env} to one)"
    )


def _fetch_busybox(arch: Arch, where: Path, env: str) -> Path:
    """Debian's busybox-static:<arch>, downloaded and unpacked into `where` (not installed:
    it would replace the host's own /bin/busybox)."""
    pkg = f"busybox-static:{arch.dpkg_arch}"
    how = (f"`dpkg --add-architecture {arch.dpkg_arch} && apt-get update` (droidoom then "
           f"downloads {pkg} itself), or set {env} to a static {arch.name} busybox")  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="busybox-", dir=_mkdir(where.parent)))
    try:
        p = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
        if p.returncode != 0:  # no arm64 lists: fetch them into a private dir, not the system's
            p = _download_private(pkg, arch, tmp)
        debs = list(tmp.glob("*.deb"))
        if p.returncode != 0 or not debs:
            why = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no .deb"]
            raise UsageError(f"the {arch.name} guest needs a static busybox and "
                             f"`apt-get download {pkg}` failed ({why[0]}): {how}")  # fmt: skip
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "x")], check=True,
                       capture_output=True)  # fmt: skip
        got = tmp / "x" / "bin" / "busybox"
        if not got.is_file() or not _static_for(got, arch.elf_machine):
            raise UsageError(f"{debs[0].name} has no static {arch.name} bin/busybox: {how}")
        where.mkdir(parents=True, exist_ok=True)
        got.replace(where / "busybox")
    except (OSError, subprocess.SubprocessError) as e:
        raise UsageError(f"fetching {pkg} failed ({e}): {how}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return where / "busybox"


def _download_private(pkg: str, arch: Arch, tmp: Path) -> subprocess.CompletedProcess[str]:
    """`apt-get download pkg` with the system's sources but private package lists for
    `arch` (an `apt-get update` into tmp/lists, ~20 MB, removed after): for a host whose dpkg
    has no `arch` configured. Changes nothing of the system's apt state."""
    lists = tmp / "lists"
    (lists / "partial").mkdir(parents=True)
    opts = ["-o", f"Dir::State::Lists={lists}", "-o", f"APT::Architectures::={arch.dpkg_arch}",
            "-o", "Debug::NoLocking=1"]  # fmt: skip
    up = subprocess.run(["apt-get", "-q", *opts, "update"], cwd=tmp, capture_output=True,
                        text=True, timeout=600)  # fmt: skip
    if up.returncode != 0:
        return up
    return subprocess.run(["apt-get", *opts, "download", pkg], cwd=tmp, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def initramfs(helper: Path, cache_dir: Path, arch: Arch = X86_64) -> Path:
    """Build (or reuse) the guest initramfs for `helper` on `arch`; return its path."""
    busybox = find_busybox(arch, cache_dir)
    bb, hp = busybox.read_bytes(), helper.read_bytes()
    key = hashlib.sha256(
        (INIT + AGENT).encode() + hashlib.sha256(bb).digest() + hashlib.sha256(hp).digest()
    ).hexdigest()[:16]
    path = cache_dir / f"initramfs-{key}.cpio"
    if path.is_file():
        return path
    data = build_cpio(
        files={
            "init": (0o755, INIT.encode()),
            "bin/busybox": (0o755, bb),
            "droidoom/agent": (0o755, AGENT.encode()),
            GUEST_HELPER.lstrip("/"): (0o755, hp),
        },
        dirs=["bin", "dev", "proc", "sys", "tmp", "droidoom"],
        chardevs={"dev/console": (5, 1), "dev/null": (1, 3)},
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path
