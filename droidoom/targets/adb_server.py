"""Where the adb server listens: `AdbServer` from options and the environment, as the
adb client itself reads them. Beside the connection code (adb_conn.py) and below target
selection (select.py), so neither imports the other to reach it."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from ..errors import DroidoomError, TransientTargetError, UsageError

#: The adb client's own variables, in its order of precedence (packages/modules/adb
#: client/main.cpp / commandline.cpp): -L/-H/-P, then ADB_SERVER_SOCKET (tcp:[host:]port),
#: then ANDROID_ADB_SERVER_ADDRESS + ANDROID_ADB_SERVER_PORT. adbutils' own
#: ANDROID_ADB_SERVER_HOST is honoured too (after ANDROID_ADB_SERVER_ADDRESS).
SERVER_ENV = (
    "ADB_SERVER_SOCKET",
    "ANDROID_ADB_SERVER_ADDRESS",
    "ANDROID_ADB_SERVER_HOST",
    "ANDROID_ADB_SERVER_PORT",
)


@dataclass(frozen=True)
class AdbServer:
    """Where the adb server listens (default 127.0.0.1:5037).

    `explicit` is True when the user named the server (an option or one of SERVER_ENV):
    then an unreachable server is an error, never a reason to profile this host instead.
    """

    host: str = "127.0.0.1"
    port: int = 5037
    explicit: bool = field(default=False, compare=False)

    @classmethod
    def from_env(cls, host: str | None = None, port: int | None = None) -> AdbServer:
        """The server from --adb-host/--adb-port, else the environment as adb reads it."""
        env = os.environ
        if host is None and port is None and env.get("ADB_SERVER_SOCKET"):
            h, p = parse_socket_spec(env["ADB_SERVER_SOCKET"], "ADB_SERVER_SOCKET")
            return cls(h, p, explicit=True)
        host = host or env.get("ANDROID_ADB_SERVER_ADDRESS") or env.get("ANDROID_ADB_SERVER_HOST")
        explicit = bool(host) or port is not None or bool(env.get("ANDROID_ADB_SERVER_PORT"))
        if port is None:
            port = _port(env.get("ANDROID_ADB_SERVER_PORT") or "5037", "ANDROID_ADB_SERVER_PORT")
        elif not 0 < port < 65536:
            raise UsageError(f"--adb-port must be 1..65535 (got {port})")
        return cls(host or "127.0.0.1", port, explicit=explicit)

    def listening(self, timeout: float = 0.5) -> bool:
        """Is a server already up? We never start one implicitly: adbutils would, and a
        fresh adb server scans USB and multicasts mDNS on the network."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                return True
        except OSError:
            return False

    def require_up(self, error: type[DroidoomError] = TransientTargetError) -> AdbServer:
        """This server if one listens, else `error` saying how to get one: the one check
        for commands that need a server (none is ever started for them, see `listening`)."""
        if not self.listening():
            raise error(
                f"no adb server at {self}: start one with `adb start-server`, or point "
                "--adb-host/--adb-port (ANDROID_ADB_SERVER_HOST/PORT) at a running server"
            )
        return self

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _port(text: str, what: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise UsageError(f"{what} must be a port number 1..65535 (got {text!r})")
    return port


def parse_socket_spec(spec: str, what: str = "the adb server socket") -> tuple[str, int]:
    """(host, port) of an adb socket spec `tcp:PORT`, `tcp:HOST:PORT` or `tcp:[V6]:PORT`.

    adb also accepts local sockets (localabstract:, localfilesystem:); droidoom speaks
    to the server over TCP only, so those are refused with a clear message.
    """
    if not spec.startswith("tcp:"):
        raise UsageError(
            f"{what}={spec!r}: droidoom reaches the adb server over TCP only; use "
            "tcp:PORT or tcp:HOST:PORT"
        )
    rest = spec[4:]
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = "", rest
    host = host.strip("[]") or "127.0.0.1"
    return host, _port(port, what)


def reach_adb(serial: str, server: str = "") -> list[str]:
    """The `droidoom` options reaching device `serial` (on the adb server "HOST:PORT"
    when given, else the default one)."""
    host, _, port = server.rpartition(":")
    host = host.strip("[]")
    where = ["--adb-host", host, "--adb-port", port] if host and port else []
    return ["--serial", serial, *where]
