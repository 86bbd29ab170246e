"""Rebuild the native droidoom-helper for every Android ABI, reproducibly.

    python device_scripts/build_helpers.py [--abi ABI ...] [--out DIR] [--check]

Compiles device_scripts/droidoom_helper.c with the pinned zig (`python -m ziglang cc`,
pip package ziglang, pinned in pyproject.toml) into static musl binaries at
droidoom/bin/<abi>/droidoom-helper and writes droidoom/bin/MANIFEST.json (zig target,
flags, binary sha256, source sha256, zig version per ABI). The build embeds the
source's SHA-256 (`droidoom-helper version` prints it) and nothing machine-specific, so
the same source and zig give the same bytes. `--check` rebuilds into a temporary
directory and fails if any byte differs from the shipped binaries.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCE = HERE / "droidoom_helper.c"
DEFAULT_OUT = ROOT / "droidoom" / "bin"
BINARY_NAME = "droidoom-helper"

#: Android ABI -> (zig target, ABI-specific flags). armeabi-v7a: the ABI's baseline is
#: ARMv7-A with VFPv3-D16 and no NEON requirement; hard-float calling convention is
#: fine because the binary is static (no foreign code to agree with).
ABIS: dict[str, tuple[str, list[str]]] = {
    "arm64-v8a": ("aarch64-linux-musl", []),
    "armeabi-v7a": ("arm-linux-musleabihf", ["-mcpu=generic+v7a+vfp3d16-neon-d32"]),
    "x86_64": ("x86_64-linux-musl", []),
    "x86": ("x86-linux-musl", []),
}

#: Flags for every ABI. No paths or timestamps reach the binary: the source is passed
#: by a relative name from its own directory, debug info is stripped (-s), and there is
#: no build-id note.
COMMON_FLAGS = [
    "-std=c11",
    "-O2",
    "-static",
    "-s",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wl,--build-id=none",
]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zig_version() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "ziglang", "version"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        sys.exit(
            "zig is not available: install the pinned build toolchain with "
            "`pip install 'droidoom[build]'`\n" + out.stderr
        )
    return out.stdout.strip()


def pinned_zig() -> str | None:
    """The ziglang version pinned in pyproject.toml, if any."""
    try:
        text = (ROOT / "pyproject.toml").read_text()
    except FileNotFoundError:
        return None
    m = re.search(r"ziglang==([0-9][^\"' ,\]]*)", text)
    return m.group(1) if m else None


def flags_for(abi: str, source_sha: str) -> list[str]:
    return COMMON_FLAGS + ABIS[abi][1] + [f'-DDROIDOOM_SOURCE_SHA256="{source_sha}"']


def build_one(abi: str, out_dir: Path, source_sha: str) -> tuple[str, Path, float]:
    """Compile the helper for one ABI into out_dir/<abi>/droidoom-helper."""
    target = ABIS[abi][0]
    dest = out_dir / abi / BINARY_NAME
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(BINARY_NAME + ".tmp")
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", target, *flags_for(abi, source_sha)]
    cmd += ["-o", str(tmp), SOURCE.name]
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"build for {abi} ({target}) failed:\n{res.stdout}{res.stderr}")
    tmp.chmod(0o755)
    tmp.replace(dest)
    return abi, dest, time.monotonic() - t0


def build(abis: list[str], out_dir: Path) -> dict[str, dict]:
    """Build `abis` into out_dir; returns manifest entries per ABI."""
    source = SOURCE.read_bytes()
    source_sha = sha256_bytes(source)
    zver = zig_version()
    pin = pinned_zig()
    if pin and pin != zver:
        sys.exit(
            f"zig {zver} is installed but pyproject.toml pins ziglang=={pin}; the binaries are "
            f"only reproducible with the pinned zig: `pip install ziglang=={pin}`"
        )
    entries: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=len(abis)) as pool:
        for abi, dest, secs in pool.map(lambda a: build_one(a, out_dir, source_sha), abis):
            data = dest.read_bytes()
            print(f"built {abi:12} {len(data):7d} bytes  {sha256_bytes(data)[:16]}  {secs:5.1f} s")
            entries[abi] = {
                "path": f"{abi}/{BINARY_NAME}",
                "zig_target": ABIS[abi][0],
                "flags": flags_for(abi, source_sha),
                "sha256": sha256_bytes(data),
                "size": len(data),
                "source": "device_scripts/" + SOURCE.name,
                "source_sha256": source_sha,
                "zig_version": zver,
            }
    return entries


def write_manifest(out_dir: Path, entries: dict[str, dict]) -> None:
    path = out_dir / "MANIFEST.json"
    try:
        manifest = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        manifest = {}
    abis = manifest.get("abis", {})
    abis.update(entries)  # a partial rebuild keeps the other ABIs' entries
    manifest = {
        "helper": BINARY_NAME,
        "protocol": 1,
        "rebuild": "python device_scripts/build_helpers.py",
        "abis": {k: abis[k] for k in sorted(abis)},
    }
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def check(abis: list[str], shipped: Path) -> int:
    """Rebuild into a temp dir and compare byte for byte with the shipped binaries."""
    bad = 0
    manifest_abis = {}
    try:
        manifest_abis = json.loads((shipped / "MANIFEST.json").read_text()).get("abis", {})
    except (FileNotFoundError, json.JSONDecodeError):
        print(f"MISSING  {shipped / 'MANIFEST.json'}")
        bad += 1
    with tempfile.TemporaryDirectory(prefix="droidoom-build-") as tmp:
        entries = build(abis, Path(tmp))
        for abi in abis:
            ship = shipped / abi / BINARY_NAME
            fresh = Path(tmp) / abi / BINARY_NAME
            if not ship.is_file():
                print(f"MISSING  {ship}")
                bad += 1
            elif ship.read_bytes() != fresh.read_bytes():
                print(f"DIFFERS  {ship}: shipped binary does not match a rebuild of the source")
                bad += 1
            elif manifest_abis.get(abi, {}).get("sha256") != entries[abi]["sha256"]:
                print(f"STALE    MANIFEST.json entry for {abi}")
                bad += 1
            else:
                print(f"OK       {ship}")
    if bad:
        print(f"{bad} problem(s); rebuild with `python device_scripts/build_helpers.py`")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--abi", action="append", choices=sorted(ABIS), help="repeatable; default all")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: droidoom/bin")
    ap.add_argument("--check", action="store_true", help="verify shipped binaries, build nothing")
    args = ap.parse_args(argv)
    abis = args.abi or list(ABIS)
    if args.check:
        return check(abis, args.out)
    t0 = time.monotonic()
    entries = build(abis, args.out)
    write_manifest(args.out, entries)
    print(f"wrote {args.out / 'MANIFEST.json'} ({time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
