"""Profile many devices behind several adb servers at once: one farm id, one dataset.

The distribution engine is adb's own client/server protocol: each lab host runs an adb
server reachable over TCP (`adb -a nodaemon server`), and every device is driven through
its server by an `AdbTarget`. There is no agent of our own on the lab hosts.

One worker thread per device (bounded by `concurrency`) runs `runner.profile` into the
farm directory::

    <out>/<farm_id>/farm.json          farm id, inventory, per-device status and errors
    <out>/<farm_id>/<run_id>/run.json  one ordinary run per device (droidoom.load reads
    <out>/<farm_id>/<run_id>/samples.parquet   the farm directory as one DataFrame)

A device that fails or vanishes is recorded with its error while the others finish.
Transient adb errors before any sample was taken are retried with exponential backoff;
a run that already wrote samples is never retried (it is kept, marked partial). Ctrl-C
sets a shared cancel event: every run stops its helper and saves what it has.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import __version__, analysis, runner, signals, store, vocab
from .errors import DroidoomError, PermanentTargetError, TransientTargetError, UsageError
from .inventory import FarmDevice, Resolution
from .spec import ProfileSpec
from .targets.adb import AdbTarget
from .targets.base import Target, TargetFacts
from .vocab import DeviceStatus, FarmStatus, RunStatus

FARM_JSON = "farm.json"
DEFAULT_CONCURRENCY = 8
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF = 1.0  # s before the first retry; doubles each time
MAX_BACKOFF = 30.0


class FarmTarget(AdbTarget):
    """An AdbTarget named by its farm label.

    The label becomes `facts().device` (the `device` column), so two labs that both
    have a `127.0.0.1:5555` stay apart in one dataset.
    """

    def __init__(self, dev: FarmDevice):
        super().__init__(dev.serial, server=dev.server.server, workdir=dev.workdir)
        self.name = dev.label
        self.label = dev.label

    def facts(self) -> TargetFacts:
        facts = super().facts()
        if facts.device != self.label:
            extra = {**facts.extra, "serial": self.serial}
            self._facts = facts = replace(facts, device=self.label, extra=extra)
        return facts


class FarmObserver:
    """Per-device progress hooks (the CLI draws rich bars); every method is optional."""

    def progress(self, dev: FarmDevice) -> runner.Progress:
        """runner.Progress callbacks for one device's run (called once per attempt)."""
        return runner.Progress()

    def status(self, dev: FarmDevice, text: str) -> None:
        """A device's state changed: connecting, retrying, complete, failed: ..."""

    def notice(self, text: str) -> None:
        """A farm-wide message."""


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
    summary: dict = field(default_factory=dict)  # verdict and medians, see summarize()

    @property
    def error(self) -> str | None:
        ended_early = (DeviceStatus.PARTIAL, DeviceStatus.CANCELLED)
        if self.status in ended_early and self.result is not None:
            return self.result.meta.get("reason")
        return self.errors[-1] if self.errors and self.status != DeviceStatus.COMPLETE else None

    def as_dict(self, farm_dir: Path) -> dict:
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


class FarmInterrupted(KeyboardInterrupt):
    """Ctrl-C during a farm; `.result` holds every device's saved outcome."""

    def __init__(self, result: FarmResult):
        super().__init__("interrupted")
        self.result = result


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


def device_spec(base: ProfileSpec, dev: FarmDevice) -> ProfileSpec:
    """The farm spec with the device's inventory overrides applied."""
    try:
        return replace(base, **dict(dev.profile)).validate()
    except UsageError as e:
        raise UsageError(f"{dev.label}: inventory profile override: {e}") from None


def summarize(result: runner.RunResult) -> dict:
    """Verdict and median latency per kind at each population (reopen mode if present)."""
    df = result.samples
    if df.empty:
        return {}
    out: dict = {}
    with suppress(Exception):  # a summary must never cost the farm its results
        stats = analysis.summary(df)
        modes = set(stats["mode"].astype(str))
        stats = stats[stats["mode"].astype(str) == ("reopen" if "reopen" in modes else min(modes))]
        out["medians_ns"] = {
            str(kind): {int(r.population): float(r.median_ns) for r in g.itertuples()}
            for kind, g in stats.groupby("kind", observed=True)
        }
        verdicts = analysis.verdict(df, [result.meta])
        if verdicts:
            out["verdict"] = verdicts[0].status
            out["verdict_sentence"] = verdicts[0].sentence
    return out


class Farm:
    """One farm run; use `run_farm()`."""

    def __init__(
        self,
        resolution: Resolution,
        spec: ProfileSpec,
        out_dir: Path,
        *,
        concurrency: int,
        retries: int,
        backoff: float,
        cancel: threading.Event,
        observer: FarmObserver,
        target_factory: Callable[[FarmDevice], Target],
        farm_id: str,
    ):
        self.resolution = resolution
        self.spec = spec
        self.farm_id = farm_id
        self.path = Path(out_dir) / farm_id
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = backoff
        self.cancel = cancel
        self.observer = observer
        self.factory = target_factory
        self.outcomes = tuple(
            DeviceOutcome(d, device_spec(spec, d)) for d in resolution.devices
        )  # specs checked before anything starts
        self._lock = threading.Lock()
        self.started = vocab.now()

    # --- farm.json ----------------------------------------------------------------

    def write_json(self, status: FarmStatus, finished: str | None = None) -> None:
        with self._lock:  # workers finish concurrently: one consistent snapshot at a time
            store.write_json(self.path / FARM_JSON, self._doc(status, finished))

    def _doc(self, status: FarmStatus, finished: str | None) -> dict:
        inv = self.resolution.inventory
        return {
            "format": store.FORMAT,
            "kind": "farm",
            "farm_id": self.farm_id,
            "status": status,
            "started": self.started,
            "finished": finished,
            "droidoom_version": __version__,
            "inventory": {
                "name": inv.name,
                "path": str(inv.path) if inv.path else None,
                "content": dict(inv.raw),
            },
            "servers": [
                {"name": s.entry.name, "address": str(s.entry.server), "error": s.error}
                for s in self.resolution.servers
            ],
            "spec": self.spec.as_dict(),
            "settings": {
                "concurrency": self.concurrency,
                "retries": self.retries,
                "backoff": self.backoff,
            },
            "devices": [o.as_dict(self.path) for o in self.outcomes],
        }

    # --- one device ---------------------------------------------------------------

    def _finish(self, out: DeviceOutcome, status: DeviceStatus, text: str) -> None:
        out.status = status
        if out.result is not None:
            out.summary = summarize(out.result)
        self.observer.status(out.device, text)
        self.write_json(FarmStatus.RUNNING)

    def _discard(self, out: DeviceOutcome) -> None:
        """Remove this device's run directory if it holds no samples (before a retry,
        or when the device failed): farm.json keeps the error."""
        run_dir = self.path / out.run_id
        if run_dir.is_dir() and not (run_dir / store.SAMPLES).exists():
            shutil.rmtree(run_dir, ignore_errors=True)

    def run_device(self, out: DeviceOutcome) -> None:
        """Profile one device, with retries; never raises (errors go into `out`)."""
        dev = out.device
        if not dev.seen.usable:
            why = dev.seen.error or f"adb state is {dev.seen.state!r}"
            out.errors.append(f"{why}: check the cable / authorization prompt on the phone")
            return self._finish(out, DeviceStatus.FAILED, f"failed: {why}")
        out.run_id = runner.make_run_id(dev.label)
        meta = {
            "farm_id": self.farm_id,
            "inventory_name": self.resolution.inventory.name,
            "farm": {
                "label": dev.label,
                "serial": dev.serial,
                "server": dev.server.name,
                "server_address": str(dev.server.server),
                "required": dev.required,
            },
        }
        for attempt in range(1, self.retries + 2):
            if self.cancel.is_set():
                return self._finish(out, DeviceStatus.CANCELLED, "cancelled")
            out.attempts, out.status = attempt, DeviceStatus.RUNNING
            self.observer.status(dev, "connecting" if attempt == 1 else f"attempt {attempt}")
            target = None
            try:
                target = self.factory(dev)
                res = runner.profile(
                    target,
                    out.spec,
                    self.path,
                    progress=self.observer.progress(dev),
                    run_id=out.run_id,
                    extra_meta={**meta, "farm_attempt": attempt},
                    cancel=self.cancel,
                )
            except TransientTargetError as e:
                error = str(e)
            except DroidoomError as e:  # permanent: retrying will not help
                out.errors.append(f"attempt {attempt}: {e}")
                self._discard(out)
                return self._finish(out, DeviceStatus.FAILED, f"failed: {e}")
            except Exception as e:  # a bug on one device must not take the farm down
                out.errors.append(f"attempt {attempt}: internal error {type(e).__name__}: {e}")
                self._discard(out)
                return self._finish(out, DeviceStatus.FAILED, f"failed: {type(e).__name__}: {e}")
            else:
                out.result = res
                if res.status == RunStatus.COMPLETE:
                    return self._finish(out, DeviceStatus.COMPLETE, "complete")
                reason = res.meta.get("reason") or "ended early"
                # Never retry (or delete) a run that measured something, even if its
                # samples are still on the device: `droidoom recover` brings them home.
                # Once the helper started a point its records file exists on the device
                # (progress lines may not have reached us): a retry would overwrite it.
                if len(res.samples) or on_device(res) or res.meta.get("points"):
                    if not len(res.samples):
                        held = on_device(res)
                        reason += (
                            f"; the device keeps {held or 'the'} writes it recorded: once it "
                            f"is back, `droidoom recover --serial {dev.serial} {res.path}`"
                        )
                        res.meta["reason"] = reason
                        store.write_json(res.path / store.RUN_JSON, res.meta)
                    return self._finish(out, DeviceStatus.PARTIAL, f"partial: {reason}")
                if self.cancel.is_set():
                    self._discard(out)
                    out.result = None
                    return self._finish(out, DeviceStatus.CANCELLED, "cancelled")
                error, out.result = reason, None  # no sample taken: worth a retry
            finally:
                if target is not None:
                    with suppress(Exception):
                        target.close()
            out.errors.append(f"attempt {attempt}: {error}")
            self._discard(out)
            if attempt <= self.retries:
                delay = min(MAX_BACKOFF, self.backoff * 2 ** (attempt - 1))
                self.observer.status(dev, f"retry in {delay:.0f} s: {error}")
                if self.cancel.wait(delay):
                    return self._finish(out, DeviceStatus.CANCELLED, "cancelled")
        self._finish(out, DeviceStatus.FAILED, f"failed: {out.errors[-1]}")

    # --- all devices --------------------------------------------------------------

    def run(self) -> FarmResult:
        self.path.mkdir(parents=True, exist_ok=False)
        self.write_json(FarmStatus.RUNNING)
        interrupted: BaseException | None = None
        workers = max(1, min(self.concurrency, len(self.outcomes)))
        with ThreadPoolExecutor(workers, thread_name_prefix="droidoom-farm") as pool:
            futures = [pool.submit(self.run_device, o) for o in self.outcomes]
            while True:
                try:
                    while wait(futures, timeout=0.25).not_done:
                        pass
                    break
                except KeyboardInterrupt as e:
                    # Workers never see Ctrl-C (only the main thread does): tell them,
                    # then keep waiting while each stops its helper and saves its run.
                    if not interrupted:
                        why = signals.describe(e).removeprefix("interrupted by ")
                        self.observer.notice(f"{why}: stopping every device, saving results")
                    interrupted = interrupted or e
                    self.cancel.set()
            for f in futures:
                f.result()  # run_device never raises; surface bugs in it if it does
        if interrupted or self.cancel.is_set():
            status = FarmStatus.INTERRUPTED
        elif all(o.status == DeviceStatus.COMPLETE for o in self.outcomes):
            status = FarmStatus.COMPLETE
        else:
            status = FarmStatus.PARTIAL
        self.write_json(status, finished=vocab.now())
        down = tuple((s.entry.name, s.error) for s in self.resolution.servers if s.error)
        result = FarmResult(self.path, self.farm_id, status, self.outcomes, down)
        if interrupted:
            raise FarmInterrupted(result) from interrupted
        return result


def check_ready(resolution: Resolution) -> None:
    """Refuse to start when a required device is missing or nothing is selected."""
    if resolution.missing:
        raise PermanentTargetError(
            "required devices are not available: "
            + "; ".join(resolution.missing)
            + ". Plug them in / fix the filters, or set required = false"
        )
    if not resolution.devices:
        down = [f"{s.entry.name}: {s.error}" for s in resolution.servers if not s.reachable]
        raise UsageError(
            "the inventory selects no device"
            + (f" ({'; '.join(down)})" if down else "")
            + ": `droidoom devices --inventory FILE` shows what each server has"
        )


def run_farm(
    resolution: Resolution,
    spec: ProfileSpec,
    out_dir: str | Path,
    *,
    concurrency: int | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    cancel: threading.Event | None = None,
    observer: FarmObserver | None = None,
    target_factory: Callable[[FarmDevice], Target] = FarmTarget,
    farm_id: str | None = None,
) -> FarmResult:
    """Profile every selected device of `resolution` in parallel into one farm directory.

    Args:
        resolution: `inventory.resolve(...)`; required devices must be present.
        spec: the farm-wide spec; each device's inventory overrides apply on top.
        out_dir: the farm directory is created as `<out_dir>/<farm_id>`.
        concurrency, retries, backoff: default to the inventory's, else 8, 2, 1 s.
        cancel: set it (from any thread) to stop every device; Ctrl-C in the calling
            thread sets it too and raises `FarmInterrupted` once all runs are saved.
        observer: per-device progress hooks.
        target_factory: how a FarmDevice becomes a Target (default `FarmTarget`).

    Returns:
        FarmResult with one DeviceOutcome per device (also written to farm.json).
    """
    check_ready(resolution)
    inv = resolution.inventory
    farm = Farm(
        resolution,
        spec,
        Path(out_dir),
        concurrency=concurrency or inv.concurrency or DEFAULT_CONCURRENCY,
        retries=_first(retries, inv.retries, DEFAULT_RETRIES),
        backoff=_first(backoff, inv.backoff, DEFAULT_BACKOFF),
        cancel=cancel or threading.Event(),
        observer=observer or FarmObserver(),
        target_factory=target_factory,
        farm_id=farm_id or make_farm_id(),
    )
    return farm.run()


def _first(*values):
    return next(v for v in values if v is not None)
