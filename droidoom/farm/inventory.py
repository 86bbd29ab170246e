"""Farm inventories (farm.toml): which adb servers, which devices, with what overrides.

An inventory names adb servers (one per lab host, reached over TCP through adb's own
client/server protocol) and, optionally, device selectors. `resolve()` asks every server
which devices it has, reads each device's properties in one `getprop` round trip, and
applies the selectors; the result is what `droidoom farm run` profiles and what
`droidoom devices --inventory` shows. See droidoom/farm_example.toml for the format.

Selection rules (kept small on purpose):

* no `[[devices]]` entry that includes anything: every device on every server;
* otherwise a device is taken when at least one include entry matches it and no
  `exclude = true` entry does; within one entry every given filter must match;
* settings of all matching entries merge in file order (later wins); a device is
  required when any matching entry says `required = true`;
* a required entry that matches no usable device (absent, offline, unauthorized, or its
  server unreachable) stops `farm run` before anything is profiled.

Names, one per concept, in the farm and adb code: a device's *serial* is adb's name for
it on one server (`Seen.serial`, `--serial`); its *label* is the farm's name for it,
unique across servers: the inventory's `name`, else the serial, else `serial@server`
when two servers report the same serial (`FarmDevice.label`, `Target.name` of its
FarmTarget). The label is what datasets call `device` (run.json "device", the `device`
column); farm.json keeps both ("label", "serial"). The file format is parsed in
inventory_file.py.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import DroidoomError, TargetError, UsageError
from ..targets.adbutils_seam import WIRE_ERRORS
from .inventory_file import (
    PROFILE_KEYS,
    Inventory,
    Selector,
    ServerEntry,
    check_profile,
    load_inventory,
    parse,
    parse_address,
)

if TYPE_CHECKING:
    from adbutils import AdbDevice

__all__ = [
    "PROFILE_KEYS", "FarmDevice", "Inventory", "Resolution", "Seen", "Selector", "ServerEntry",
    "ServerStatus", "check_profile", "load_inventory", "parse", "parse_address", "resolve",
    "select",
]  # fmt: skip


@dataclass(frozen=True)
class Seen:
    """A device one server reported, with its properties (empty unless state is device)."""

    server: ServerEntry
    serial: str
    state: str  # adb state: device, offline, unauthorized, ... or "error"
    props: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None  # why props could not be read

    @property
    def model(self) -> str:
        return self.props.get("ro.product.model", "")

    @property
    def usable(self) -> bool:
        return self.state == "device" and self.error is None


@dataclass(frozen=True)
class FarmDevice:
    """A selected device and everything the farm applies to it."""

    seen: Seen
    label: str  # its name in the dataset (the `device` column): serial unless renamed
    required: bool = False
    workdir: str | None = None
    profile: Mapping[str, Any] = field(default_factory=dict)  # merged ProfileSpec overrides
    matched: tuple[int, ...] = ()  # selector indices that matched

    @property
    def serial(self) -> str:
        return self.seen.serial

    @property
    def server(self) -> ServerEntry:
        return self.seen.server


@dataclass(frozen=True)
class ServerStatus:
    entry: ServerEntry
    error: str | None = None  # None = reachable

    @property
    def reachable(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Resolution:
    """What an inventory resolves to right now."""

    inventory: Inventory
    servers: tuple[ServerStatus, ...]
    seen: tuple[Seen, ...]  # every device every reachable server reported
    devices: tuple[FarmDevice, ...]  # the selected ones, usable or not
    missing: tuple[str, ...] = ()  # required selectors that matched no usable device


def _getprops(device: AdbDevice) -> dict[str, str]:
    # One round trip: `getprop` lists "[key]: [value]" lines.
    out = device.shell2("getprop", timeout=20, v2=True)
    if out.returncode != 0:
        raise TargetError(f"getprop exited with {out.returncode}: {out.stderr.strip()[:120]}")
    found = (re.match(r"\[([^\]]+)\]: \[(.*)\]\s*$", line) for line in out.stdout.splitlines())
    return {m.group(1): m.group(2) for m in found if m}


def _survey(entry: ServerEntry) -> tuple[ServerStatus, list[Seen]]:
    from ..targets.adb import client, list_devices  # never starts a server

    if not entry.server.listening(timeout=3.0):
        return ServerStatus(entry, f"no adb server listens at {entry.server}"), []
    try:
        found = list_devices(entry.server)
    except TargetError as e:
        return ServerStatus(entry, str(e)), []

    def one(item: tuple[str, str]) -> Seen:
        serial, state = item
        if state != "device":
            return Seen(entry, serial, state)
        try:
            return Seen(entry, serial, state, _getprops(client(entry.server).device(serial)))
        except (DroidoomError, *WIRE_ERRORS) as e:
            return Seen(entry, serial, state, error=f"cannot read properties: {e}")

    with ThreadPoolExecutor(max_workers=16) as pool:
        return ServerStatus(entry), list(pool.map(one, found))


def _matches(sel: Selector, seen: Seen, inv: Inventory) -> bool:
    if sel.server and inv.server_named(sel.server) != seen.server:
        return False
    if sel.serial and not any(fnmatch.fnmatchcase(seen.serial, g) for g in sel.serial):
        return False
    if (sel.model or sel.props) and not seen.props:
        return False  # unreadable device: only serial/server filters can match it
    if sel.model and not any(fnmatch.fnmatchcase(seen.model, g) for g in sel.model):
        return False
    return all(fnmatch.fnmatchcase(seen.props.get(k, ""), g) for k, g in sel.props.items())


def select(
    inv: Inventory, servers: Sequence[ServerStatus], seen: Sequence[Seen]
) -> Resolution:
    """Apply the inventory's selectors to what the servers reported."""
    includes = [s for s in inv.selectors if not s.exclude]
    excludes = [s for s in inv.selectors if s.exclude]
    chosen: list[tuple[Seen, list[Selector]]] = []
    for dev in seen:
        hits = [s for s in includes if _matches(s, dev, inv)]
        if (hits or not includes) and not any(_matches(s, dev, inv) for s in excludes):
            chosen.append((dev, hits))
    devices = []
    for dev, hits in chosen:
        merged: dict[str, Any] = {"profile": {}}
        for s in hits:
            merged.update({k: getattr(s, k) for k in ("name", "workdir") if getattr(s, k)})
            merged["profile"] = {**merged["profile"], **s.profile}
        devices.append(
            FarmDevice(
                seen=dev,
                label=merged.get("name") or dev.serial,
                required=any(s.required for s in hits),
                workdir=merged.get("workdir"),
                profile=merged["profile"],
                matched=tuple(s.index for s in hits),
            )
        )
    devices = _unique_labels(devices)
    missing = []
    for sel in includes:
        if sel.required and not any(sel.index in d.matched and d.seen.usable for d in devices):
            found = [d for d in devices if sel.index in d.matched]
            why = "; ".join(f"{d.serial} is {d.seen.error or d.seen.state}" for d in found)
            down = [s.entry.name for s in servers if not s.reachable]
            why = why or (f"unreachable: {', '.join(down)}" if down else "no device matches")
            missing.append(f"required {sel.describe()}: {why}")
    return Resolution(inv, tuple(servers), tuple(seen), tuple(devices), tuple(missing))


def _unique_labels(devices: list[FarmDevice]) -> list[FarmDevice]:
    """Same serial on two servers (e.g. two labs' 127.0.0.1:5555): add the server name."""
    labels = [d.label for d in devices]
    out = []
    for d, label in zip(devices, labels, strict=True):
        if labels.count(label) > 1 and label == d.serial:
            d = replace(d, label=f"{d.serial}@{d.server.name}")
        out.append(d)
    final = [d.label for d in out]
    dup = next((x for x in final if final.count(x) > 1), None)
    if dup:
        raise UsageError(
            f"device name {dup!r} is given to several devices: a `name` in [[devices]] must "
            "match one device only (narrow its serial/server filters)"
        )
    return out


def resolve(inv: Inventory) -> Resolution:
    """Ask every server (in parallel) what it has and apply the selectors."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(inv.servers)))) as pool:
        surveys = list(pool.map(_survey, inv.servers))
    servers = [s for s, _ in surveys]
    seen = [d for _, found in surveys for d in found]
    return select(inv, servers, seen)
