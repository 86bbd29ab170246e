"""A farm's results: each device's outcome, the farm's, and farm.json.

farm.json (`<out>/<farm_id>/farm.json`) holds the farm id, the inventory, the spec and
one entry per device (label, serial, server, status, errors, run dir, a summary of its
verdict and medians); `droidoom recover` updates it (`note_recovered`). The scheduling
that fills it is in farm.py.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, analysis, store
from ..run import runner
from ..spec import ProfileSpec
from ..vocab import DeviceStatus, FarmStatus
from .inventory import FarmDevice, Resolution

FARM_JSON = "farm.json"


@dataclass
class DeviceOutcome:
    """What happened to one device; kept in farm.json."""

    device: FarmDevice
    spec: ProfileSpec
    status: DeviceStatus = DeviceStatus.PENDING
    run_id: str | None = None
    result: runner.RunResult | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)  # one line per failed attempt
    summary: dict[str, Any] = field(default_factory=dict)  # verdict, medians: summarize()

    @property
    def error(self) -> str | None:
        ended_early = (DeviceStatus.PARTIAL, DeviceStatus.CANCELLED)
        if self.status in ended_early and self.result is not None:
            reason = self.result.meta.get("reason")
            return None if reason is None else str(reason)
        return self.errors[-1] if self.errors and self.status != DeviceStatus.COMPLETE else None

    def as_dict(self, farm_dir: Path) -> dict[str, Any]:
        """This device's entry in farm.json."""
        d = self.device
        path = self.result.path if self.result is not None else None
        return {
            "label": d.label,
            "serial": d.serial,
            "server": d.server.name,
            "server_address": str(d.server.server),
            "model": d.seen.model,
            "adb_state": d.seen.state,
            "required": d.required,
            "workdir": d.workdir,
            "status": self.status,
            "attempts": self.attempts,
            "run_id": path.name if path is not None else None,
            "run_dir": str(path.relative_to(farm_dir)) if path is not None else None,
            "writes_recorded": len(self.result.samples) if self.result is not None else 0,
            "writes_on_device": on_device(self.result),
            "error": self.error,
            "errors": self.errors,
            "spec_overrides": dict(d.profile),
            **self.summary,
        }


@dataclass(frozen=True)
class FarmResult:
    """What `run_farm` produced."""

    path: Path  # the farm directory
    farm_id: str
    status: FarmStatus  # complete | partial | interrupted
    outcomes: tuple[DeviceOutcome, ...]
    server_errors: tuple[tuple[str, str], ...] = ()  # (server name, why unreachable)

    @property
    def ok(self) -> bool:
        """Every required device complete and at least one device complete."""
        done = [o for o in self.outcomes if o.status == DeviceStatus.COMPLETE]
        return bool(done) and all(
            o.status == DeviceStatus.COMPLETE for o in self.outcomes if o.device.required
        )


class FarmInterrupted(runner.Interrupted["FarmResult"]):
    """Ctrl-C (or SIGTERM/SIGHUP) during a farm: the same interruption as
    runner.Interrupted, which `except Interrupted` catches too; its `.result` is every
    device's saved outcome rather than one run."""


def on_device(result: runner.RunResult | None) -> int:
    """Writes the device reported recording in `result` (pulled to the host or not)."""
    if result is None:
        return 0
    return max(len(result.samples), int(result.meta.get("writes_on_device") or 0))


def note_recovered(run_dir: Path, writes: int) -> None:
    """After `droidoom recover` filled a farm's run: update that device in farm.json."""
    doc_path = Path(run_dir).parent / FARM_JSON
    if not doc_path.is_file():
        return
    try:
        doc = json.loads(doc_path.read_text())
    except (OSError, ValueError):
        return
    for d in doc.get("devices", []) if isinstance(doc, dict) else []:
        if d.get("run_id") == Path(run_dir).name:
            d.update(writes_recorded=writes, recovered=True)
            if d.get("status") == DeviceStatus.FAILED:
                d["status"] = DeviceStatus.PARTIAL
    store.write_json(doc_path, doc)


def make_farm_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"farm-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def summarize(result: runner.RunResult) -> dict[str, Any]:
    """Verdict and median latency per kind at each population (reopen mode if present)."""
    df = result.samples
    if df.empty:
        return {}
    out: dict[str, Any] = {}
    with suppress(Exception):  # a summary must never cost the farm its results
        stats = analysis.summary(df)
        modes = set(stats["mode"].astype(str))
        stats = stats[stats["mode"].astype(str) == ("reopen" if "reopen" in modes else min(modes))]
        out["medians_ns"] = {
            str(kind): {
                int(p): float(m) for p, m in zip(g["population"], g["median_ns"], strict=True)
            }
            for kind, g in stats.groupby("kind", observed=True)
        }
        verdicts = analysis.verdict(df, [result.meta])
        if verdicts:
            out["verdict"] = verdicts[0].status
            out["verdict_sentence"] = verdicts[0].sentence
    return out


def farm_doc(
    resolution: Resolution,
    farm_id: str,
    spec: ProfileSpec,
    settings: dict[str, Any],
    outcomes: tuple[DeviceOutcome, ...],
    *,
    status: FarmStatus,
    started: str,
    finished: str | None,
    farm_dir: Path,
) -> dict[str, Any]:
    """farm.json's content as it stands (written again as each device finishes)."""
    inv = resolution.inventory
    return {
        "format": store.FORMAT,
        "kind": "farm",
        "farm_id": farm_id,
        "status": status,
        "started": started,
        "finished": finished,
        "droidoom_version": __version__,
        "inventory": {
            "name": inv.name,
            "path": str(inv.path) if inv.path else None,
            "content": dict(inv.raw),
        },
        "servers": [
            {"name": s.entry.name, "address": str(s.entry.server), "error": s.error}
            for s in resolution.servers
        ],
        "spec": spec.as_dict(),
        "settings": settings,
        "devices": [o.as_dict(farm_dir) for o in outcomes],
    }
