"""Farm inventory files (farm.toml): parsing and checking them into an `Inventory`.

An inventory names adb servers (`[[servers]]`, one per lab host), device selectors
(`[[devices]]`) and farm-wide settings; see droidoom/farm_example.toml for the format
and droidoom/farm/inventory.py for how the selectors pick devices. Every mistake is a
UsageError that names the entry and what is allowed.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..spec import ProfileSpec
from ..targets.adb_server import AdbServer

#: ProfileSpec fields an inventory may set (farm-wide `[profile]` or per device).
PROFILE_KEYS = tuple(ProfileSpec.__dataclass_fields__)
_TOP_KEYS = {"name", "servers", "devices", "profile", "concurrency", "retries", "backoff"}
_DEVICE_KEYS = {"serial", "model", "props", "server", "required", "exclude", "name"}
_DEVICE_KEYS |= {"workdir", "profile"}


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
    profile: Mapping[str, Any] = field(default_factory=dict)  # ProfileSpec overrides

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
    profile: Mapping[str, Any] = field(default_factory=dict)  # farm-wide ProfileSpec overrides
    concurrency: int | None = None  # devices profiled at once; None = CLI default
    retries: int | None = None  # retries of a device after a transient adb error
    backoff: float | None = None  # first retry delay in s (doubles each retry)
    path: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)  # the file as parsed, kept in farm.json

    @classmethod
    def single_server(cls, server: AdbServer) -> Inventory:
        """Every device on one server (`droidoom profile --all`)."""
        entry = ServerEntry(server, str(server))
        return cls(name=f"all@{server}", servers=(entry,), raw={"servers": [str(server)]})

    def server_named(self, ref: str) -> ServerEntry | None:
        return next((s for s in self.servers if ref in (s.name, str(s.server))), None)


def _err(where: str, what: str) -> UsageError:
    return UsageError(f"{where}: {what}")


def _strs(value: object, where: str, key: str) -> tuple[str, ...]:
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


def check_profile(overrides: object, where: str) -> dict[str, Any]:
    """Validate ProfileSpec overrides from TOML (lists become tuples); UsageError if bad."""
    if not isinstance(overrides, dict):
        raise _err(where, "`profile` must be a table, e.g. profile = { writes = 400 }")
    bad = sorted(set(overrides) - set(PROFILE_KEYS))
    if bad:
        raise _err(where, f"unknown profile setting {bad[0]!r}: use {', '.join(PROFILE_KEYS)}")
    out: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    try:
        replace(ProfileSpec(), **out).validate()
    except UsageError as e:
        raise _err(where, str(e)) from None
    except TypeError as e:
        raise _err(where, f"bad profile value: {e}") from None
    return out


def _server(item: object, i: int, where: str) -> ServerEntry:
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


def _selector(item: object, i: int, where: str) -> Selector:
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


def parse(
    data: Mapping[str, Any], *, where: str = "inventory", path: Path | None = None
) -> Inventory:
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


def _positive(
    data: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str,
    zero_ok: bool = False,
) -> Any:  # the TOML value, checked to be one of `types`
    if key not in data:
        return None
    v: Any = data[key]
    number = isinstance(v, types) and not isinstance(v, bool)
    if not number or v < 0 or (v == 0 and not zero_ok):
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
