"""Choosing a target from CLI options: --local, --serial, or whatever is attached."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from ..errors import PermanentTargetError, UsageError
from .base import Target
from .local import LocalTarget


@dataclass(frozen=True)
class AdbServer:
    """Where the adb server listens (ANDROID_ADB_SERVER_HOST/PORT, default 127.0.0.1:5037)."""

    host: str = "127.0.0.1"
    port: int = 5037

    @classmethod
    def from_env(cls, host: str | None = None, port: int | None = None) -> AdbServer:
        return cls(
            host or os.environ.get("ANDROID_ADB_SERVER_HOST") or "127.0.0.1",
            int(port or os.environ.get("ANDROID_ADB_SERVER_PORT") or 5037),
        )

    def listening(self, timeout: float = 0.5) -> bool:
        """Is a server already up? We never start one implicitly: adbutils would, and a
        fresh adb server scans USB and multicasts mDNS on the network."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                return True
        except OSError:
            return False

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


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
        return LocalTarget(), f"no adb server at {server}; profiling this host (--local)"
    from .adb import AdbTarget, list_devices

    if serial is None:
        devices = list_devices(server)
        serials = [s for s, state in devices if state == "device"]
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
