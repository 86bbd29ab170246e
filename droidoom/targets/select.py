"""Choosing a target from CLI options: --local, --serial, or whatever is attached."""

from __future__ import annotations

import os

from ..errors import PermanentTargetError, UsageError
from .adb_server import SERVER_ENV, AdbServer, parse_socket_spec
from .base import Target
from .local import LocalTarget

__all__ = ["SERVER_ENV", "AdbServer", "parse_socket_spec", "select_target"]

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
