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
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from adbutils.errors import AdbError

from .errors import DroidoomError, TargetError, UsageError
from .spec import ProfileSpec
from .targets.adb_server import AdbServer

#: ProfileSpec fields an inventory may set (farm-wide `[profile]` or per device).
PROFILE_KEYS = tuple(ProfileSpec.__dataclass_fields__)
_TOP_KEYS = {"name", "servers", "devices", "profile", "concurrency", "retries", "backoff"}
_DEVICE_KEYS = {"serial", "model", "props", "server", "required", "exclude", "name"}
_DEVICE_KEYS |= {"workdir", "profile"}


# --------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class ServerEntry:
    """One adb server of the farm."""

    server: AdbServer  # where it listens (a lab host's `adb -a nodaemon server`)
    name: str  # short label used by selectors and in tables; default "host:port"


@dataclass(frozen=True)
class Selector:
    """One `[[devices]]` entry: filters, and what to apply to the devices it matches."""

    index: int  # 1-based position in the file, for messages
    serial: tuple[str, ...] = ()  # fnmatch globs on the adb serial (any may match)
    model: tuple[str, ...] = ()  # globs on ro.product.model (any may match)
    props: Mapping[str, str] = field(default_factory=dict)  # property -> glob (all must match)
    server: str | None = None  # server name or host:port; None = any server
    required: bool = False  # farm refuses to start when this matches no usable device
    exclude: bool = False  # drop what this matches
    name: str | None = None  # label of the device in the dataset (one device only)
    workdir: str | None = None  # on-device working directory
    profile: Mapping = field(default_factory=dict)  # ProfileSpec overrides

    def describe(self) -> str:
        parts = [f"serial={'|'.join(self.serial)}"] if self.serial else []
        parts += [f"model={'|'.join(self.model)}"] if self.model else []
        parts += [f"{k}={v}" for k, v in self.props.items()]
        parts += [f"server={self.server}"] if self.server else []
        return f"[[devices]] #{self.index} ({', '.join(parts) or 'any device'})"


@dataclass(frozen=True)
class Inventory:
    """A parsed farm.toml."""

    name: str  # inventory name, recorded in every run (run.json "inventory_name")
    servers: tuple[ServerEntry, ...]
    selectors: tuple[Selector, ...] = ()
    profile: Mapping = field(default_factory=dict)  # farm-wide ProfileSpec overrides
    concurrency: int | None = None  # devices profiled at once; None = CLI default
    retries: int | None = None  # retries of a device after a transient adb error
    backoff: float | None = None  # first retry delay in s (doubles each retry)
    path: Path | None = None
    raw: Mapping = field(default_factory=dict)  # the file as parsed, kept in farm.json

    @classmethod
    def single_server(cls, server: AdbServer) -> Inventory:
        """Every device on one server (`droidoom profile --all`)."""
        entry = ServerEntry(server, str(server))
        return cls(name=f"all@{server}", servers=(entry,), raw={"servers": [str(server)]})

    def server_named(self, ref: str) -> ServerEntry | None:
        return next((s for s in self.servers if ref in (s.name, str(s.server))), None)


def _err(where: str, what: str) -> UsageError:
    return UsageError(f"{where}: {what}")


def _strs(value, where: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _err(where, f'`{key}` takes a string or a list of strings, e.g. {key} = "R5C*"')


def parse_address(text: str, where: str = "inventory") -> AdbServer:
    """ "host:port" (or "host", port 5037; "[v6]:port") -> AdbServer."""
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\s]+)(?::(\d+))?", text.strip())
    if not m:
        raise _err(where, f"bad adb server address {text!r}: use host:port, e.g. 10.0.0.5:5037")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4) or 5037)
    if not 0 < port < 65536:
        raise _err(where, f"bad port in {text!r}: use 1..65535")
    return AdbServer(host, port)


def check_profile(overrides, where: str) -> dict:
    """Validate ProfileSpec overrides from TOML (lists become tuples); UsageError if bad."""
    if not isinstance(overrides, dict):
        raise _err(where, "`profile` must be a table, e.g. profile = { writes = 400 }")
    bad = sorted(set(overrides) - set(PROFILE_KEYS))
    if bad:
        raise _err(where, f"unknown profile setting {bad[0]!r}: use {', '.join(PROFILE_KEYS)}")
    out = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    try:
        replace(ProfileSpec(), **out).validate()
    except UsageError as e:
        raise _err(where, str(e)) from None
    except TypeError as e:
        raise _err(where, f"bad profile value: {e}") from None
    return out


def _server(item, i: int, where: str) -> ServerEntry:
    here = f"{where}: servers #{i}"
    if isinstance(item, str):
        server = parse_address(item, here)
        return ServerEntry(server, str(server))
    if isinstance(item, dict) and isinstance(item.get("address"), str):
        unknown = sorted(set(item) - {"address", "name"})
        if unknown:
            raise _err(here, f"unknown key {unknown[0]!r}: a server has `address` and `name`")
        server = parse_address(item["address"], here)
        return ServerEntry(server, str(item.get("name") or server))
    raise _err(here, 'give "host:port" or { address = "host:port", name = "rack1" }')


def _selector(item, i: int, where: str) -> Selector:
    here = f"{where}: [[devices]] #{i}"
    if not isinstance(item, dict):
        raise _err(here, "each [[devices]] entry must be a table")
    unknown = sorted(set(item) - _DEVICE_KEYS)
    if unknown:
        raise _err(here, f"unknown key {unknown[0]!r}: use {', '.join(sorted(_DEVICE_KEYS))}")
    props = item.get("props", {})
    if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
        raise _err(here, '`props` maps property names to globs, e.g. { "ro.build.type" = "user*" }')
    for key in ("required", "exclude"):
        if not isinstance(item.get(key, False), bool):
            raise _err(here, f"`{key}` takes true or false")
    for key in ("name", "workdir", "server"):
        if key in item and not isinstance(item[key], str):
            raise _err(here, f"`{key}` takes a string")
    sel = Selector(
        index=i,
        serial=_strs(item["serial"], here, "serial") if "serial" in item else (),
        model=_strs(item["model"], here, "model") if "model" in item else (),
        props=dict(props),
        server=item.get("server"),
        required=item.get("required", False),
        exclude=item.get("exclude", False),
        name=item.get("name"),
        workdir=item.get("workdir"),
        profile=check_profile(item.get("profile", {}), here),
    )
    if sel.exclude and (sel.required or sel.name or sel.workdir or sel.profile):
        raise _err(here, "an `exclude = true` entry takes only filters (serial, model, ...)")
    if sel.workdir and not sel.workdir.startswith("/"):
        raise _err(here, f"`workdir` must be an absolute path on the device (got {sel.workdir!r})")
    return sel


def parse(data: Mapping, *, where: str = "inventory", path: Path | None = None) -> Inventory:
    """Build an Inventory from parsed TOML; UsageError naming the bad key otherwise."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise _err(where, f"unknown key {unknown[0]!r}: use {', '.join(sorted(_TOP_KEYS))}")
    servers = data.get("servers")
    if isinstance(servers, (str, dict)):
        servers = [servers]
    if not servers or not isinstance(servers, list):
        raise _err(where, 'list the adb servers, e.g. servers = ["10.0.0.5:5037"]')
    entries = tuple(_server(s, i, where) for i, s in enumerate(servers, 1))
    for key in ("name", "address"):
        seen = [e.name if key == "name" else str(e.server) for e in entries]
        dup = next((x for x in seen if seen.count(x) > 1), None)
        if dup:
            raise _err(where, f"server {key} {dup!r} is listed twice")
    devices = data.get("devices", [])
    if not isinstance(devices, list):
        raise _err(where, "`devices` must be an array of tables: write [[devices]] blocks")
    selectors = tuple(_selector(d, i, where) for i, d in enumerate(devices, 1))
    inv = Inventory(
        name=str(data.get("name") or (path.stem if path else "farm")),
        servers=entries,
        selectors=selectors,
        profile=check_profile(data.get("profile", {}), f"{where}: [profile]"),
        concurrency=_positive(data, "concurrency", int, where),
        retries=_positive(data, "retries", int, where, zero_ok=True),
        backoff=_positive(data, "backoff", (int, float), where, zero_ok=True),
        path=path,
        raw=dict(data),
    )
    for sel in selectors:
        if sel.server and inv.server_named(sel.server) is None:
            raise _err(
                f"{where}: [[devices]] #{sel.index}",
                f"server {sel.server!r} is not in `servers` "
                f"(have {', '.join(s.name for s in entries)})",
            )
    return inv


def _positive(data, key, types, where, zero_ok=False):
    if key not in data:
        return None
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, types) or v < 0 or (v == 0 and not zero_ok):
        raise _err(where, f"`{key}` takes a {'non-negative' if zero_ok else 'positive'} number")
    return v


def load_inventory(path: str | Path) -> Inventory:
    """Read and check a farm.toml; UsageError with the file name and the problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"inventory {path} does not exist") from None
    except OSError as e:
        raise UsageError(f"cannot read inventory {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not valid TOML: {e}") from None
    return parse(data, where=str(path), path=path)


# --------------------------------------------------------------------------- resolving


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
    profile: Mapping = field(default_factory=dict)  # merged ProfileSpec overrides
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


def _getprops(device) -> dict[str, str]:
    # One round trip: `getprop` lists "[key]: [value]" lines.
    out = device.shell2("getprop", timeout=20, v2=True)
    if out.returncode != 0:
        raise AdbError(f"getprop exited with {out.returncode}: {out.stderr.strip()[:120]}")
    found = (re.match(r"\[([^\]]+)\]: \[(.*)\]\s*$", line) for line in out.stdout.splitlines())
    return {m.group(1): m.group(2) for m in found if m}


def _survey(entry: ServerEntry) -> tuple[ServerStatus, list[Seen]]:
    from .targets.adb import client, list_devices  # never starts a server

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
        except (DroidoomError, AdbError, OSError, EOFError) as e:
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


def select(inv: Inventory, servers, seen) -> Resolution:
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
        merged: dict = {"profile": {}}
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
