"""adb plumbing for AdbTarget: a client that never starts a server, error translation,
and the streamed shell process (shell v2 exit packet, or a sentinel line on v1).

adbutils would run `adb start-server` (port 5037, USB scan, mDNS on the network) when
its server is unreachable; the client here fails instead. Every call has a timeout.
"""

from __future__ import annotations

import shlex
import socket
import threading
from collections.abc import Callable

import adbutils
from adbutils.errors import AdbConnectionError, AdbError, AdbTimeout

from ..errors import PermanentTargetError, TargetError, TransientTargetError
from .adb_server import AdbServer
from .adbutils_seam import WIRE_ERRORS, NoSpawnConnection, device_state, server_unreachable
from .base import QueuedProcess

#: Socket timeout of adb server calls that have no timeout of their own (push, pull,
#: host queries); a stalled device or server ends in an error, never a hang.
CALL_TIMEOUT = 30.0
SENTINEL = "__droidoom_exit="
_STDIN, _STDOUT, _STDERR, _EXIT, _CLOSE_STDIN = 0, 1, 2, 3, 4  # shell v2 packet ids
__all__ = ["WIRE_ERRORS", "AdbClient", "AdbProcess", "client", "list_devices", "translate"]


def v1_command(script: str) -> str:
    """A shell v1 command line that ends with a sentinel line carrying the exit code."""
    return f"sh -c {shlex.quote(script)}; r=$?; echo; echo {SENTINEL}$r"


class AdbClient(adbutils.AdbClient):  # type: ignore[misc]  # adbutils ships no types
    """adbutils client that never starts a server and asks its version only once."""

    def __init__(self, server: AdbServer, timeout: float | None = None):
        timeout = timeout or CALL_TIMEOUT
        super().__init__(host=server.host, port=server.port, socket_timeout=timeout)
        self.server = server
        self._default_timeout = timeout
        self._version: int | None = None

    def make_connection(self, timeout: float | None = None) -> adbutils.AdbConnection:
        try:
            c = NoSpawnConnection(self.host, self.port)
        except TimeoutError as e:
            raise AdbConnectionError(f"connect to adb server timed out: {e}") from e
        c.conn.settimeout(timeout or self._default_timeout)
        return c

    def server_version(self) -> int:
        # adbutils asks before every device connection; one answer per client is enough.
        if self._version is None:
            self._version = super().server_version()
        return self._version


def client(server: AdbServer) -> AdbClient:
    """A client for `server`; raises TransientTargetError if no server listens there."""
    return AdbClient(server.require_up())


def list_devices(server: AdbServer) -> list[tuple[str, str]]:
    """(serial, state) of every device the server knows, e.g. ("R58M", "device")."""
    try:
        return [(i.serial, i.state) for i in client(server).list()]
    except WIRE_ERRORS as e:
        raise TransientTargetError(f"adb server {server} did not answer: {e}") from e


def translate(e: BaseException, name: str, server: AdbServer) -> TargetError:
    """The droidoom error for adbutils' `e` on device `name`: by type where adbutils
    gives one, else by what the server said (see adbutils_seam.device_state)."""
    text = str(e).strip() or type(e).__name__
    if server_unreachable(e):
        return TransientTargetError(f"{name}: the adb server at {server} went away ({text})")
    state = device_state(e)
    if state == "unauthorized":
        return PermanentTargetError(
            f"{name}: unauthorized; accept the USB debugging prompt on the phone, then retry"
        )
    if state == "gone":
        return PermanentTargetError(
            f"{name}: not attached to the adb server at {server}; see `droidoom devices` "
            "(for a TCP device: `adb connect HOST:PORT`)"
        )
    if isinstance(e, AdbTimeout):
        return TransientTargetError(f"{name}: no answer in time ({text}); device stalled?")
    return TransientTargetError(f"{name}: connection lost ({text})")


class AdbProcess(QueuedProcess):
    """A streamed shell command: stdout lines via a reader thread, exit code from the
    shell v2 exit packet (or the sentinel line on v1 devices)."""

    def __init__(
        self, conn: adbutils.AdbConnection, name: str, v2: bool, why_ended: Callable[[bool], str]
    ):
        super().__init__()
        self._conn = conn
        self._name = name
        self._v2 = v2
        self._why_ended = why_ended
        self._rc: int | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                if self._v2:
                    header = self._conn.read_exact(5)
                    kind, n = header[0], int.from_bytes(header[1:5], "little")
                    data = self._conn.read_exact(n) if n else b""
                else:
                    kind, data = _STDOUT, self._conn.conn.recv(65536)
                    if not data:
                        raise EOFError("stream closed")
                if kind == _STDOUT:
                    *lines, buf = (buf + data).split(b"\n")
                    for line in (raw.decode(errors="replace") for raw in lines):
                        if not self._v2 and line.startswith(SENTINEL):
                            self._rc = int(line[len(SENTINEL) :] or 255)
                        else:
                            self._q.put(line)
                    if self._rc is not None:
                        break
                elif kind == _STDERR:
                    err = data.decode(errors="replace").splitlines()
                    self.stderr_tail = (self.stderr_tail + err)[-20:]
                elif kind == _EXIT:
                    self._rc = data[0] if data else 255
                    break
        except WIRE_ERRORS as e:
            self._q.put(e)
        if buf:
            self._q.put(buf.decode(errors="replace"))
        self._q.put(None)

    def _stalled(self, timeout: float) -> str:
        return f"{self._name}: no output for {timeout:.0f} s; {self._why_ended(True)}"

    def _broken(self, exc: BaseException) -> str:
        return f"{self._name}: {self._why_ended(False)} ({exc or type(exc).__name__})"

    def close(self, grace: float = 5.0) -> int | None:
        sock = None
        try:
            sock = self._conn.conn
        except AdbError:  # already closed
            pass
        if sock is not None and self._rc is None:
            try:  # stdin EOF: the helper tears down, flushes its records and exits
                sock.settimeout(grace)
                if self._v2:
                    sock.sendall(bytes([_CLOSE_STDIN]) + (0).to_bytes(4, "little"))
                else:  # v1 has no half-close: closing the stream hangs the command up
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._thread.join(grace)
        if sock is not None:
            try:  # wakes the reader; adbd then kills the command if it is still there
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._conn.close()
        self._thread.join(2.0)
        return self._rc

    @property
    def returncode(self) -> int | None:
        return self._rc
