"""One profile on one target: probe, plan, push, run, stream, store, always clean up.

Data flows one way: spec -> plan -> helper on the target -> records -> DataFrame ->
run directory. The runner never decides *how* to run on a platform (that is the
Target's job) nor *what* to write (that is the scenario's).
"""

from __future__ import annotations

import os
import shlex
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import pandas as pd

from .. import __version__, schema, signals, store
from ..analysis.drift import disturbances
from ..capture.base import CaptureContext, CaptureSource
from ..errors import DataError, DroidoomError, HelperError, TargetError, UsageError
from ..protocol import render_plan
from ..scenario import Plan
from ..spec import ProfileSpec
from ..targets.base import Target, TargetFacts
from ..vocab import RunStatus, now
from . import record, runsave
from .helper_io import Probe, probe, records_to_frame, with_target_pids
from .others import Watch
from .planned import life_seconds
from .plans import build_plan
from .power import suspend_risk
from .rundir import RunDir, finish_stale, make_run_id, open_run, writable_dir
from .session import Progress, Session, classify_end, stream, wrapper_failure
from .streamed import LiveRecords, count_records, settle_folder

__all__ = ["Interrupted", "Progress", "RunResult", "make_run_id", "profile"]

#: Seconds without a helper line before we call the target stuck. The helper prints
#: progress every 100 ms while writing; spawning a big population is the longest gap.
LINE_TIMEOUT = 60.0


_R = TypeVar("_R")


class Interrupted(KeyboardInterrupt, Generic[_R]):
    """Ctrl-C (or SIGTERM/SIGHUP, see droidoom.signals) during a profile; `.result` is
    the partial run that was saved (farm.FarmInterrupted: the farm's outcome)."""

    def __init__(self, result: _R):
        super().__init__("interrupted")
        self.result = result


@dataclass(frozen=True)
class RunResult:
    """What `profile()` produced."""

    path: Path  # the run directory
    status: RunStatus  # complete | partial
    samples: pd.DataFrame
    meta: dict[str, Any]  # the run.json content
    notices: tuple[str, ...] = ()


@dataclass
class _Notices:
    """The run's notices: shown as they come and kept for run.json."""

    show: Callable[[str], None]
    texts: list[str] = field(default_factory=list)

    def __call__(self, text: str) -> None:
        self.texts.append(text)
        self.show(text)


@dataclass(frozen=True)
class _Setup:
    """What the target and its helper said, and the plan they allow."""

    facts: TargetFacts
    helper: str
    probed: Probe
    plan: Plan

    @property
    def writes(self) -> int:
        """Timed writes of the plan."""
        return sum(len(p.writes) for p in self.plan.points)


@dataclass
class _Outcome:
    """What the helper run left: records as samples, why it ended early, capture meta."""

    session: Session = field(default_factory=Session)
    samples: pd.DataFrame | None = None
    reason: str | None = None
    interrupted: BaseException | None = None
    link_lost: bool = False  # then cleanup does not wait on a device that cannot answer
    captures: dict[str, Any] = field(default_factory=dict)
    remote_files: tuple[str, ...] = ()  # the plan and records files on the target
    during: list[dict[str, Any]] | None = None  # other runs seen at each point (run/others.py)


def profile(
    target: Target,
    spec: ProfileSpec,
    out_dir: Path,
    *,
    captures: Sequence[CaptureSource] = (),
    progress: Progress | None = None,
    run_id: str | None = None,
    extra_meta: dict[str, Any] | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    """Profile `target` with `spec`; write and return a run directory under `out_dir`.

    Ctrl-C, a vanished device or a stuck helper end the run early: the helper and its
    population are torn down, the records gathered so far are kept, and the run is
    marked "partial". Ctrl-C raises `Interrupted` (a KeyboardInterrupt) carrying the
    saved partial result. Once the run stops (or the helper ends), further Ctrl-C,
    SIGTERM or SIGHUP are reported and ignored until the run is saved. Setting `cancel`
    (from another thread, e.g. a farm's Ctrl-C handler) stops the run the same way and
    returns the partial result.
    """
    spec.validate()
    progress = progress or Progress()
    notices = _Notices(progress.notice)
    out_dir = writable_dir(Path(out_dir))
    setup = _plan(target, spec, notices)  # spec -> plan
    for line in settle_folder(out_dir):  # VM runs whose droidoom was killed
        notices(f"an earlier run: {line}")
    with signals.SaveGuard() as guard:
        run = open_run(target, out_dir, run_id or make_run_id(setup.facts.device))
        finish_stale(target, run, notices)  # what a killed run left on this device
        # A VM's records die with it: a copy grows on the host as they are made.
        live = LiveRecords(run.path) if target.streams_records else None
        try:
            run.start(_run_meta(target, setup, spec, run, extra_meta))
            out = _run_helper(target, setup, run, captures, progress, notices, cancel, guard,
                              live)  # fmt: skip
            guard.hold()  # whatever ended the run: from here on it is only saved
            result = _save(target, setup, run, out, notices)  # -> run dir
        except BaseException:
            if live is not None:
                live.close(remove=False)  # what reached the host stays for the next command
            raise
        if live is not None:  # kept unless samples.parquet holds all of it (a full disk)
            live.close(remove=len(result.samples) >= count_records(live.read()))
        if out.interrupted is None and guard.deferred is not None:
            # Asked to stop while a finished run was saving: saved, now stop as asked.
            out.interrupted = signals.stop_exception(guard.deferred)
    if out.interrupted is not None:
        raise Interrupted(result) from out.interrupted
    return result


def _plan(target: Target, spec: ProfileSpec, notices: _Notices) -> _Setup:
    """spec -> plan: the target's facts, its helper's probe, the plan they allow."""
    facts = target.facts()
    _check_cpu(target, spec.cpu, facts.cpus)
    helper = target.install_helper()
    probed = probe(target, helper)
    adj_min = probed.adj_min
    plan = build_plan(spec, adj_min)
    for note in plan.notes:
        notices(note)
    if plan.clamped:
        notices(
            f"this user may not lower oom_score_adj below {adj_min} (oom_score_adj_min); "
            f"{plan.clamped} moves were raised to {adj_min}. Run as root for the full range."
        )
    if risk := suspend_risk(asdict(facts.phone.power) if facts.phone else None):
        notices(risk)
    if "multiprocess" in spec.kinds and probed.facts.fields.get("clone_vm") == "0":
        notices(
            "clone(CLONE_VM) without CLONE_THREAD fails here (qemu-user?): no multiprocess data"
        )
    return _Setup(facts, helper, probed, plan)


def online_cpus(text: str) -> list[int]:
    """/sys/devices/system/cpu/online ("0-3,6") -> [0, 1, 2, 3, 6]; [] if unreadable."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return []
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def _check_cpu(target: Target, cpu: int, count: int) -> None:
    """`--cpu N` names an online CPU of the target, or the run is refused up front (an
    unpinned run would otherwise pass for a pinned one)."""
    if cpu < 0:
        return
    res = target.sh("cat /sys/devices/system/cpu/online", timeout=30)
    online = (online_cpus(res.stdout) if res.ok else []) or list(range(count))
    if cpu not in online:
        said = res.stdout.strip() if res.ok and res.stdout.strip() else f"0-{count - 1}"
        raise UsageError(
            f"--cpu {cpu}: {target.name} has CPUs {said} "
            f"online; pick one of them (or leave --cpu out: the writer stays on the CPU it "
            "starts on)"
        )


def _writer_notice(
    writer: dict[str, str] | None, cpu: int, notices: Callable[[str], None]
) -> None:
    """A pin the helper could not make (a cpuset, a CPU gone offline) is said, not only
    recorded as pin_errno in run.json."""
    if writer and cpu >= 0 and writer.get("pinned") == "0":
        notices(f"the writer could not be pinned to CPU {cpu} (errno {writer.get('pin_errno')}):"
                " it ran unpinned")


def _run_meta(
    target: Target, setup: _Setup, spec: ProfileSpec, run: RunDir, extra: dict[str, Any] | None
) -> dict[str, Any]:
    """run.json as it stands while the run is running."""
    facts, probed = setup.facts, setup.probed
    return {
        "format": store.FORMAT,
        "run_id": run.run_id,
        "status": RunStatus.RUNNING,
        "started": now(),
        "device": facts.device,
        "droidoom_version": __version__,
        "spec": spec.as_dict(),
        "target": facts.to_json(),
        "helper": {"path": setup.helper, "pushed": target.helper_pushed, **probed.hello.fields},
        "helper_facts": probed.facts.fields,
        "calibration": {k: int(v) for k, v in probed.calib.fields.items()},
        "adj_min": probed.adj_min,
        "writes_planned": setup.writes,
        **setup.plan.info,
        "device_activity": {"before": run.lock.before},
        **(extra or {}),
    }


def _run_helper(
    target: Target,
    setup: _Setup,
    run: RunDir,
    captures: Sequence[CaptureSource],
    progress: Progress,
    notices: _Notices,
    cancel: threading.Event | None,
    guard: signals.SaveGuard,
    live: LiveRecords | None = None,
) -> _Outcome:
    """helper -> records -> DataFrame: push the plan, arm the captures, stream the helper's
    stdout, classify the end, pull the records, collect the captures; always disarm.

    Ctrl-C, a lost link or a target error end it early with a reason; any other error
    marks the run failed (run.json says why) and propagates. Once the helper has ended,
    `guard` holds off stop requests: pulling the records is part of saving them.
    """
    wd, run_id, plan = target.workdir(), run.run_id, setup.plan
    target.claim_run(run_id)  # before anything of this run exists on the target
    remote_plan, remote_rec = f"{wd}/plan-{run_id}.txt", f"{wd}/records-{run_id}.bin"
    out = _Outcome(remote_files=(remote_plan, remote_rec))
    armed: list[CaptureSource] = []
    try:
        target.expect_run(life_seconds(plan))  # a VM lives as long as the plan needs
        _push_text(target, render_plan(plan.targets, plan.points, plan.writer, plan.measure),
                   remote_plan)
        cmd = "exec " + " ".join(map(shlex.quote, (setup.helper, "run", remote_plan, remote_rec)))
        facts, writes = setup.facts, setup.writes + _warmups(plan)
        ctx = CaptureContext(run_id, wd, facts.abi, facts.root, writes)
        cmd, needs_root = _arm(target, captures, ctx, cmd, armed, out.captures, notices)
        progress.start(setup.writes)
        if live is not None:
            target.stream_records(remote_rec, live.write_at)
        # The outermost shell records its pid in the lock (it becomes the helper or its
        # wrapper and dies with the run): how another host tells a stale lock.
        proc = target.spawn(run.lock.wrap(cmd), root=needs_root)
        session = out.session
        stream(proc, session, _watching(target, setup, out, progress), cancel, LINE_TIMEOUT)
        guard.hold()
        out.interrupted = session.interrupted
        end = classify_end(
            session.events, session.done, session.rc,
            stopped=session.stopped, link_lost=session.link_lost,
            wrapper_failure=wrapper_failure(armed, proc, session),
            remote=target.is_remote,
        )  # fmt: skip
        if end.fatal is not None:
            raise HelperError(f"{target.name}: {_naming(end.fatal, remote_rec)}", session.rc)
        out.reason, out.link_lost = end.reason, end.link_lost
        _pull(target, setup, run, out, remote_rec, live)
        _collect(target, armed, run, out, notices)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt) and out.interrupted is None:
            out.interrupted = e
        if not isinstance(e, KeyboardInterrupt | TargetError | OSError):
            run.fail(e)
            raise
        out.reason = out.reason or runsave.describe(e)
        out.link_lost = out.link_lost or isinstance(e, TargetError)
        if out.samples is None and live is not None:  # what reached the host, if any
            out.samples = _streamed(live, setup, run, out, runsave.describe(e))
        out.samples = schema.empty() if out.samples is None else out.samples
    finally:
        for src in armed:
            src.disarm(target)
    return out


def _watching(target: Target, setup: _Setup, out: _Outcome, progress: Progress) -> Progress:
    """`progress` that also counts other runs' helpers at each sweep point (into
    `out.during`). Not in a VM: its guest is this run's own, and its one channel carries
    no other request while the helper streams."""
    if target.ephemeral:
        return progress
    session = out.session

    def own_pid() -> int:
        hello = session.events.get("hello")
        return hello.int("pid", 0) if hello else 0

    watch = Watch(target, own_pid)
    out.during = watch.seen
    return replace(progress, point=watch.wrap(progress.point))


def _arm(
    target: Target,
    captures: Sequence[CaptureSource],
    ctx: CaptureContext,
    cmd: str,
    armed: list[CaptureSource],
    meta: dict[str, Any],
    notices: _Notices,
) -> tuple[str, bool]:
    """Arm the available captures (into `armed`, which the caller disarms); the helper
    command wrapped by them and whether it must run as root."""
    needs_root = False
    for src in captures:
        why = src.unavailable(target)
        if why:
            meta[src.name] = {"skipped": why}
            notices(f"capture {src.name} skipped: {why}")
            continue
        src.arm(target, ctx)
        armed.append(src)
        if src.slows_writes:
            notices(src.slows_writes)
        cmd = src.wrap(cmd)
        needs_root = needs_root or src.needs_root
    return cmd, needs_root


def _pull(
    target: Target, setup: _Setup, run: RunDir, out: _Outcome, remote_rec: str,
    live: LiveRecords | None = None,
) -> None:
    """records -> DataFrame: the helper's records file, labelled with the plan (else what
    of it reached the host as it was made, `live`)."""
    samples, why = runsave.pull_records(target, remote_rec, setup.plan, run.run_id,
                                        setup.facts.device)  # fmt: skip
    if samples is None and live is not None:
        samples = _streamed(live, setup, run, out, why)
    if samples is None:
        # On this host the records file is all there is (its workdir goes at close):
        # keep it; a device keeps its files anyway.
        kept = not target.is_remote and Path(remote_rec).is_file()
        if kept:
            target.keep_workdir()
        hint = target.recover_hint(run.path) if kept else None
        fetch = f"; `{hint}` fetches them" if hint else ""
        out.reason = out.reason or f"records could not be pulled ({why}){fetch}"
        out.link_lost = out.link_lost or target.is_remote
        samples = schema.empty()
    out.samples = with_target_pids(samples, out.session.targets)


def _streamed(
    live: LiveRecords, setup: _Setup, run: RunDir, out: _Outcome, why: str
) -> pd.DataFrame | None:
    """The samples in the host's copy of the records (the target is gone with its file),
    the reason saying how many reached the host; None if none did."""
    data = live.read()
    try:
        samples = records_to_frame(data, setup.plan, run.run_id, setup.facts.device)
    except DataError:
        return None  # not even the header reached the host
    # The target went with its records file (why: the pull's error); what it streamed
    # as the writes were made is what there is.
    out.reason = (f"{out.reason or why or 'the run ended early'}; the {len(samples)} writes "
                  "that had reached the host as they were made are kept")  # fmt: skip
    out.link_lost = True
    return samples


def _collect(
    target: Target, armed: list[CaptureSource], run: RunDir, out: _Outcome, notices: _Notices
) -> None:
    """Each armed capture joins its data to the samples and writes its tables."""
    assert out.samples is not None
    for src in armed:
        try:
            res = src.collect(target, out.samples, run.path, out.session.capture_info())
        except DroidoomError as e:
            out.captures[src.name] = {"error": str(e)}
            notices(f"capture {src.name} failed: {e}")
            continue
        out.samples = res.samples
        out.captures[src.name] = res.meta
        if res.meta.get("warning"):  # e.g. the trace lost events: said, not only stored
            notices(f"capture {src.name}: {res.meta['warning']}")
        for name, table in res.tables.items():
            store.write_table(run.path / f"{name}.parquet", table)


def _save(
    target: Target, setup: _Setup, run: RunDir, out: _Outcome, notices: _Notices
) -> RunResult:
    """-> run dir: status and samples saved, then the target cleaned up (never the other
    way round: from the save on, a dropped link or a full disk costs nothing measured)."""
    status = RunStatus.COMPLETE if out.reason is None else RunStatus.PARTIAL
    samples, session, meta = out.samples, out.session, run.meta
    assert samples is not None
    meta.update(
        status=status,
        reason=out.reason,
        finished=now(),
        helper_exit=session.rc,
        writes_recorded=len(samples),
        # What the device reported having recorded (its progress stream): it keeps them
        # in its records file even when they never reached this host.
        writes_on_device=session.done,
        targets=[session.targets[k] for k in sorted(session.targets)],
        points=session.points,
        writer=session.events["writer"].fields if "writer" in session.events else None,
        captures=out.captures,
        notices=notices.texts,
    )
    _writer_notice(meta["writer"], setup.plan.writer[0], notices)
    meta["notices"] = notices.texts
    try:
        kept = runsave.save(run.path, samples, meta, target.recover_hint(run.path))
    except BaseException:
        target.keep_workdir()  # nothing saved: the records file is all there is
        raise
    if kept < len(samples):
        target.keep_workdir()  # `recover` fetches the rest from there
        samples = samples.iloc[:kept]
        status = meta["status"]
    after, warnings = runsave.cleanup(target, run.lock, status, out.remote_files, out.link_lost)
    if out.link_lost and target.ephemeral:
        warnings = []  # its lock lived in the guest and ended with it: nothing stays stale
    for w in warnings:
        notices(f"cleanup: {w}")
    meta["device_activity"] = {"before": run.lock.before, "after": after}
    if out.during:  # sampled at some point (not in a VM, not a run cut before its first)
        meta["device_activity"]["during"] = out.during
    for what in disturbances(meta):  # the verdict says "disturbed" too (analysis.verdict)
        notices(f"disturbed: {what}")
    meta["notices"] = notices.texts
    with suppress(OSError):
        record.write(run.path, meta)
    return RunResult(run.path, status, samples, meta, tuple(notices.texts))


def _push_text(target: Target, text: str, remote: str) -> None:
    """Push `text` to `remote` by way of a temp file, removed on every path (a full
    TMPDIR used to leak one per run, and the error blamed the run directory)."""
    fd, name = tempfile.mkstemp(prefix="droidoom-plan-", suffix=".txt")
    tmp = Path(name)
    try:
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
        except OSError as e:
            raise runsave.in_temp_dir(e, tmp.parent) from e
        target.push(tmp, remote)
    finally:
        tmp.unlink(missing_ok=True)


def _naming(error: str, records: str) -> str:
    """The helper's error, naming the records file when it speaks of it without its
    path (e.g. a full disk while recording: which disk is full?)."""
    if "records file" in error and records not in error:
        return f"{error} ({records})"
    return error


def _warmups(plan: Plan) -> int:
    return sum(p.warmup * len(plan.targets) for p in plan.points)
