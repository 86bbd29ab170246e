"""One profile on one target: probe, plan, push, run, stream, store, always clean up.

Data flows one way: spec -> plan -> helper on the target -> records -> DataFrame ->
run directory. The runner never decides *how* to run on a platform (that is the
Target's job) nor *what* to write (that is the scenario's).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import shlex
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, devlock, leftovers, runsave, schema, signals, store
from .errors import (
    DroidoomError,
    HelperError,
    TargetError,
    TransientTargetError,
    UsageError,
)
from .power import suspend_risk
from .protocol import EXIT_OK, Event, decode_records, parse_line, render_plan
from .scenario import ROLES, Plan, build_plan
from .spec import ProfileSpec
from .targets.base import Target

#: Seconds without a helper line before we call the target stuck. The helper prints
#: progress every 100 ms while writing; spawning a big population is the longest gap.
LINE_TIMEOUT = 60.0


@dataclass
class Progress:
    """Callbacks the runner reports to (the CLI draws a rich progress bar with them)."""

    start: Callable[[int], None] = lambda total: None  # total timed writes
    advance: Callable[[int], None] = lambda done: None  # writes done so far
    point: Callable[[int, int], None] = lambda idx, population: None
    notice: Callable[[str], None] = lambda text: None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM/SIGHUP, see droidoom.signals) during a profile; `.result` is
    the partial run that was saved."""

    def __init__(self, result: RunResult):
        super().__init__("interrupted")
        self.result = result


@dataclass(frozen=True)
class RunResult:
    """What `profile()` produced."""

    path: Path  # the run directory
    status: str  # complete | partial
    samples: pd.DataFrame
    meta: dict  # the run.json content
    notices: tuple[str, ...] = ()


@dataclass
class _Session:
    """Mutable state gathered from the helper's stdout during one run."""

    events: dict[str, Event] = field(default_factory=dict)  # last hello/facts/calib/done/error
    targets: dict[int, dict] = field(default_factory=dict)
    points: list[dict] = field(default_factory=list)
    done: int = 0

    def feed(self, ev: Event, progress: Progress) -> None:
        if ev.kind == "target":
            self.targets[ev.int("idx")] = dict(ev.fields)
            if ev.fields.get("status") != "ok":
                kind = ev.fields.get("kind")
                progress.notice(f"{kind} target unavailable here: {ev.fields.get('msg', '?')}")
        elif ev.kind == "point":
            self.points.append(dict(ev.fields))
            progress.point(ev.int("idx"), ev.int("population"))
        elif ev.kind == "progress":
            self.done = ev.int("done")
            progress.advance(self.done)
        else:
            self.events[ev.kind] = ev


def make_run_id(device: str, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", device).strip("_") or "device"
    # The random part keeps runs started in the same second apart on one host (run ids
    # also name tracefs instances and device files, shared by every run there).
    return f"{now:%Y%m%dT%H%M%SZ}-{safe}-{secrets.token_hex(2)}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def probe(target: Target, helper: str) -> dict[str, Event]:
    """Run `helper probe`: permissions (adj_min), limits, timer calibration."""
    res = target.sh(f"{shlex.quote(helper)} probe", timeout=60)
    events = {e.kind: e for e in map(parse_line, res.stdout.splitlines()) if e}
    if not res.ok or "facts" not in events:
        raise HelperError(
            f"{target.name}: `droidoom-helper probe` failed (exit {res.exit_code}): "
            f"{(res.stderr or res.stdout).strip()[:300]}",
            res.exit_code,
        )
    return events


def records_to_frame(data: bytes, plan: Plan, run_id: str, device: str) -> pd.DataFrame:
    """Decode helper records and label them with the plan (vectorised)."""
    rec = decode_records(data)
    n = len(rec)
    kinds = list(schema.KINDS)
    kind_of_target = np.array([kinds.index(t.kind) for t in plan.targets], dtype=np.int8)
    pts = plan.points
    pop = np.array([p.population for p in pts], dtype=np.int32)
    thr = np.array([p.threads for p in pts], dtype=np.int16)
    mode = np.array([schema.MODES.index(p.mode) for p in pts], dtype=np.int8)
    point = rec["point"].astype(np.int64)

    def const(value: str) -> pd.Categorical:
        return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [value])

    df = pd.DataFrame(
        {
            "run_id": const(run_id),
            "device": const(device),
            "kind": pd.Categorical.from_codes(kind_of_target[rec["target"]], kinds),
            "mode": pd.Categorical.from_codes(mode[point], list(schema.MODES)),
            "population": pop[point],
            "threads": thr[point],
            "point": point,
            "seq": rec["seq"],
            "adj_from": rec["adj_from"],
            "adj_to": rec["adj_to"],
            "role": pd.Categorical.from_codes(rec["role"].astype(np.int16), list(ROLES)),
            "latency_ns": rec["latency_ns"],
            "t_ns": rec["t_ns"],
            "cpu": rec["cpu"],
            "err": rec["err"],
        }
    )
    return schema.coerce(df)


def profile(
    target: Target,
    spec: ProfileSpec,
    out_dir: Path,
    *,
    captures: Sequence = (),
    progress: Progress | None = None,
    run_id: str | None = None,
    extra_meta: dict | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    """Profile `target` with `spec`; write and return a run directory under `out_dir`.

    Ctrl-C, a vanished device or a stuck helper end the run early: the helper and its
    population are torn down, the records gathered so far are kept, and the run is
    marked "partial". Ctrl-C raises `Interrupted` (a KeyboardInterrupt) carrying the
    saved partial result. Setting `cancel` (from another thread, e.g. a farm's Ctrl-C
    handler) stops the run the same way and returns the partial result.
    """
    spec.validate()
    progress = progress or Progress()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as e:
        raise UsageError(f"cannot write to output directory {out_dir}: {e.strerror}") from None

    facts = target.facts()
    helper = target.install_helper()
    probed = probe(target, helper)
    hf = probed["facts"]
    adj_min = hf.int("adj_min", -1000)
    plan = build_plan(spec, adj_min)
    notices: list[str] = []

    def notice(text: str) -> None:
        notices.append(text)
        progress.notice(text)

    for note in plan.notes:
        notice(note)
    if plan.clamped:
        notice(
            f"this user may not lower oom_score_adj below {adj_min} (oom_score_adj_min); "
            f"{plan.clamped} moves were raised to {adj_min}. Run as root for the full range."
        )
    if risk := suspend_risk(facts.extra.get("power")):
        notice(risk)
    if "multiprocess" in spec.kinds and hf.fields.get("clone_vm") == "0":
        notice("clone(CLONE_VM) without CLONE_THREAD fails here (qemu-user?): no multiprocess data")

    run_id = run_id or make_run_id(facts.device)
    run_dir = out_dir / run_id
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = out_dir / f"{run_id}-{suffix}"
    run_id = run_dir.name
    lock = devlock.acquire(target, run_id, str(run_dir.resolve()))
    try:
        if lock.stale is not None:
            notice(f"the device lock of {lock.stale.describe()} was stale (killed?): taken over")
            for line in leftovers.finish(target, lock.stale):
                notice(f"that run: {line}")
        run_dir.mkdir()
    except BaseException:
        lock.release()
        raise

    total = sum(len(p.writes) for p in plan.points)
    meta: dict = {
        "format": store.FORMAT,
        "run_id": run_id,
        "status": "running",
        "started": _now(),
        "device": facts.device,
        "droidoom_version": __version__,
        "spec": spec.as_dict(),
        "target": asdict(facts),
        "helper": {
            "path": helper,
            "pushed": target.helper_pushed,
            **probed["hello"].fields,
        },
        "helper_facts": hf.fields,
        "calibration": {k: int(v) for k, v in probed["calib"].fields.items()},
        "adj_min": adj_min,
        "writes_planned": total,
        **plan.info,
        "device_activity": {"before": lock.before},
        **(extra_meta or {}),
    }
    try:
        store.write_json(run_dir / store.RUN_JSON, meta)
    except BaseException as e:
        lock.release()
        if isinstance(e, OSError):
            raise UsageError(f"cannot write {run_dir / store.RUN_JSON}: {e.strerror}") from None
        raise

    wd = target.workdir()
    target.claim_run(run_id)  # before anything of this run exists on the target
    remote_plan = f"{wd}/plan-{run_id}.txt"
    remote_rec = f"{wd}/records-{run_id}.bin"
    session = _Session()
    reason = None
    interrupted: BaseException | None = None
    armed = []
    capture_meta: dict = {}
    rc = None
    samples: pd.DataFrame | None = None
    link_lost = False  # then cleanup does not wait on a device that cannot answer
    try:
        _push_text(target, render_plan(plan.targets, plan.points, plan.writer), remote_plan)
        cmd = f"exec {shlex.quote(helper)} run {shlex.quote(remote_plan)} {shlex.quote(remote_rec)}"
        needs_root = False
        for src in captures:
            why = src.unavailable(target)
            if why:
                capture_meta[src.name] = {"skipped": why}
                notice(f"capture {src.name} skipped: {why}")
                continue
            src.arm(target, _capture_ctx(run_id, wd, facts, total + _warmups(plan)))
            armed.append(src)
            if src.slows_writes:
                notice(src.slows_writes)
            cmd = src.wrap(cmd)
            needs_root = needs_root or src.needs_root
        progress.start(total)
        # The outermost shell records its pid in the lock (it becomes the helper or its
        # wrapper and dies with the run): how another host tells a stale lock.
        proc = target.spawn(lock.wrap(cmd), root=needs_root)
        try:
            for line in proc.lines(timeout=LINE_TIMEOUT):
                ev = parse_line(line)
                if ev:
                    session.feed(ev, progress)
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"
                    break
        except KeyboardInterrupt as e:
            interrupted, reason = e, signals.describe(e)
        except TransientTargetError as e:
            reason, link_lost = str(e), True
        finally:
            rc = proc.close()
        # A vanished device shows up as the stream ending without a `done` line.
        if reason is None and "done" not in session.events and "error" not in session.events:
            wrapper = _wrapper_failure(armed, proc, rc, session)
            reason = wrapper or (
                f"the helper stopped without finishing (exit {rc}); device disconnected?"
            )
            link_lost = wrapper is None and facts.transport != "local"
        err = session.events.get("error")
        if err is not None and session.done == 0:
            raise HelperError(f"{target.name}: {err.fields.get('msg', 'helper failed')}", rc)
        if err is not None:
            reason = reason or f"helper error: {err.fields.get('msg', '?')}"
        done = session.events.get("done")
        if reason is None and done is not None and done.fields.get("status") != "complete":
            reason = f"the helper was interrupted ({done.fields.get('reason', '?')})"
        if reason is None and rc not in (EXIT_OK, None):
            reason = f"the helper exited with {rc}"

        samples, why = runsave.pull_records(target, remote_rec, plan, run_id, facts.device)
        if samples is None:
            reason = reason or f"records could not be pulled ({why})"
            link_lost = link_lost or facts.transport != "local"
            samples = schema.empty()
        for src in armed:
            try:
                res = src.collect(target, samples, run_dir, _capture_info(session))
            except DroidoomError as e:
                capture_meta[src.name] = {"error": str(e)}
                notice(f"capture {src.name} failed: {e}")
                continue
            samples = res.samples
            capture_meta[src.name] = res.meta
            for name, table in res.tables.items():
                store.write_table(run_dir / f"{name}.parquet", table)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt) and interrupted is None:
            interrupted = e
        if not isinstance(e, KeyboardInterrupt | TargetError | OSError):
            meta.update(status="failed", finished=_now(), error=str(e))
            store.write_json(run_dir / store.RUN_JSON, meta)
            _discard_if_empty(run_dir)
            lock.release()
            raise
        reason = reason or runsave.describe(e)
        link_lost = link_lost or isinstance(e, TargetError)
        samples = schema.empty() if samples is None else samples
    finally:
        for src in armed:
            src.disarm(target)

    status = "complete" if reason is None else "partial"
    meta.update(
        status=status,
        reason=reason,
        finished=_now(),
        helper_exit=rc,
        writes_recorded=len(samples),
        # What the device reported having recorded (its progress stream): it keeps them
        # in its records file even when they never reached this host.
        writes_on_device=session.done,
        targets=[session.targets[k] for k in sorted(session.targets)],
        points=session.points,
        writer=session.events["writer"].fields if "writer" in session.events else None,
        captures=capture_meta,
        notices=notices,
    )
    kept = runsave.save(run_dir, samples, meta, facts.transport)
    if kept < len(samples):
        if facts.transport == "local":
            getattr(target, "keep_workdir", lambda: None)()  # the records stay for recover
        samples = samples.iloc[:kept]
        status = meta["status"]
    # Saved: from here a dropped link or a full disk costs nothing measured.
    after, warnings = runsave.cleanup(target, lock, status, (remote_plan, remote_rec), link_lost)
    for w in warnings:
        notice(f"cleanup: {w}")
    meta.update(device_activity={"before": lock.before, "after": after}, notices=notices)
    with suppress(OSError):
        store.write_json(run_dir / store.RUN_JSON, meta)
    result = RunResult(run_dir, status, samples, meta, tuple(notices))
    if interrupted is not None:
        raise Interrupted(result) from interrupted
    return result


def _wrapper_failure(armed, proc, rc, session: _Session) -> str | None:
    """The helper never said hello: a wrapper (perf, su...) failed, not the device.
    Its own stderr and exit code say why."""
    if "hello" in session.events:
        return None
    tail = list(getattr(proc, "stderr_tail", []) or [])
    for src in reversed(armed):  # outermost wrapper first
        why = src.diagnose(tail, rc)
        if why:
            return why
    lines = [ln.strip() for ln in tail if ln.strip()]
    if rc not in (None, 0) and lines:
        return f"the command failed (exit {rc}) before the helper started: {' | '.join(lines[-3:])}"
    return None


def _push_text(target: Target, text: str, remote: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(text)
    try:
        target.push(Path(f.name), remote)
    finally:
        Path(f.name).unlink()


def _discard_if_empty(run_dir: Path) -> None:
    if not (run_dir / store.SAMPLES).exists():
        for f in run_dir.iterdir():
            f.unlink()
        run_dir.rmdir()


def _warmups(plan: Plan) -> int:
    return sum(p.warmup * len(plan.targets) for p in plan.points)


def _capture_ctx(run_id, workdir, facts, writes):
    from .capture.base import CaptureContext

    return CaptureContext(
        run_id=run_id, workdir=workdir, abi=facts.abi, root=facts.root, writes=writes
    )


def _capture_info(session: _Session):
    from .capture.base import CaptureRunInfo

    hello = session.events.get("hello")
    return CaptureRunInfo(
        helper_pid=hello.int("pid", 0) if hello else 0,
        targets={
            k: {"kind": v.get("kind"), "pid": int(v.get("pid", 0))}
            for k, v in session.targets.items()
        },
    )
