"""Choosing a target from CLI options: --local, --serial, or whatever is attached."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from ..errors import DroidoomError, PermanentTargetError, TransientTargetError, UsageError
from .base import Target
from .local import LocalTarget

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


def select_target(
    *,
    local: bool = False,
    serial: str | None = None,
    server: AdbServer | None = None,
) -> tuple[Target, str | None]:
    """Return (target, notice). Notice is a one-line explanation of an implicit choice."""
    if local and serial:
        raise UsageError("--local and --serial exclude each other: pick one target")
    if local:
        return LocalTarget(), None
    server = server or AdbServer.from_env()
    serial = serial or os.environ.get("ANDROID_SERIAL") or None
    if serial is None and not server.listening():
        if server.explicit:  # the user aimed at a server: measuring this host would lie
            raise PermanentTargetError(
                f"no adb server answers at {server} (named by {_named_by()}): start it, "
                "fix the address, or pass --local to profile this host"
            )
        return LocalTarget(), f"no adb server at {server}; profiling this host (--local)"
    from .adb import AdbTarget, list_devices

    if serial is None:
        devices = list_devices(server)
        serials = [s for s, state in devices if state == "device"]
        if not devices and server.explicit:
            raise PermanentTargetError(
                f"the adb server at {server} (named by {_named_by()}) has no device: plug "
                "one in / `adb connect HOST:PORT`, or pass --local to profile this host"
            )
        if not devices:
            return LocalTarget(), "no phone attached; profiling this host (--local)"
        if not serials:  # a phone is there but unusable: say so rather than profile the host
            listed = ", ".join(f"{s} ({state})" for s, state in devices)
            raise PermanentTargetError(
                f"no usable device on the adb server at {server}: {listed}. Accept the USB "
                "debugging prompt / reconnect it, or pass --local to profile this host"
            )
        if len(serials) > 1:
            raise UsageError(
                f"{len(serials)} devices attached ({', '.join(serials)}): choose one with "
                "--serial, or use --all / `droidoom farm run`"
            )
        serial = serials[0]
    return AdbTarget(serial, server=server), None


def _named_by() -> str:
    named = [v for v in SERVER_ENV if os.environ.get(v)]
    return "--adb-host/--adb-port" + (f" or ${', $'.join(named)}" if named else "")
