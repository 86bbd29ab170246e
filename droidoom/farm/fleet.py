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

import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .. import signals, store, vocab
from ..errors import DroidoomError, PermanentTargetError, TransientTargetError, UsageError
from ..run import record, runner
from ..spec import ProfileSpec
from ..targets.adb import AdbTarget
from ..targets.base import Target, TargetFacts
from ..vocab import DeviceStatus, FarmStatus, RunStatus
from .inventory import FarmDevice, Resolution
from .results import (
    FARM_JSON,
    DeviceOutcome,
    FarmInterrupted,
    FarmResult,
    farm_doc,
    make_farm_id,
    note_recovered,
    on_device,
    summarize,
)

__all__ = [
    "FARM_JSON", "DeviceOutcome", "FarmInterrupted", "FarmObserver", "FarmResult", "Observer",
    "FarmTarget", "make_farm_id", "note_recovered", "on_device", "run_farm", "summarize",
]  # fmt: skip

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
        self.name = dev.label  # Target.name: what tables and run ids call it

    def facts(self) -> TargetFacts:
        facts = super().facts()
        if facts.device != self.name:
            extra = {**facts.extra, "serial": self.serial}
            self._facts = facts = replace(facts, device=self.name, extra=extra)
        return facts


class Observer(Protocol):
    """What a farm reports its progress to: FarmObserver (every hook a no-op, to
    subclass) or anything with these methods (the CLI's live rows)."""

    def progress(self, dev: FarmDevice) -> runner.Progress: ...
    def status(self, dev: FarmDevice, text: str) -> None: ...
    def notice(self, text: str) -> None: ...


class FarmObserver:
    """Per-device progress hooks (the CLI draws rich bars); every method is optional."""

    def progress(self, dev: FarmDevice) -> runner.Progress:
        """runner.Progress callbacks for one device's run (called once per attempt)."""
        return runner.Progress()

    def status(self, dev: FarmDevice, text: str) -> None:
        """A device's state changed: connecting, retrying, complete, failed: ..."""

    def notice(self, text: str) -> None:
        """A farm-wide message."""


def device_spec(base: ProfileSpec, dev: FarmDevice) -> ProfileSpec:
    """The farm spec with the device's inventory overrides applied. An override that
    names another `replay:TRACE` sizes that replay from its trace, as `profile` does,
    unless the overrides also give its populations or kinds."""
    from ..traces.replay import spec_for_replay, trace_path

    def trace(spec: ProfileSpec) -> Path | None:
        path = trace_path(spec.scenario)
        return None if path is None else Path(path).expanduser().resolve()

    try:
        spec = replace(base, **dict(dev.profile)).validate()
        if trace(spec) not in (None, trace(base)):
            spec = spec_for_replay(spec, population_given="populations" in dev.profile,
                                   kinds_given="kinds" in dev.profile)  # fmt: skip
        return spec
    except UsageError as e:
        raise UsageError(f"{dev.label}: inventory profile override: {e}") from None


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
        observer: Observer,
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

    def _doc(self, status: FarmStatus, finished: str | None) -> dict[str, Any]:
        settings = {"concurrency": self.concurrency, "retries": self.retries,
                    "backoff": self.backoff}  # fmt: skip
        return farm_doc(self.resolution, self.farm_id, self.spec, settings, self.outcomes,
                        status=status, started=self.started, finished=finished,
                        farm_dir=self.path)  # fmt: skip

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
        if out.run_id is None:
            return
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
        for attempt in range(1, self.retries + 2):
            if self.cancel.is_set():
                return self._finish(out, DeviceStatus.CANCELLED, "cancelled")
            out.attempts, out.status = attempt, DeviceStatus.RUNNING
            self.observer.status(dev, "connecting" if attempt == 1 else f"attempt {attempt}")
            error = self._attempt(out, attempt)
            if error is None:  # finished: complete, partial, cancelled or failed for good
                return None
            out.errors.append(f"attempt {attempt}: {error}")
            self._discard(out)
            if attempt <= self.retries:
                delay = min(MAX_BACKOFF, self.backoff * 2 ** (attempt - 1))
                self.observer.status(dev, f"retry in {delay:.0f} s: {error}")
                if self.cancel.wait(delay):
                    return self._finish(out, DeviceStatus.CANCELLED, "cancelled")
        self._finish(out, DeviceStatus.FAILED, f"failed: {out.errors[-1]}")

    def _run_meta(self, dev: FarmDevice, attempt: int) -> dict[str, Any]:
        """What a device's run.json says about the farm it ran in."""
        return {
            "farm_id": self.farm_id,
            "inventory_name": self.resolution.inventory.name,
            "farm": {
                "label": dev.label,
                "serial": dev.serial,
                "server": dev.server.name,
                "server_address": str(dev.server.server),
                "required": dev.required,
            },
            "farm_attempt": attempt,
        }

    def _attempt(self, out: DeviceOutcome, attempt: int) -> str | None:
        """One attempt at profiling `out`'s device: None once the device is finished
        (its outcome set), else why the attempt failed in a way worth a retry."""
        target = None
        try:
            target = self.factory(out.device)
            res = runner.profile(
                target,
                out.spec,
                self.path,
                progress=self.observer.progress(out.device),
                run_id=out.run_id,
                extra_meta=self._run_meta(out.device, attempt),
                cancel=self.cancel,
            )
        except TransientTargetError as e:
            return str(e)
        except DroidoomError as e:  # permanent: retrying will not help
            self._fail(out, f"attempt {attempt}: {e}", f"failed: {e}")
            return None
        except Exception as e:  # a bug on one device must not take the farm down
            what = f"{type(e).__name__}: {e}"
            self._fail(out, f"attempt {attempt}: internal error {what}", f"failed: {what}")
            return None
        finally:
            if target is not None:
                with suppress(Exception):
                    target.close()
        out.result = res
        if res.status == RunStatus.COMPLETE:
            self._finish(out, DeviceStatus.COMPLETE, "complete")
            return None
        return self._ended_early(out, res)

    def _fail(self, out: DeviceOutcome, error: str, status_text: str) -> None:
        out.errors.append(error)
        self._discard(out)
        self._finish(out, DeviceStatus.FAILED, status_text)

    def _ended_early(self, out: DeviceOutcome, res: runner.RunResult) -> str | None:
        """A run that did not complete: kept as partial if it measured anything, else
        dropped (cancelled, or the reason to retry)."""
        reason = str(res.meta.get("reason") or "ended early")
        # Never retry (or delete) a run that measured something, even if its samples are
        # still on the device: `droidoom recover` brings them home. Once the helper
        # started a point its records file exists on the device (progress lines may not
        # have reached us): a retry would overwrite it.
        if len(res.samples) or on_device(res) or res.meta.get("points"):
            if not len(res.samples):
                held = on_device(res)
                reason += (
                    f"; the device keeps {held or 'the'} writes it recorded: once it is "
                    f"back, `droidoom recover --serial {out.device.serial} {res.path}`"
                )
                res.meta["reason"] = reason
                record.write(res.path, res.meta)
            self._finish(out, DeviceStatus.PARTIAL, f"partial: {reason}")
            return None
        out.result = None
        if self.cancel.is_set():
            self._discard(out)
            self._finish(out, DeviceStatus.CANCELLED, "cancelled")
            return None
        return reason  # no sample taken: worth a retry

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
    observer: Observer | None = None,
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


_T = TypeVar("_T")


def _first(*values: _T | None) -> _T:
    return next(v for v in values if v is not None)
