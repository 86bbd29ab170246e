"""Choosing a target from CLI options: --local, --serial, or whatever is attached; and
the one place that maps a recorded run (its run.json) back to the target it ran on."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PermanentTargetError, UsageError
from .adb_server import SERVER_ENV, AdbServer, parse_socket_spec, reach_adb
from .base import Target, recover_command
from .local import LocalTarget

if TYPE_CHECKING:
    from .adb import AdbTarget

__all__ = [
    "SERVER_ENV", "AdbServer", "parse_socket_spec", "recorded_in_vm", "recorded_reach",
    "recover_hint", "select_device", "select_target",
]  # fmt: skip

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


def select_device(serial: str | None, server: AdbServer) -> AdbTarget:
    """The phone named by `serial` (or the single one attached to `server`); UsageError
    when select_target would fall back to this host."""
    from .adb import AdbTarget

    target, _ = select_target(serial=serial, server=server)
    if isinstance(target, AdbTarget):
        return target
    target.close()
    raise UsageError(f"no device attached to the adb server at {server}; plug one in or "
                     "`adb connect HOST:PORT`")  # fmt: skip


# --- recorded runs: run.json["target"]["transport"] back to a target ---------------------


def _section(meta: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = meta.get(key)
    return value if isinstance(value, Mapping) else {}


def _transport(meta: Mapping[str, Any]) -> str:
    return str(_section(meta, "target").get("transport") or "")


def recorded_reach(meta: Mapping[str, Any]) -> list[str] | None:
    """The `droidoom` options that reach again the target a recorded run (run.json) ran
    on, as its Target.reach_again() said; None for a QEMU guest (it ended with its run)
    or a transport this version does not know."""
    how = _transport(meta)
    if how == "local":
        return ["--local"]
    if how == "adb":
        farm = _section(meta, "farm")  # farm runs name the device by label
        serial = farm.get("serial") or meta.get("device")
        return reach_adb(str(serial), str(farm.get("server_address") or ""))
    return None


def recover_hint(meta: Mapping[str, Any], run_dir: Path) -> str | None:
    """The `droidoom recover` command that brings home what a cut-short run left, with the
    real path filled in, for the target run.json says it ran on; None when nothing can be
    (a QEMU guest's records lived in its memory and ended with it)."""
    return recover_command(recorded_reach(meta), run_dir)


def recorded_in_vm(meta: Mapping[str, Any]) -> bool:
    """The recorded run ran in a QEMU guest (`profile --kernel`)."""
    return _transport(meta) == "qemu"
