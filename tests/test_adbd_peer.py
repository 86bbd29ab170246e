"""The loopback adbd peer, driven through real adb servers (every binary present) and adbutils."""

from __future__ import annotations

import os
import random
import shutil
import stat
import struct
import time
import uuid

import pytest
from adbd_peer import start_peer

pytest_plugins = ["adb_fixtures"]

TMP = "/data/local/tmp"


@pytest.fixture
def server(each_adb_server):
    return each_adb_server


@pytest.fixture
def peer(adb_peer_factory, server):
    return adb_peer_factory({"ro.product.model": "Peer Model"}, server=server)


@pytest.fixture
def device(peer):
    return peer.device


@pytest.fixture
def remote_dir():
    """A fresh directory under /data/local/tmp (the peer serves this host's filesystem)."""
    path = os.path.join(TMP, f"adbd-peer-test-{uuid.uuid4().hex[:12]}")
    os.makedirs(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pids_with(marker: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry))
    return found


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def unique_sleep() -> str:
    """A sleep duration nothing else uses, so the process can be found by its cmdline."""
    return f"{random.randint(1000, 9000)}.{random.randint(100000, 999999)}"


def read_until(conn, needle: bytes, timeout: float = 5.0) -> bytes:
    conn.conn.settimeout(timeout)
    data = b""
    while needle not in data:
        chunk = conn.conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def open_shell_v2(device, cmd: str):
    conn = device.open_transport()
    conn.send_command(f"shell,v2,raw:{cmd}")
    conn.check_okay()
    return conn


def read_shell_v2(conn) -> tuple[bytes, bytes, int | None]:
    out, err, code = b"", b"", None
    while code is None:
        header = conn.read_exact(5)
        kind, length = header[0], struct.unpack("<I", header[1:])[0]
        payload = conn.read_exact(length) if length else b""
        if kind == 1:
            out += payload
        elif kind == 2:
            err += payload
        elif kind == 3:
            code = payload[0]
    return out, err, code


def test_devices_lists_peer(server, peer):
    assert server.devices()[peer.serial] == "device"
    listing = server.run("devices", "-l", text=True).stdout
    line = next(x for x in listing.splitlines() if x.startswith(peer.serial))
    assert line.split()[1] == "device"
    assert "model:Peer_Model" in line and "product:loopback" in line
    assert server.run("-s", peer.serial, "get-state", text=True).stdout.strip() == "device"
    features = set(peer.device.get_features().split(","))
    assert {"shell_v2", "cmd", "stat_v2", "fixed_push_mkdir"} <= features


def test_shell_v1_and_v2(device):
    assert device.shell("echo hi; echo err >&2") == "hi\nerr"
    r = device.shell2("echo hi; echo err >&2; exit 3", v2=True)
    assert (r.returncode, r.stdout, r.stderr) == (3, "hi\n", "err\n")
    r = device.shell2("(echo v1; exit 4)", v2=False)  # v1: exit code via an echo
    assert (r.returncode, r.output) == (4, "v1\n")
    r = device.shell2("kill -TERM $$", v2=True)
    assert r.returncode == 128 + 15
    big = device.shell("head -c 3000000 /dev/zero | tr '\\0' x", encoding=None)
    assert big == b"x" * 3_000_000


def test_getprop(adb_peer_factory, server):
    props = {
        "ro.product.model": "Pixel Test",
        "ro.product.cpu.abi": "arm64-v8a",
        "ro.build.version.sdk": "33",
        "ro.build.fingerprint": "google/test/test:13/TQ3A/1:user/release-keys",
    }
    device = adb_peer_factory(props, server=server, serial="SER123").device
    assert device.prop.model == "Pixel Test"
    assert device.prop.device == "loopback"
    assert device.getprop("ro.product.cpu.abi") == "arm64-v8a"
    assert device.getprop("ro.build.version.sdk") == "33"
    assert device.getprop("ro.build.fingerprint") == props["ro.build.fingerprint"]
    assert device.getprop("ro.serialno") == "SER123"
    assert device.getprop("ro.no.such.prop") == ""
    assert device.shell("getprop ro.no.such.prop fallback") == "fallback"
    listing = device.shell("getprop").splitlines()
    assert "[ro.product.model]: [Pixel Test]" in listing
    assert "[ro.build.type]: [userdebug]" in listing


def test_push_pull_roundtrip(device, server, peer, remote_dir, tmp_path):
    data = os.urandom(300 * 1024)
    remote = f"{remote_dir}/nested/blob.bin"  # parent created by the peer (fixed_push_mkdir)
    assert device.sync.push(data, remote, mode=0o640) == len(data)
    st = os.stat(remote)
    assert (stat.S_IMODE(st.st_mode), st.st_size) == (0o640, len(data))
    info = device.sync.stat(remote)
    assert (info.mode, info.size) == (stat.S_IFREG | 0o640, len(data))
    local = tmp_path / "pulled.bin"
    assert device.sync.pull(remote, local) == len(data)
    assert local.read_bytes() == data
    # the adb binary's own sync client (STA2/LIST/SEND/RECV as the server version does them)
    src = tmp_path / "src.bin"
    src.write_bytes(data[::-1])
    r = server.run("-s", peer.serial, "push", str(src), f"{remote_dir}/viaadb.bin")
    assert r.returncode == 0, r.stderr
    r = server.run("-s", peer.serial, "pull", f"{remote_dir}/viaadb.bin", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b").read_bytes() == data[::-1]
    r = server.run("-s", peer.serial, "pull", f"{remote_dir}/missing", str(tmp_path / "c"))
    assert r.returncode != 0


def test_sync_stat_and_list(device, remote_dir):
    with open(f"{remote_dir}/a.txt", "wb") as f:
        f.write(b"12345")
    os.mkdir(f"{remote_dir}/sub")
    os.symlink("a.txt", f"{remote_dir}/link")
    entries = {e.path: e for e in device.sync.list(remote_dir)}
    assert set(entries) == {".", "..", "a.txt", "sub", "link"}
    assert entries["a.txt"].size == 5 and stat.S_ISREG(entries["a.txt"].mode)
    assert stat.S_ISDIR(entries["sub"].mode)
    assert stat.S_ISLNK(entries["link"].mode)  # LIST uses lstat, like adbd
    assert stat.S_ISDIR(device.sync.stat(remote_dir).mode)
    assert device.sync.exists(f"{remote_dir}/a.txt")
    assert not device.sync.exists(f"{remote_dir}/nope")
    assert device.sync.read_text(f"{remote_dir}/a.txt") == "12345"


def test_shell_v2_stdin(device, server, peer):
    payload = os.urandom(200 * 1024)
    conn = open_shell_v2(device, "cat; echo done >&2; exit 5")
    try:
        for i in range(0, len(payload), 30000):
            chunk = payload[i : i + 30000]
            conn.send(struct.pack("<BI", 0, len(chunk)) + chunk)
        conn.send(struct.pack("<BI", 4, 0))  # close stdin
        conn.conn.settimeout(10)
        out, err, code = read_shell_v2(conn)
    finally:
        conn.close()
    assert (out, err, code) == (payload, b"done\n", 5)
    # the adb client binary forwards its stdin and returns the exit code (shell_v2)
    r = server.run("-s", peer.serial, "shell", "cat", input=b"hello\n" * 5000)
    assert (r.returncode, r.stdout) == (0, b"hello\n" * 5000)
    assert server.run("-s", peer.serial, "shell", "exit 7").returncode == 7


def test_streaming_output(device, remote_dir):
    flag = f"{remote_dir}/go"  # the command blocks until the test creates this file
    cmd = f"echo first; while [ ! -e {flag} ]; do sleep 0.05; done; echo second"
    conn = device.shell(cmd, stream=True)
    try:
        assert b"first" in read_until(conn, b"first", timeout=10)  # before the command ends
        open(flag, "w").close()
        assert b"second" in read_until(conn, b"second", timeout=10)
        assert conn.conn.recv(10) == b""  # stream closed when the command exited
    finally:
        conn.close()


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_close_kills_remote_command(device, protocol):
    duration = unique_sleep()
    cmd = f"echo ready; exec sleep {duration}"
    conn = device.shell(cmd, stream=True) if protocol == "v1" else open_shell_v2(device, cmd)
    try:
        assert b"ready" in read_until(conn, b"ready")
        assert wait_until(lambda: pids_with(f"sleep {duration}"))
    finally:
        conn.close()
    assert wait_until(lambda: not pids_with(f"sleep {duration}")), "remote command survived"


def test_close_kills_whole_command_group(device):
    duration = unique_sleep()  # a grandchild of the peer, not the process it started
    conn = device.shell(f"sleep {duration} & echo ready; wait", stream=True)
    try:
        assert b"ready" in read_until(conn, b"ready")
        assert wait_until(lambda: pids_with(f"sleep {duration}"))
    finally:
        conn.close()
    assert wait_until(lambda: not pids_with(f"sleep {duration}"))


def test_unplug_drops_device_and_kills_command(adb_peer_factory, server):
    peer = adb_peer_factory(server=server)
    duration = unique_sleep()
    conn = peer.device.shell(f"echo ready; exec sleep {duration}", stream=True)
    try:
        assert b"ready" in read_until(conn, b"ready")
        assert wait_until(lambda: pids_with(f"sleep {duration}"))
        peer.kill()
        state = server.wait_for_state(peer.serial, {None, "offline"}, timeout=10)
        assert state in (None, "offline")
        assert wait_until(lambda: not pids_with(f"sleep {duration}")), "command outlived peer"
        conn.conn.settimeout(10)
        try:
            assert conn.conn.recv(100) == b""  # the server closed the client's stream
        except ConnectionResetError:
            pass
    finally:
        conn.close()


def test_peer_stop_kills_commands(adb_peer_factory, server):
    peer = adb_peer_factory(server=server)
    duration = unique_sleep()
    conn = peer.device.shell(f"echo ready; sleep {duration}; echo never", stream=True)
    try:
        assert b"ready" in read_until(conn, b"ready")
        assert wait_until(lambda: pids_with(f"sleep {duration}"))
        peer.stop()  # SIGTERM: clean shutdown closes every stream and kills its command
        assert not peer.alive
        assert wait_until(lambda: not pids_with(f"sleep {duration}"))
    finally:
        conn.close()


def test_two_peers(adb_peer_factory, server):
    a = adb_peer_factory(
        {"ro.product.model": "Model A", "ro.build.version.sdk": "30"}, server=server
    )
    b = adb_peer_factory(
        {"ro.product.model": "Model B", "ro.build.version.sdk": "35"}, server=server
    )
    devices = server.devices()
    assert devices[a.serial] == devices[b.serial] == "device"
    assert (a.device.prop.model, b.device.prop.model) == ("Model A", "Model B")
    assert (a.device.getprop("ro.build.version.sdk"), b.device.getprop("ro.build.version.sdk")) == (
        "30",
        "35",
    )
    listing = server.run("devices", "-l", text=True).stdout
    assert "model:Model_A" in listing and "model:Model_B" in listing


def test_default_fixtures(adb_server, adb_peer, adb_device):
    assert adb_server.devices()[adb_peer.serial] == "device"
    assert adb_device.shell("echo ok") == "ok"
    assert adb_server.port not in (5037, *range(5554, 5586))
    assert adb_server.env["ADB_MDNS"] == "0" and adb_server.env["HOME"] == adb_server.home


def test_in_thread_peer(server):
    peer = start_peer({"ro.product.model": "Threaded"})
    try:
        device = server.connect(peer)
        assert device.prop.model == "Threaded"
        assert device.shell2("exit 9", v2=True).returncode == 9
    finally:
        server.disconnect(peer)
        peer.stop()
