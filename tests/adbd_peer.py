#!/usr/bin/env python3
"""Loopback adbd peer: the *device* side of the adb wire protocol, serving this Linux host.

A real adb server (``adb connect 127.0.0.1:PORT``) talks to this program as if it were a
phone in TCP/IP mode; commands run on this host, so droidoom's device path can be tested
without a phone.  Standard library only.

Transport (https://android.googlesource.com/platform/packages/modules/adb/+/HEAD/protocol.txt):
every message is a 24-byte little-endian header ``command, arg0, arg1, data_length,
data_check, magic`` (``magic = command ^ 0xffffffff``) followed by ``data_length`` bytes.
``data_check`` (a byte sum) is only filled in for peers older than version 0x01000001.

* ``CNXN(version, maxdata, "host::...")`` from the server is answered with our own CNXN
  (no AUTH): ``device::ro.product.name=..;ro.product.model=..;ro.product.device=..;features=..``.
  Packets we send are at most ``min(server maxdata, MAX_PAYLOAD)`` bytes.
* ``OPEN(remote_id, 0, "service\\0")`` -> ``OKAY(local_id, remote_id)`` (or ``CLSE(0, remote_id)``
  for an unknown service), then both sides exchange ``WRTE(sender_id, receiver_id, data)``.
  Every WRTE is acknowledged with ``OKAY``; a sender keeps at most one unacknowledged WRTE
  per stream.  We acknowledge inbound WRTEs at once while less than ``INBUF_LIMIT`` bytes are
  buffered unread (like adbd's socketpair buffer), later otherwise.
* ``CLSE(sender_id, receiver_id)`` closes a stream; we send one when a service finishes and
  kill the service's process when the server closes first (or the TCP connection drops).

Services:

* ``shell:<cmd>`` and ``exec:<cmd>``: raw bytes; stdout and stderr merged; inbound data goes to
  the command's stdin; the stream closes when the output reaches EOF.
* ``shell,v2[,opts]:<cmd>``: shell protocol v2 packets ``id:u8 length:u32le payload`` with
  ids 0 stdin, 1 stdout, 2 stderr, 3 exit (1-byte code, 128+N for signal N), 4 close stdin,
  5 window size (ignored).  ``pty`` is not emulated: commands always get pipes.
* ``sync:``: ``STAT`` (lstat, v1), ``STA2``/``LST2`` (stat_v2), ``LIST`` (``DENT`` entries
  then ``DONE``), ``SEND`` (``path,mode`` then ``DATA`` chunks and ``DONE mtime``; reply
  ``OKAY``/``FAIL``; parent directories are created), ``RECV`` (``DATA`` chunks of
  <= 64 KiB then ``DONE``, or ``FAIL``) and ``QUIT``.  Requests may span WRTE boundaries.
  Advertised features: shell_v2, cmd, stat_v2, fixed_push_mkdir (no ls_v2/sendrecv_v2, so
  clients use the v1 LIST/SEND/RECV requests).

Commands run as ``/bin/sh -c <cmd>`` in ``/`` on the real host filesystem, with a shim
directory first in ``PATH`` whose ``getprop`` prints this peer's properties (``getprop``
lists ``[key]: [value]`` lines, ``getprop KEY [DEFAULT]`` prints one value), and the
device-tool stand-ins of ``tests/peer_tools/`` (``NAME.py`` installed as ``NAME``).  The peer
creates ``/data/local/tmp`` at start-up if it is missing (tests run as root on a throwaway
VM).  Each command gets its own session/process group, ``PR_SET_PDEATHSIG=SIGKILL`` and
oom_score_adj -950 (as adbd's shell children, where permitted); when its stream is closed
early the peer sends SIGHUP to the command only (as adbd does), waits ``kill_grace``
seconds, then SIGKILLs the group.  The group leader is reaped only after the last signal, so its pid
(and group id) cannot have been reused by an unrelated process.

Usage::

    python tests/adbd_peer.py --port 0 --prop ro.product.model=Pixel --serial ABC
    # prints "ADBD_PEER_LISTENING <host> <port>" on stdout once it accepts connections

    peer = start_peer({"ro.product.model": "Pixel"})        # in a thread of this process
    peer = start_peer({...}, process=True)                   # separate process (SIGKILL-able)
    ... adb connect peer.serial ...; peer.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import platform
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping

log = logging.getLogger("adbd_peer")

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_AUTH = 0x48545541
A_VERSION = 0x01000001  # first version that skips data_check
MAX_PAYLOAD = 256 * 1024
INBUF_LIMIT = 1024 * 1024
SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
HEADER = struct.Struct("<6I")
DEFAULT_FEATURES = ("shell_v2", "cmd", "stat_v2", "fixed_push_mkdir")
READY_PREFIX = "ADBD_PEER_LISTENING"
DEVICE_DIRS = ("/data/local/tmp",)

SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN = 0, 1, 2, 3, 4


def _cmd_name(cmd: int) -> str:
    return cmd.to_bytes(4, "little").decode("ascii", "replace")


def default_props(serial: str | None = None) -> dict[str, str]:
    """Properties of a peer unless overridden (the ABI follows this host's machine)."""
    abi = {"aarch64": "arm64-v8a", "armv7l": "armeabi-v7a", "i686": "x86"}.get(
        platform.machine(), "x86_64"
    )
    return {
        "ro.product.name": "loopback",
        "ro.product.model": "Loopback Peer",
        "ro.product.device": "loopback",
        "ro.product.manufacturer": "droidoom",
        "ro.build.fingerprint": (
            "droidoom/loopback/loopback:14/UQ1A.240105.004/1:userdebug/test-keys"
        ),
        "ro.build.version.sdk": "34",
        "ro.build.version.release": "14",
        "ro.product.cpu.abi": abi,
        "ro.product.cpu.abilist": abi,
        "ro.serialno": serial or "LOOPBACK0001",
        "ro.debuggable": "1",
        "ro.build.type": "userdebug",
    }


def load_props_file(path: str) -> dict[str, str]:
    """Read a JSON object or ``key=value`` lines (``#`` comments) into a dict."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("{"):
        return {str(k): str(v) for k, v in json.loads(text).items()}
    props = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


GETPROP_SCRIPT = """#!/bin/sh
# getprop shim written by adbd_peer.py: properties live in {props}
if [ $# -eq 0 ]; then
    while IFS= read -r line; do
        printf '[%s]: [%s]\\n' "${{line%%=*}}" "${{line#*=}}"
    done < '{props}'
    exit 0
fi
while IFS= read -r line; do
    case $line in "$1="*) printf '%s\\n' "${{line#*=}}"; exit 0 ;; esac
done < '{props}'
printf '%s\\n' "${{2:-}}"
"""


# --- child processes ------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _child_preexec(parent_pid: int) -> None:
    """Runs in the forked child: die with SIGKILL when the peer (its parent) dies; take
    oom_score_adj -950 as adbd's shell children do (works where the peer's adj_min allows,
    e.g. under a ShellUidPeer whose setup wrote init's -1000)."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the peer died before prctl took effect
        os._exit(137)
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-950")
    except OSError:
        pass


class Child:
    """A command in its own session, with non-blocking pipes and a pidfd for its exit."""

    def __init__(self, argv: list[str], env: Mapping[str, str], merge_stderr: bool):
        parent = os.getpid()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            bufsize=0,
            cwd="/",
            env=dict(env),
            start_new_session=True,
            preexec_fn=lambda: _child_preexec(parent),
        )
        self.pid = self.popen.pid
        self.stdin = self.popen.stdin.fileno()
        self.stdout = self.popen.stdout.fileno()
        self.stderr = None if merge_stderr else self.popen.stderr.fileno()
        for fd in (self.stdin, self.stdout, self.stderr):
            if fd is not None:
                os.set_blocking(fd, False)
        self.reaped = False
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        self._pidfd = os.pidfd_open(self.pid)
        loop.add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        if not self._exited.done():
            self._exited.set_result(None)

    @staticmethod
    async def _wait_fd(fd: int, writable: bool) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        add, remove = (
            (loop.add_writer, loop.remove_writer)
            if writable
            else (loop.add_reader, loop.remove_reader)
        )
        add(fd, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            remove(fd)

    async def read(self, fd: int, n: int) -> bytes:
        """Up to ``n`` bytes from an output pipe; ``b""`` at EOF."""
        while True:
            try:
                return os.read(fd, n)
            except BlockingIOError:
                await self._wait_fd(fd, writable=False)

    async def write_stdin(self, data: bytes) -> None:
        """Write all of ``data``; raises BrokenPipeError/OSError once stdin is gone."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.stdin, view) :]
            except BlockingIOError:
                await self._wait_fd(self.stdin, writable=True)

    def close_stdin(self) -> None:
        if not self.popen.stdin.closed:
            self.popen.stdin.close()

    async def wait_exit_code(self) -> int:
        """Wait for the command to exit, reap it and return its adb-style exit code."""
        await asyncio.shield(self._exited)
        self._reap()
        rc = self.popen.returncode
        return 128 - rc if rc < 0 else rc

    def _signal_group(self, sig: int) -> None:
        # The group is the session the command was started in (pgid == pid); it is ours as
        # long as the leader is not reaped.
        if self.reaped or self.pid <= 1:
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self) -> None:
        if not self.reaped:
            self.popen.wait()
            self.reaped = True

    def close(self) -> None:
        """Close our pipe ends and the pidfd (call once no task uses them any more)."""
        for f in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if f is not None and not f.closed:
                f.close()
        if self._pidfd >= 0:
            try:
                asyncio.get_running_loop().remove_reader(self._pidfd)
            except RuntimeError:
                pass
            os.close(self._pidfd)
            self._pidfd = -1

    async def kill(self, grace: float) -> None:
        """SIGHUP the command (only the direct child, as adbd does: a wrapper such as `sh -c`
        or `su` must pass it on or notice its closed pipes), wait up to ``grace`` s, then
        SIGKILL the whole group so nothing outlives the test, and reap."""
        if self.reaped:
            return
        self.close_stdin()
        if self.pid > 1:  # not reaped yet, so the pid is still ours
            try:
                os.kill(self.pid, signal.SIGHUP)
            except ProcessLookupError:
                pass
        try:
            if not self._exited.done():
                await asyncio.wait_for(asyncio.shield(self._exited), grace)
        except TimeoutError:
            pass
        finally:  # runs even when cancelled again: the group never outlives its stream
            self._signal_group(signal.SIGKILL)
            try:
                self.popen.wait(timeout=5)
                self.reaped = True
            except subprocess.TimeoutExpired:
                log.error("pid %d did not die after SIGKILL", self.pid)


# --- streams and connections ------------------------------------------------------------


class StreamClosed(Exception):
    pass


class Stream:
    """One OPENed service: flow-controlled sends, buffered receives."""

    def __init__(self, conn: Connection, local_id: int, remote_id: int):
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.closed = False
        self.task: asyncio.Task | None = None
        self._acked = asyncio.Event()
        self._acked.set()
        self._send_lock = asyncio.Lock()
        self._inbuf = bytearray()
        self._eof = False
        self._data = asyncio.Event()
        self._ack_owed = False

    # outbound
    async def send(self, data: bytes) -> None:
        """Send ``data`` in WRTEs of at most the negotiated size, one unacked at a time."""
        async with self._send_lock:
            step = self.conn.max_payload
            for i in range(0, len(data), step):
                await self._acked.wait()
                if self.closed:
                    raise StreamClosed()
                self._acked.clear()
                self.conn.send_packet(A_WRTE, self.local_id, self.remote_id, data[i : i + step])
                await self.conn.drain()

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until the last WRTE is acknowledged (or the stream is closed)."""
        try:
            await asyncio.wait_for(self._acked.wait(), timeout)
        except TimeoutError:
            log.warning("stream %d: last WRTE not acknowledged", self.local_id)

    def on_okay(self) -> None:
        self._acked.set()

    # inbound
    def on_write(self, data: bytes) -> None:
        self._inbuf += data
        self._data.set()
        if len(self._inbuf) < INBUF_LIMIT:
            self.conn.send_packet(A_OKAY, self.local_id, self.remote_id)
        else:
            self._ack_owed = True

    def _consumed(self) -> None:
        if not self._inbuf and not self._eof:
            self._data.clear()
        if self._ack_owed and len(self._inbuf) < INBUF_LIMIT and not self.closed:
            self._ack_owed = False
            self.conn.send_packet(A_OKAY, self.local_id, self.remote_id)

    async def read_some(self, n: int = INBUF_LIMIT) -> bytes:
        """Up to ``n`` buffered bytes; ``b""`` once the stream is closed."""
        while not self._inbuf and not self._eof:
            self._data.clear()
            await self._data.wait()
        return self._take(n)

    async def read_exact(self, n: int) -> bytes:
        while len(self._inbuf) < n:
            if self._eof:
                raise StreamClosed()
            self._data.clear()
            await self._data.wait()
        return self._take(n)

    def _take(self, n: int) -> bytes:
        data = bytes(self._inbuf[:n])
        del self._inbuf[:n]
        self._consumed()
        return data

    # closing
    def on_remote_close(self) -> None:
        """The server closed the stream (or the connection dropped): stop the service."""
        self.closed = self._eof = True
        self._acked.set()
        self._data.set()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def close(self) -> None:
        """Close from our side (service finished)."""
        if not self.closed:
            self.closed = self._eof = True
            self._acked.set()
            self._data.set()
            self.conn.send_packet(A_CLSE, self.local_id, self.remote_id)
        self.conn.streams.pop(self.local_id, None)


class Connection:
    """One TCP connection from an adb server."""

    def __init__(self, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.peer = peer
        self.reader = reader
        self.writer = writer
        self.streams: dict[int, Stream] = {}
        self.max_payload = 4096
        self.version = A_VERSION
        self.online = False
        self._next_id = 1

    def send_packet(self, cmd: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        if self.writer.is_closing():
            return
        check = 0 if self.version >= A_VERSION else sum(data) & 0xFFFFFFFF
        header = HEADER.pack(cmd, arg0, arg1, len(data), check, cmd ^ 0xFFFFFFFF)
        self.writer.write(header + data)

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except ConnectionError as e:
            raise StreamClosed() from e

    async def run(self) -> None:
        addr = self.writer.get_extra_info("peername")
        log.info("connection from %s", addr)
        try:
            while True:
                header = await self.reader.readexactly(HEADER.size)
                cmd, arg0, arg1, length, _check, magic = HEADER.unpack(header)
                if magic != cmd ^ 0xFFFFFFFF:
                    log.error("bad magic in %r", header)
                    break
                data = await self.reader.readexactly(length) if length else b""
                self._dispatch(cmd, arg0, arg1, data)
                await self.drain()
        except (asyncio.IncompleteReadError, ConnectionError, StreamClosed):
            pass
        finally:
            log.info("connection from %s closed", addr)
            await self._abort_streams()
            self.writer.close()

    async def _abort_streams(self) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        for s in streams:
            s.on_remote_close()
        tasks = [s.task for s in streams if s.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _dispatch(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        log.debug("<- %s %d %d %r", _cmd_name(cmd), arg0, arg1, data[:64])
        if cmd == A_CNXN:
            self._on_cnxn(arg0, arg1, data)
        elif not self.online:
            log.warning("ignoring %s before CNXN", _cmd_name(cmd))
        elif cmd == A_OPEN:
            self._on_open(arg0, data)
        elif cmd in (A_OKAY, A_WRTE, A_CLSE):
            stream = self.streams.get(arg1)
            if stream is None or (stream.remote_id != arg0 and arg0 != 0):
                return  # late packet for a stream we already closed
            if cmd == A_OKAY:
                stream.on_okay()
            elif cmd == A_WRTE:
                stream.on_write(data)
            else:
                self.streams.pop(arg1, None)
                stream.on_remote_close()
        else:  # SYNC, AUTH, STLS...: not used with a CNXN-without-auth device
            log.debug("ignoring %s", _cmd_name(cmd))

    def _on_cnxn(self, version: int, maxdata: int, data: bytes) -> None:
        if self.online:  # the server restarted the transport: drop old streams
            for s in list(self.streams.values()):
                s.on_remote_close()
            self.streams.clear()
        self.version = min(version, A_VERSION)
        self.max_payload = max(256, min(maxdata, MAX_PAYLOAD))
        self.online = True
        log.info("CNXN %#x maxdata=%d %r", version, maxdata, data)
        self.send_packet(A_CNXN, self.version, MAX_PAYLOAD, self.peer.banner())

    def _on_open(self, remote_id: int, data: bytes) -> None:
        service = data.rstrip(b"\0").decode("utf-8", "replace")
        handler = self.peer.service_handler(service)
        if handler is None or remote_id == 0:
            log.warning("refusing service %r", service)
            self.send_packet(A_CLSE, 0, remote_id)
            return
        local_id = self._next_id
        self._next_id += 1
        stream = Stream(self, local_id, remote_id)
        self.streams[local_id] = stream
        log.info("OPEN %d<-%d %r", local_id, remote_id, service)
        self.send_packet(A_OKAY, local_id, remote_id)
        stream.task = asyncio.create_task(self._serve(stream, handler))

    async def _serve(self, stream: Stream, handler) -> None:
        try:
            await handler(stream)
        except (StreamClosed, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("service on stream %d failed", stream.local_id)
        finally:
            stream.close()


# --- services -------------------------------------------------------------------------------


def _shell_packet(kind: int, payload: bytes) -> bytes:
    return struct.pack("<BI", kind, len(payload)) + payload


class Peer:
    """Device state shared by all connections: properties, features, shim dir, services."""

    def __init__(
        self,
        props: Mapping[str, str] | None = None,
        *,
        serial: str | None = None,
        features: tuple[str, ...] = DEFAULT_FEATURES,
        workdir: str | None = None,
        kill_grace: float = 2.0,
    ):
        self.props = default_props(serial)
        self.props.update({k: str(v) for k, v in (props or {}).items()})
        if serial:
            self.props["ro.serialno"] = serial
        self.features = tuple(features)
        self.kill_grace = kill_grace
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="adbd-peer-")
        self.shim_dir = os.path.join(self.workdir, "bin")
        self.props_path = os.path.join(self.workdir, "props")
        self._write_shims()
        self.env = dict(os.environ)
        self.env["PATH"] = self.shim_dir + ":" + self.env.get("PATH", "/usr/bin:/bin")
        for d in DEVICE_DIRS:
            try:
                os.makedirs(d, exist_ok=True)
            except OSError as e:
                log.warning("cannot create %s: %s", d, e)

    def _write_shims(self) -> None:
        os.makedirs(self.shim_dir, exist_ok=True)
        with open(self.props_path, "w", encoding="utf-8") as f:
            for key, value in self.props.items():
                f.write(f"{key}={value}\n".replace("\r", ""))
        script = os.path.join(self.shim_dir, "getprop")
        with open(script, "w", encoding="utf-8") as f:
            f.write(GETPROP_SCRIPT.format(props=self.props_path.replace("'", "")))
        os.chmod(script, 0o755)
        self._install_tools()

    def _install_tools(self) -> None:
        """Copy the device-tool stand-ins (``tests/peer_tools/NAME.py`` -> ``NAME``) into the
        shim dir, run by this peer's interpreter. Copied, not linked: the checkout may sit
        in a directory the peer's (unprivileged) user cannot read."""
        tools = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_tools")
        if not os.path.isdir(tools):
            return
        for name in sorted(os.listdir(tools)):
            if not name.endswith(".py") or name.startswith("_"):
                continue
            with open(os.path.join(tools, name), encoding="utf-8") as f:
                body = f.read()
            # "#: install-if-env VAR": a tool most devices lack (su on a user build)
            marks = [ln.split() for ln in body.splitlines() if ln.startswith("#: install-if-env ")]
            need = [m[2] for m in marks if len(m) > 2]
            if any(not os.environ.get(var) for var in need):
                continue
            if body.startswith("#!"):
                body = body.split("\n", 1)[1]
            dest = os.path.join(self.shim_dir, name[:-3])
            with open(dest, "w", encoding="utf-8") as f:
                f.write(f"#!{sys.executable}\n{body}")
            os.chmod(dest, 0o755)

    def cleanup(self) -> None:
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def banner(self) -> bytes:
        p = self.props
        parts = [
            f"ro.product.name={p.get('ro.product.name', '')}",
            f"ro.product.model={p.get('ro.product.model', '')}",
            f"ro.product.device={p.get('ro.product.device', '')}",
            "features=" + ",".join(self.features),
        ]
        return ("device::" + ";".join(parts)).encode()

    def service_handler(self, service: str):
        name, sep, arg = service.partition(":")
        if not sep:
            return None
        opts = name.split(",")
        if opts[0] == "shell":  # shell[,v2][,TERM=..][,raw|pty]:cmd
            term = next((o[5:] for o in opts[1:] if o.startswith("TERM=")), None)
            return lambda s: self._shell(s, arg, v2="v2" in opts[1:], term=term)
        if name == "exec":
            return lambda s: self._shell(s, arg, v2=False)
        if name == "sync" and not arg:
            return self._sync
        return None

    # shell / exec
    async def _shell(self, stream: Stream, cmd: str, v2: bool, term: str | None = None) -> None:
        argv = ["/bin/sh", "-c", cmd] if cmd else ["/bin/sh"]
        env = self.env if term is None else {**self.env, "TERM": term}
        child = Child(argv, env, merge_stderr=not v2)
        log.info("stream %d: pid %d runs %r (v2=%s)", stream.local_id, child.pid, cmd, v2)
        chunk = stream.conn.max_payload - (5 if v2 else 0)

        async def pump(fd: int, kind: int) -> None:
            while data := await child.read(fd, chunk):
                await stream.send(_shell_packet(kind, data) if v2 else data)

        pumps = [asyncio.create_task(pump(child.stdout, SHELL_STDOUT))]
        if v2:
            pumps.append(asyncio.create_task(pump(child.stderr, SHELL_STDERR)))
        stdin_task = asyncio.create_task(self._pump_stdin(stream, child, v2))
        try:
            await asyncio.gather(*pumps)
            code = await child.wait_exit_code()
            log.info("stream %d: pid %d exited %d", stream.local_id, child.pid, code)
            if v2:
                await stream.send(_shell_packet(SHELL_EXIT, bytes([code & 0xFF])))
            await stream.flush()
        finally:
            # Stop the pumps before touching the pipes they watch, then kill (if the command
            # is still running: stream closed early) and release the fds.
            tasks = [*pumps, stdin_task]
            for task in tasks:
                task.cancel()
            try:
                await asyncio.wait(tasks)
            finally:
                try:
                    await child.kill(self.kill_grace)
                finally:
                    child.close()

    @staticmethod
    async def _pump_stdin(stream: Stream, child: Child, v2: bool) -> None:
        broken = False
        while True:
            if v2:
                kind, length = struct.unpack("<BI", await stream.read_exact(5))
                data = await stream.read_exact(length) if length else b""
            else:
                kind, data = SHELL_STDIN, await stream.read_some()
                if not data:
                    return
            if kind == SHELL_STDIN and data and not broken:
                try:
                    await child.write_stdin(data)
                except OSError:
                    broken = True  # the command closed its stdin: drop further input
            elif kind == SHELL_CLOSE_STDIN:
                child.close_stdin()
                broken = True

    # sync
    async def _sync(self, stream: Stream) -> None:
        while True:
            req, length = struct.unpack("<4sI", await stream.read_exact(8))
            if req == b"QUIT":
                return
            if length > SYNC_PATH_MAX:
                await self._sync_fail(stream, f"path too long ({length})")
                return
            path = (await stream.read_exact(length)).decode("utf-8", "surrogateescape")
            log.debug("sync %s %r", req, path)
            if req == b"STAT":
                await stream.send(self._stat_v1(path))
            elif req in (b"STA2", b"LST2"):
                await stream.send(self._stat_v2(req, path))
            elif req == b"LIST":
                await self._sync_list(stream, path)
            elif req == b"SEND":
                await self._sync_send(stream, path)
            elif req == b"RECV":
                await self._sync_recv(stream, path)
            else:
                await self._sync_fail(stream, f"unknown sync request {req!r}")
                return

    @staticmethod
    async def _sync_fail(stream: Stream, message: str) -> None:
        data = message.encode()
        await stream.send(b"FAIL" + struct.pack("<I", len(data)) + data)

    @staticmethod
    def _stat_v1(path: str) -> bytes:
        try:
            st = os.lstat(path)
        except OSError:
            return b"STAT" + bytes(12)
        m = 0xFFFFFFFF
        return b"STAT" + struct.pack("<III", st.st_mode & m, st.st_size & m, int(st.st_mtime) & m)

    @staticmethod
    def _stat_v2(req: bytes, path: str) -> bytes:
        try:
            st = os.lstat(path) if req == b"LST2" else os.stat(path)
        except OSError as e:
            return req + struct.pack("<I", e.errno or 1) + bytes(64)
        return req + struct.pack(
            "<IQQIIIIQqqq",
            0,
            st.st_dev,
            st.st_ino,
            st.st_mode,
            st.st_nlink,
            st.st_uid,
            st.st_gid,
            st.st_size,
            int(st.st_atime),
            int(st.st_mtime),
            int(st.st_ctime),
        )

    @staticmethod
    async def _sync_list(stream: Stream, path: str) -> None:
        try:
            names = [".", ".."] + sorted(os.listdir(path))
        except OSError:
            names = []
        batch = bytearray()
        limit = stream.conn.max_payload
        m = 0xFFFFFFFF
        for name in names:
            try:
                st = os.lstat(os.path.join(path, name))
            except OSError:
                continue
            raw = name.encode("utf-8", "surrogateescape")
            dent = b"DENT" + struct.pack(
                "<IIII", st.st_mode & m, st.st_size & m, int(st.st_mtime) & m, len(raw)
            )
            dent += raw
            if len(batch) + len(dent) > limit:  # never split an entry across WRTEs
                await stream.send(bytes(batch))
                batch.clear()
            batch += dent
        batch += b"DONE" + bytes(16)
        await stream.send(bytes(batch))

    async def _sync_send(self, stream: Stream, spec: str) -> None:
        path, comma, mode_text = spec.rpartition(",")
        if not comma:
            path, mode_text = spec, str(stat.S_IFREG | 0o644)
        error = None
        fd = -1
        link_target = bytearray()
        try:
            mode = int(mode_text)
        except ValueError:
            mode, error = 0, f"bad mode in {spec!r}"
        is_link = stat.S_ISLNK(mode)
        if error is None:
            try:
                parent = os.path.dirname(path)
                if parent:
                    os.makedirs(parent, exist_ok=True)
                if os.path.lexists(path) and not os.path.isdir(path):
                    os.unlink(path)
                if not is_link:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                    fd = os.open(path, flags, mode & 0o777)
                    os.fchmod(fd, mode & 0o777)
            except OSError as e:
                error = f"couldn't create file: {e.strerror}"
        try:
            while True:
                kind, size = struct.unpack("<4sI", await stream.read_exact(8))
                if kind == b"DONE":
                    mtime = size
                    break
                if kind != b"DATA":
                    await self._sync_fail(stream, f"invalid data message {kind!r}")
                    raise StreamClosed()
                data = await stream.read_exact(size)
                if error is not None:
                    continue  # keep reading until DONE, then report the error
                if is_link:
                    link_target += data
                    continue
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                except OSError as e:
                    error = f"write failed: {e.strerror}"
        finally:
            if fd >= 0:
                os.close(fd)
        if error is None:
            try:
                if is_link:
                    os.symlink(bytes(link_target).rstrip(b"\0").decode(), path)
                else:
                    os.utime(path, (mtime, mtime))
            except OSError as e:
                error = f"couldn't finish {path}: {e.strerror}"
        if error is not None:
            await self._sync_fail(stream, error)
        else:
            await stream.send(b"OKAY" + bytes(4))

    async def _sync_recv(self, stream: Stream, path: str) -> None:
        try:
            f = open(path, "rb")
        except OSError as e:
            await self._sync_fail(stream, f"open failed: {e.strerror}")
            return
        # DATA messages (<= 64 KiB each) are batched into WRTEs of up to max_payload bytes.
        batch = bytearray()
        with f:
            while True:
                try:
                    data = f.read(SYNC_DATA_MAX)
                except OSError as e:
                    await stream.send(bytes(batch))
                    await self._sync_fail(stream, f"read failed: {e.strerror}")
                    return
                if not data:
                    break
                if batch and len(batch) + 8 + len(data) > stream.conn.max_payload:
                    await stream.send(bytes(batch))
                    batch.clear()
                batch += b"DATA" + struct.pack("<I", len(data)) + data
        await stream.send(bytes(batch + b"DONE" + bytes(4)))

    # server
    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, ready=None, stop: asyncio.Event | None = None
    ) -> None:
        """Accept adb servers on ``host:port`` until ``stop`` is set; ``ready(port)`` once bound."""
        stop = stop or asyncio.Event()
        connections: set[asyncio.Task] = set()

        async def on_client(reader, writer):
            task = asyncio.current_task()
            connections.add(task)
            try:
                await Connection(self, reader, writer).run()
            except asyncio.CancelledError:
                pass  # peer shutting down; asyncio would log a cancelled client task
            finally:
                connections.discard(task)

        server = await asyncio.start_server(on_client, host, port)
        bound = server.sockets[0].getsockname()[1]
        log.info("listening on %s:%d props=%s", host, bound, self.props)
        if ready is not None:
            ready(bound)
        try:
            await stop.wait()
        finally:
            server.close()
            for task in list(connections):
                task.cancel()
            if connections:
                await asyncio.gather(*connections, return_exceptions=True)
            await server.wait_closed()


# --- running a peer ---------------------------------------------------------------------------


class PeerThread:
    """A peer served by an event loop in a daemon thread of this process."""

    def __init__(self, peer: Peer, host: str = "127.0.0.1", port: int = 0):
        self.peer = peer
        self.host = host
        self.port = port
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="adbd-peer", daemon=True)

    @property
    def serial(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> PeerThread:
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"adbd peer did not start: {self._error!r}")
        return self

    def _main(self) -> None:
        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.peer.serve(self.host, self.port, ready=self._on_ready, stop=self._stop)

        try:
            asyncio.run(main())
        except BaseException as e:  # reported by start()
            self._error = e
            self._ready.set()
        finally:
            self.peer.cleanup()

    def _on_ready(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> PeerThread:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def pdeathsig_preexec() -> None:
    """``preexec_fn``: the child gets SIGKILL when the thread that spawned it dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class PeerSubprocess:
    """A peer in a child process (``python adbd_peer.py``) that can be SIGKILLed ("unplug").

    The child gets PR_SET_PDEATHSIG=SIGKILL so it never outlives the process that started it.
    Linux sends that signal when the *thread* that spawned it exits: start peers from a
    thread that lives as long as they should (e.g. pytest's main thread).
    """

    def __init__(
        self,
        props: Mapping[str, str] | None = None,
        *,
        serial: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        features: tuple[str, ...] | None = None,
        kill_grace: float | None = None,
        verbose: bool = False,
    ):
        self.props = dict(props or {})
        self.host = host
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.workdir = tempfile.mkdtemp(prefix="adbd-peer-")
        self.log_path = os.path.join(self.workdir, "peer.log")
        props_path = os.path.join(self.workdir, "props.json")
        with open(props_path, "w", encoding="utf-8") as f:
            json.dump(self.props, f)
        self.argv = [sys.executable, os.path.abspath(__file__), "--host", host, "--port", str(port)]
        self.argv += ["--props", props_path, "--workdir", os.path.join(self.workdir, "peer")]
        if serial:
            self.argv += ["--serial", serial]
        if features is not None:
            self.argv += ["--features", ",".join(features)]
        if kill_grace is not None:
            self.argv += ["--kill-grace", str(kill_grace)]
        if verbose:
            self.argv.append("--verbose")

    @property
    def serial(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> PeerSubprocess:
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=logf,
                preexec_fn=pdeathsig_preexec,
            )
        deadline = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b""
        while b"\n" not in buf:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                log_text = self.log()
                self.stop()
                raise RuntimeError(f"adbd peer did not start; log:\n{log_text}")
            try:
                buf += os.read(self.proc.stdout.fileno(), 4096) or b""
            except BlockingIOError:
                time.sleep(0.01)
        self.proc.stdout.close()
        fields = buf.decode().split()
        if len(fields) < 3 or fields[0] != READY_PREFIX:
            self.stop()
            raise RuntimeError(f"unexpected peer output {buf!r}")
        self.port = int(fields[2])
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the peer (simulates pulling the cable); its commands die via PDEATHSIG."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (clean shutdown: running commands are killed), SIGKILL if it hangs."""
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc is not None:
            self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PeerSubprocess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_peer(
    props: Mapping[str, str] | None = None,
    *,
    serial: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    features: tuple[str, ...] | None = None,
    process: bool = False,
) -> PeerThread | PeerSubprocess:
    """Start a peer listening on ``host:port`` (0 = any free port) and return once it listens.

    ``process=False`` serves it from a thread of this process; ``process=True`` runs it as a
    separate process.  Either way ``.serial`` is ``"host:port"`` and ``.stop()`` shuts it down.
    """
    if process:
        return PeerSubprocess(props, serial=serial, host=host, port=port, features=features).start()
    peer = Peer(props, serial=serial, features=features or DEFAULT_FEATURES)
    return PeerThread(peer, host, port).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="listen port (default: any free port)")
    ap.add_argument("--props", help="properties file: JSON object or key=value lines")
    ap.add_argument("--prop", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--serial", help="ro.serialno")
    ap.add_argument("--features", default=",".join(DEFAULT_FEATURES))
    ap.add_argument("--workdir", help="directory for the getprop shim (default: a temp dir)")
    ap.add_argument("--kill-grace", type=float, default=2.0, help="SIGHUP->SIGKILL delay (s)")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s adbd_peer[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    props = load_props_file(args.props) if args.props else {}
    for item in args.prop:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--prop needs KEY=VALUE, got {item!r}")
        props[key] = value
    peer = Peer(
        props,
        serial=args.serial,
        features=tuple(f for f in args.features.split(",") if f),
        workdir=args.workdir,
        kill_grace=args.kill_grace,
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)

        def ready(port: int) -> None:
            print(f"{READY_PREFIX} {args.host} {port}", flush=True)

        await peer.serve(args.host, args.port, ready=ready, stop=stop)

    try:
        asyncio.run(run())
    finally:
        peer.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
