"""Paths in the kernel lab (issue 16): no path reaches a shell or QEMU's option parser as
it is, whatever XDG_CACHE_HOME and TMPDIR hold. Real dpkg-deb, tar and QEMU; no kernel
is built or booted (QEMU connects its agent socket before it loads the kernel).
"""

from __future__ import annotations

import io
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from droidoom.errors import PermanentTargetError, UsageError
from droidoom.lab import build, qemu
from droidoom.lab.qemu import Machine, VmSpec


def hostile_dir(tmp_path: Path, marker: Path) -> Path:
    """A directory whose path has spaces, a comma and a command substitution in it."""
    return tmp_path / f"c, $(touch {marker})" / "more dirs"


def small_source_deb(dest: Path) -> Path:
    """A real .deb shaped like linux-source-6.1: ./usr/src/linux-source-6.1.tar.xz."""
    stage = dest.parent / "stage"
    (stage / "DEBIAN").mkdir(parents=True)
    (stage / "DEBIAN" / "control").write_text(
        "Package: linux-source-6.1\nVersion: 1.0-test\nArchitecture: all\n"
        "Maintainer: droidoom tests <t@example.org>\nDescription: a tiny stand-in\n"
    )
    (stage / "usr" / "src").mkdir(parents=True)
    with tarfile.open(stage / "usr" / "src" / "linux-source-6.1.tar.xz", "w:xz") as tar:
        for name, text in (("Makefile", "all:\n"), ("fs/proc/base.c", "/* base */\n")):
            data = text.encode()
            info = tarfile.TarInfo(f"linux-source-6.1/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "--build", str(stage), str(dest)], check=True,
                   capture_output=True)  # fmt: skip
    shutil.rmtree(stage)
    return dest


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_extract_runs_no_shell_in_a_cache_path_with_spaces_and_dollar(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    cache = hostile_dir(tmp_path, marker)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("DROIDOOM_LAB_SOURCE_VERSION", "1.0-test")
    deb = small_source_deb(build.cache_dir() / "src" / "linux-source-6.1_1.0-test_all.deb")
    tree = build.extract(deb)
    assert not marker.exists()  # `sh -c` ran the $(touch ...) in the path
    assert tree == cache / "droidoom" / "lab" / "build" / "linux-source-6.1"
    assert (tree / "Makefile").read_text() == "all:\n"  # --strip-components=1
    assert (tree / "fs" / "proc" / "base.c").is_file()
    assert (tree / ".droidoom-extracted").read_text() == "1.0-test"


def test_extract_of_a_broken_package_names_the_failing_step(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache dir"))
    monkeypatch.setenv("DROIDOOM_LAB_SOURCE_VERSION", "1.0-test")
    deb = tmp_path / "not a.deb"
    deb.write_bytes(b"not an ar archive")
    with pytest.raises(build.BuildError, match=r"extracting not a\.deb failed \(dpkg-deb exit"):
        build.extract(deb)


def test_a_cache_path_make_cannot_build_in_is_refused_up_front(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    monkeypatch.setenv("XDG_CACHE_HOME", str(hostile_dir(tmp_path, marker)))
    monkeypatch.setenv("DROIDOOM_LAB_SOURCE_VERSION", "1.0-test")
    monkeypatch.setattr(build, "fetch", lambda: pytest.fail("fetched before the path check"))
    with pytest.raises(UsageError, match="Set XDG_CACHE_HOME to a directory without them"):
        build.build("fixed")
    assert not marker.exists()
    build.check_tree_path(tmp_path / "plain" / "path")  # a plain path passes


@pytest.fixture(params=["comma", "long"])
def odd_tmpdir(request, tmp_path, monkeypatch) -> Path:
    """TMPDIR with a comma in it, or one of 120 characters (a unix socket path has 107)."""
    if request.param == "comma":
        d = tmp_path / "a,b,id=x"
    else:
        d = tmp_path / ("t" * max(1, 120 - len(str(tmp_path)) - 1))
        assert len(str(d)) >= 120
    d.mkdir()
    monkeypatch.setenv("TMPDIR", str(d))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() caches its answer
    assert tempfile.gettempdir() == str(d)
    return d


def test_qemu_command_escapes_commas_and_keeps_its_socket_short(odd_tmpdir, tmp_path):
    d = qemu.private_dir()
    try:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        sock = d / "agent.sock"
        assert len(str(sock)) < 100 and "," not in str(sock)
        # A socket in a directory with commas (e.g. the TMPDIR fallback) is escaped.
        spec = VmSpec(image=tmp_path / "k,1" / "bzImage")
        cmd = qemu.qemu_command(spec, tmp_path / "i,2", "tcg", Path("/s,x/a.sock"), d / "c.log")
        assert "socket,id=agent,path=/s,,x/a.sock" in cmd
        assert str(spec.image) in cmd and str(tmp_path / "i,2") in cmd  # bare paths
        assert not any(a in ("sh", "/bin/sh", "-c") for a in cmd)
    finally:
        shutil.rmtree(d)


@pytest.mark.skipif(shutil.which(qemu.QEMU) is None, reason="needs qemu-system-x86_64")
def test_qemu_starts_and_connects_whatever_tmpdir_is(odd_tmpdir):
    # Was: a comma split QEMU's -chardev option (no start, an error 10 s later); a long
    # TMPDIR made bind() fail with "AF_UNIX path too long".
    files = odd_tmpdir / "x,y"
    files.mkdir()
    (files / "bzImage").write_bytes(b"not a kernel: QEMU connects the socket first")
    (files / "initrd").write_bytes(b"")
    m = Machine(VmSpec(image=files / "bzImage", timeout=30), files / "initrd", "tcg")
    d = m.console_log.parent
    try:
        assert m.sock.fileno() >= 0  # QEMU connected to the agent socket
        assert len(str(d / "agent.sock")) < 100 and stat.S_IMODE(d.stat().st_mode) == 0o700
    finally:
        m.close()
    assert not d.exists()


@pytest.mark.skipif(shutil.which(qemu.QEMU) is None, reason="needs qemu-system-x86_64")
def test_qemu_that_cannot_start_says_why_at_once(tmp_path):
    # Was: 10 s of waiting, then "ValueError: read of closed file" (stderr read after close).
    (tmp_path / "bzImage").write_bytes(b"")
    t0 = time.monotonic()
    spec = VmSpec(image=tmp_path / "bzImage", memory_mb=-5)  # QEMU refuses it at once
    with pytest.raises(PermanentTargetError, match="QEMU did not start: .*-m -5"):
        Machine(spec, tmp_path / "bzImage", "tcg")
    assert time.monotonic() - t0 < 8
