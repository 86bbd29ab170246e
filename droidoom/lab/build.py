"""Reference kernels: Debian's linux-source-6.1 "fixed" (as released), "regressed" (with
the one-line revert of 67197a4f28d2) and "gated" (process_mrelease's walk gated on
MMF_MULTIPROCESS: an experiment, not a fix), built as tinyconfig + droidoom's fragment.

Everything is cached under `droidoom.lab.cache_dir()`:
    src/linux-source-6.1_<version>_all.deb       the pinned source package (apt-get download)
    build/linux-source-6.1/                      one extracted tree, built in place
    kernels/<key>/<variant>/bzImage, build.json   finished images
`--arch arm64` (droidoom.lab.arch.ARM64) cross-builds in build/linux-source-6.1-arm64/ into
kernels/<key>/<variant>/Image, its keys adding the architecture and the cross compiler.
The key hashes the source version, config fragment, patch (regressed only), compiler version
and variant, so a change to any of them builds anew while the second variant reuses the
first one's objects (an incremental build of one file).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import DroidoomError, UsageError
from . import DATA_DIR, cache_dir
from .arch import X86_64, Arch

PACKAGE = "linux-source-6.1"
#: Pinned Debian version (bookworm); override with DROIDOOM_LAB_SOURCE_VERSION.
VERSION = "6.1.192-3"
FRAGMENT = DATA_DIR / "kernel.config"
PATCH = DATA_DIR / "revert-67197a4f28d2.patch"
#: process_mrelease's walk gated on MMF_MULTIPROCESS: an experiment, not a proposed fix
GATE_PATCH = DATA_DIR / "gate-process-mrelease-walk.patch"
#: The patches each variant carries on top of the released source.
PATCHES: dict[str, tuple[Path, ...]] = {"fixed": (), "regressed": (PATCH,), "gated": (GATE_PATCH,)}
VARIANTS = tuple(PATCHES)
#: Compile steps (make's "CC"/"AS"/"LD"... lines) of a cold build, for the progress bar.
COLD_STEPS = 1100
#: Cold build measured on a 2-core VM shared with other jobs (seconds), for the estimate.
COLD_SECONDS_2CPU = 300.0
APT_PACKAGES = "qemu-system-x86 build-essential flex bison bc cpio libelf-dev libssl-dev " \
    "busybox-static xz-utils"  # fmt: skip
#: What an arm64 build and boot needs on top (busybox-static:arm64 is fetched, not installed).
APT_PACKAGES_ARM64 = "gcc-aarch64-linux-gnu qemu-system-arm"
#: Cold arm64 cross-build, measured on 2 cores (seconds; 285 s at load falling 36 -> 3).
COLD_SECONDS_2CPU_ARM64 = 285.0


def apt_packages(arch: Arch = X86_64) -> str:
    """The apt packages building and booting `arch` kernels needs."""
    return APT_PACKAGES if arch is X86_64 else f"{APT_PACKAGES} {APT_PACKAGES_ARM64}"


class BuildError(DroidoomError):
    """A reference kernel could not be fetched or built; the message says what to install."""


@dataclass(frozen=True)
class Kernel:
    """A built reference kernel."""

    variant: str
    image: Path
    key: str
    cached: bool  # found in the cache rather than built now
    seconds: float  # build time (0 when cached)


def version() -> str:
    """The Debian source version to build: DROIDOOM_LAB_SOURCE_VERSION, else the pinned
    VERSION while it is cached or apt still offers it, else the newest 6.1 apt offers
    (Debian drops superseded versions from its archive; the revert applies to any 6.1)."""
    pinned = os.environ.get("DROIDOOM_LAB_SOURCE_VERSION")
    if pinned:
        return pinned
    if (cache_dir() / "src" / f"{PACKAGE}_{VERSION}_all.deb").is_file():
        return VERSION
    offered = apt_versions()
    return VERSION if not offered or VERSION in offered else offered[0]


@functools.lru_cache(maxsize=1)
def apt_versions() -> tuple[str, ...]:
    """The versions of PACKAGE apt's sources offer, newest first (() without apt). Asked
    once per process: version() is called for every key and file name of a build."""
    try:
        out = subprocess.run(["apt-cache", "madison", PACKAGE], capture_output=True,
                             text=True, timeout=60).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ()
    rows = [ln.split("|") for ln in out.splitlines()]
    return tuple(dict.fromkeys(r[1].strip() for r in rows if len(r) >= 3))


def compiler(arch: Arch = X86_64) -> str:
    gcc = f"{arch.cross_compile}gcc"
    try:
        out = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        raise BuildError(f"{gcc} not found: `apt-get install {apt_packages(arch)}`") from None
    return out.splitlines()[0].strip() if out else f"{gcc} ?"


def key(variant: str, arch: Arch = X86_64) -> str:
    """Cache key of one variant: source version + fragment + patch + compiler + variant
    (+ the architecture, but for x86_64, whose keys predate it)."""
    if variant not in VARIANTS:
        raise UsageError(f"unknown variant {variant!r}: use {', '.join(VARIANTS)}")
    h = hashlib.sha256()
    for part in (PACKAGE, version(), arch.fragment.read_text(), compiler(arch), variant):
        h.update(part.encode() + b"\0")
    if arch is not X86_64:
        h.update(arch.name.encode())
    for patch in PATCHES[variant]:  # none for "fixed": its key is what it always was
        h.update(patch.read_bytes())
    return h.hexdigest()[:16]


def kernel_dir(variant: str, arch: Arch = X86_64) -> Path:
    """kernels/<key>/<variant>/: the image's parent names the variant (device "qemu:fixed-...")."""
    return cache_dir() / "kernels" / key(variant, arch) / variant


def cached(variant: str, arch: Arch = X86_64) -> Path | None:
    image = kernel_dir(variant, arch) / Path(arch.image_path).name
    return image if image.is_file() else None


def estimate_seconds(variants: list[str], arch: Arch = X86_64) -> float:
    """Honest wall-time estimate: a cold tree costs one full build (measured 2 cores), the
    second variant rebuilds one file and relinks (~15 s)."""
    todo = [v for v in variants if cached(v, arch) is None]
    if not todo:
        return 0.0
    cold = not (_tree(arch) / "vmlinux").exists()
    scale = 2 / max(1, os.cpu_count() or 1)
    cold_s = COLD_SECONDS_2CPU if arch is X86_64 else COLD_SECONDS_2CPU_ARM64
    return (cold_s * scale if cold else 20.0) + 20.0 * (len(todo) - 1)


def _run(cmd: list[str], cwd: Path, what: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)
    except FileNotFoundError:
        raise BuildError(f"{cmd[0]} not found: `apt-get install {APT_PACKAGES}`") from None
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
        raise BuildError(f"{what} failed (exit {p.returncode}):\n{tail}")
    return p


def _pipe(cmds: list[list[str]], cwd: Path, what: str) -> None:
    """`cmd1 | cmd2 | ...` in `cwd` without a shell: each step is an argv list, so no path
    (the cache dir is the user's XDG_CACHE_HOME) is ever parsed by a shell. A BuildError
    naming the failing step, with its stderr, unless every step exits 0."""
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        # stderr to files, not pipes: a chatty step cannot block on a pipe nobody reads
        errs = [stack.enter_context(tempfile.TemporaryFile()) for _ in cmds]
        try:
            prev: IO[bytes] | None = None
            for i, (cmd, err) in enumerate(zip(cmds, errs, strict=True)):
                try:
                    p = subprocess.Popen(
                        cmd, cwd=cwd, stdin=prev or subprocess.DEVNULL, stderr=err,
                        stdout=subprocess.DEVNULL if i == len(cmds) - 1 else subprocess.PIPE,
                    )  # fmt: skip
                except FileNotFoundError:
                    raise BuildError(
                        f"{cmd[0]} not found: `apt-get install {APT_PACKAGES}`"
                    ) from None
                finally:
                    if prev is not None:
                        prev.close()  # the next step holds it: an early exit is a SIGPIPE
                prev = p.stdout
                procs.append(p)
            for p in procs:
                p.wait()
        finally:
            for p in procs:  # our own children, started above
                if p.poll() is None:
                    p.kill()
                    p.wait()
        failed = [(c, p, e) for c, p, e in zip(cmds, procs, errs, strict=True) if p.returncode]
        # A step that failed makes the one before it die of SIGPIPE: name the cause.
        cause = [f for f in failed if f[1].returncode != -signal.SIGPIPE] or failed
        if cause:
            cmd, p, err = cause[0]
            err.seek(0)
            tail = "\n".join(err.read().decode(errors="replace").strip().splitlines()[-15:])
            raise BuildError(f"{what} failed ({cmd[0]} exit {p.returncode}):\n{tail}")


def fetch() -> Path:
    """The pinned source package, downloaded once with `apt-get download`."""
    src = cache_dir() / "src"
    deb = src / f"{PACKAGE}_{version()}_all.deb"
    if deb.is_file():
        return deb
    src.mkdir(parents=True, exist_ok=True)
    try:
        _run(["apt-get", "download", f"{PACKAGE}={version()}"], src, f"apt-get download {PACKAGE}")
    except BuildError as e:
        raise BuildError(
            f"{e}\nIs {PACKAGE} {version()} in your apt sources (`apt-cache policy {PACKAGE}`)? "
            "Set DROIDOOM_LAB_SOURCE_VERSION to an available 6.1 version, or put the .deb at "
            f"{deb}"
        ) from None
    if not deb.is_file():
        raise BuildError(f"apt-get download did not produce {deb}")
    return deb


def _tree(arch: Arch = X86_64) -> Path:
    """The source tree `arch` builds in: one per architecture (a tree built in place for one
    cannot build another, and the patch state is per tree)."""
    name = PACKAGE if arch is X86_64 else f"{PACKAGE}-{arch.name}"
    return cache_dir() / "build" / name


def _env(arch: Arch) -> dict[str, str]:
    """make's environment: ARCH/CROSS_COMPILE for `arch`, fixed build stamps (the same key
    gives the same image: its sha256 names it in run.json)."""
    env = {**os.environ, "KBUILD_BUILD_TIMESTAMP": "@0", "KBUILD_BUILD_USER": "droidoom",
           "KBUILD_BUILD_HOST": "lab", "KBUILD_BUILD_VERSION": "1"}  # fmt: skip
    if arch is not X86_64:
        env.update(ARCH=arch.make_arch, CROSS_COMPILE=arch.cross_compile)
    return env


#: What the kernel's make cannot have in its source path (it splits words at blanks and
#: colons, and expands `$`): checked before anything is downloaded.
_MAKE_UNSAFE = re.compile(r"[\s:$#%\\]")


def check_tree_path(tree: Path) -> None:
    """UsageError unless the kernel can be built in `tree` (see _MAKE_UNSAFE)."""
    bad = sorted(set(_MAKE_UNSAFE.findall(str(tree))))
    if bad:
        raise UsageError(
            f"cannot build a kernel in {str(tree)!r}: the kernel's make does not allow "
            f"{' '.join(map(repr, bad))} in its source path. Set XDG_CACHE_HOME to a "
            "directory without them (the lab cache is $XDG_CACHE_HOME/droidoom/lab)"
        )


def extract(deb: Path, arch: Arch = X86_64) -> Path:
    """The source tree (extracted once; ~15 s)."""
    tree, marker = _tree(arch), _tree(arch) / ".droidoom-extracted"
    if marker.is_file() and marker.read_text() == version():
        return tree
    tmp = tree.with_name(tree.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _pipe(
        [
            ["dpkg-deb", "--fsys-tarfile", str(deb)],
            ["tar", "-xO", f"./usr/src/{PACKAGE}.tar.xz"],
            ["tar", "-xJ", "--strip-components=1"],
        ],
        tmp,
        f"extracting {deb.name}",
    )
    (tmp / ".droidoom-extracted").write_text(version())
    shutil.rmtree(tree, ignore_errors=True)
    tmp.rename(tree)
    return tree


def _set_patches(tree: Path, variant: str) -> None:
    """Put the tree in the variant's state: each known patch applied iff the variant has it
    (patch / reverse only when needed, so make rebuilds only the files that changed)."""
    for patch in dict.fromkeys(p for ps in PATCHES.values() for p in ps):
        _set_patch(tree, patch, patch in PATCHES[variant])


def _set_patch(tree: Path, patch: Path, applied: bool) -> None:
    is_applied = subprocess.run(
        ["patch", "-p1", "-R", "--dry-run", "-s", "-f", "-i", str(patch)],
        cwd=tree, capture_output=True,
    ).returncode == 0  # fmt: skip
    if is_applied != applied:
        args = [] if applied else ["-R"]
        _run(["patch", "-p1", "-s", "-f", *args, "-i", str(patch)], tree,
             f"{'applying' if applied else 'reverting'} {patch.name}")  # fmt: skip


def configure(tree: Path, arch: Arch = X86_64) -> list[str]:
    """tinyconfig + the fragment; returns fragment options the kernel did not take."""
    env = _env(arch)
    _run(["make", "tinyconfig"], tree, "make tinyconfig", env=env)
    _run(["scripts/kconfig/merge_config.sh", "-m", ".config", str(arch.fragment)], tree,
         "merging the config fragment", env=env)  # fmt: skip
    _run(["make", "olddefconfig"], tree, "make olddefconfig", env=env)
    have = set((tree / ".config").read_text().splitlines())
    frag = arch.fragment.read_text().splitlines()
    want = [ln.strip() for ln in frag if ln.startswith("CONFIG_")]
    return [w for w in want if w.endswith("=y") and w not in have]


_STEP = re.compile(r"^\s+(CC|AS|LD|AR|HOSTCC|GEN|OBJCOPY|ZOFFSET|VOFFSET)\s")


def _make(tree: Path, jobs: int, step: Callable[[int], None], arch: Arch = X86_64) -> None:
    cmd = ["nice", "-n", "10", "make", f"-j{jobs}", arch.make_target]
    env = _env(arch)
    proc = subprocess.Popen(cmd, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)  # fmt: skip
    tail: list[str] = []
    n = 0
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-20:]
            if _STEP.match(line):
                n += 1
                step(n)
    finally:
        if proc.poll() is None:
            proc.terminate()
        rc = proc.wait()
    if rc != 0:
        raise BuildError("kernel build failed:\n" + "\n".join(tail))


def build(variant: str, *, jobs: int | None = None,
          step: Callable[[int], None] = lambda n: None, arch: Arch = X86_64) -> Kernel:  # fmt: skip
    """Build (or find cached) one reference kernel for `arch`."""
    k = key(variant, arch)
    hit = cached(variant, arch)
    if hit is not None:
        return Kernel(variant, hit, k, True, 0.0)
    check_tree_path(_tree(arch))
    with _tree_lock(arch):
        hit = cached(variant, arch)  # another process may have built it while we waited
        if hit is not None:
            return Kernel(variant, hit, k, True, 0.0)
        return _build_locked(variant, k, jobs, step, arch)


@contextlib.contextmanager
def _tree_lock(arch: Arch = X86_64) -> Iterator[None]:
    """One build at a time per source tree: every session shares it."""
    path = cache_dir() / "build" / (".lock" if arch is X86_64 else f".lock-{arch.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another droidoom lab build ({path}) ...", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_locked(variant: str, k: str, jobs: int | None, step: Callable[[int], None],
                  arch: Arch = X86_64) -> Kernel:  # fmt: skip
    t0 = time.monotonic()
    compiler(arch)  # a missing cross compiler says so before the download
    tree = extract(fetch(), arch)
    _set_patches(tree, variant)
    missing = configure(tree, arch)
    if missing:
        raise BuildError(f"this source did not take {', '.join(missing)} from {arch.fragment}")
    _make(tree, jobs or os.cpu_count() or 1, step, arch)
    out = kernel_dir(variant, arch)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(arch.image_path).name
    tmp = out / f"{name}.tmp"
    shutil.copyfile(tree / arch.image_path, tmp)
    seconds = time.monotonic() - t0
    info = {"variant": variant, "key": k, "arch": arch.name, "package": PACKAGE,
            "version": version(), "compiler": compiler(arch), "seconds": round(seconds, 1),
            "patch": PATCHES[variant][0].name if PATCHES[variant] else None}  # fmt: skip
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(out / name)
    # Leave the shared tree as released: a droidoom that does not know this variant's patch
    # (another checkout using the same cache) must not build it into its own kernels.
    _set_patches(tree, "fixed")
    return Kernel(variant, out / name, k, False, seconds)
