"""What the helper said during one run, and how the run ended.

`stream` feeds the helper's stdout to a `Session` (reporting progress as it goes);
`classify_end` turns the session's events, the helper's exit code and what stopped the
stream into the run's status: complete (no reason) or partial with one reason. It is
pure: no target, no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .. import signals
from ..capture.base import CaptureRunInfo, CaptureSource
from ..errors import TransientTargetError
from ..protocol import EXIT_OK, Event, parse_line
from ..targets.base import Process


@dataclass
class Progress:
    """Callbacks the runner reports to (the CLI draws a rich progress bar with them)."""

    start: Callable[[int], None] = lambda total: None  # total timed writes
    advance: Callable[[int], None] = lambda done: None  # writes done so far
    point: Callable[[int, int], None] = lambda idx, population: None
    notice: Callable[[str], None] = lambda text: None


@dataclass
class Session:
    """Mutable state gathered from the helper's stdout during one run."""

    events: dict[str, Event] = field(default_factory=dict)  # last hello/facts/calib/done/error
    targets: dict[int, dict[str, str]] = field(default_factory=dict)  # idx -> target line
    points: list[dict[str, str]] = field(default_factory=list)
    done: int = 0
    # how reading ended (see `stream`)
    rc: int | None = None  # the helper's (or its outermost wrapper's) exit code
    stopped: str | None = None  # why the host stopped reading early
    interrupted: KeyboardInterrupt | None = None  # Ctrl-C (or SIGTERM/SIGHUP) while reading
    link_lost: bool = False  # the device went away while reading

    def feed(self, ev: Event, progress: Progress) -> None:
        """Take one event; report target trouble, sweep points and progress."""
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

    def capture_info(self) -> CaptureRunInfo:
        """The helper's pid and its targets' pids, for capture sources to join on."""
        hello = self.events.get("hello")
        return CaptureRunInfo(
            helper_pid=hello.int("pid", 0) if hello else 0,
            targets={
                k: {"kind": v.get("kind"), "pid": int(v.get("pid", 0))}
                for k, v in self.targets.items()
            },
        )


@dataclass(frozen=True)
class Ending:
    """How the helper's run ended, as far as its stdout and exit code tell."""

    reason: str | None  # None: complete; else why the run is partial
    link_lost: bool  # the device (not the helper) went away: do not wait on it at cleanup
    fatal: str | None = None  # the helper failed before any write: no run to keep


def classify_end(
    events: Mapping[str, Event],
    writes_done: int,
    rc: int | None,
    *,
    stopped: str | None = None,
    link_lost: bool = False,
    wrapper_failure: str | None = None,
    remote: bool = False,
) -> Ending:
    """Status of a finished helper stream.

    `events`/`writes_done` are the session's; `rc` the helper's (or its wrapper's) exit code;
    `stopped` why the host stopped reading early (Ctrl-C, cancel, a lost link), with
    `link_lost` set when that was the device going away; `wrapper_failure` what a wrapper
    (perf, su) said when the helper never started; `remote` is true off the local host,
    where a stream ending without `done` means the device disconnected.
    """
    reason = stopped
    # A vanished device shows up as the stream ending without a `done` line.
    if reason is None and "done" not in events and "error" not in events:
        reason = wrapper_failure or (
            f"the helper stopped without finishing (exit {rc}); device disconnected?"
        )
        link_lost = wrapper_failure is None and remote
    err = events.get("error")
    if err is not None and writes_done == 0:
        return Ending(reason, link_lost, fatal=err.fields.get("msg", "helper failed"))
    if err is not None:
        reason = reason or f"helper error: {err.fields.get('msg', '?')}"
    done = events.get("done")
    if reason is None and done is not None and done.fields.get("status") != "complete":
        reason = f"the helper was interrupted ({done.fields.get('reason', '?')})"
    if reason is None and rc not in (EXIT_OK, None):
        reason = f"the helper exited with {rc}"
    return Ending(reason, link_lost)


def stream(
    proc: Process,
    session: Session,
    progress: Progress,
    cancel: threading.Event | None,
    line_timeout: float,
) -> None:
    """Feed the helper's stdout to `session` until it ends, Ctrl-C, a lost link (or
    `line_timeout` seconds without a line) or `cancel`; then close the process and keep
    its exit code (also when reading raised)."""
    try:
        for line in proc.lines(timeout=line_timeout):
            ev = parse_line(line)
            if ev:
                session.feed(ev, progress)
            if cancel is not None and cancel.is_set():
                session.stopped = "cancelled"
                break
    except KeyboardInterrupt as e:
        session.interrupted, session.stopped = e, signals.describe(e)
    except TransientTargetError as e:
        session.stopped, session.link_lost = str(e), True
    finally:
        session.rc = proc.close()


def wrapper_failure(
    armed: Sequence[CaptureSource], proc: Process, session: Session
) -> str | None:
    """The helper never said hello: a wrapper (perf, su...) failed, not the device.
    Its own stderr and exit code say why."""
    if "hello" in session.events:
        return None
    rc = session.rc
    tail = list(proc.stderr_tail)
    for src in reversed(armed):  # outermost wrapper first
        why = src.diagnose(tail, rc)
        if why:
            return why
    lines = [ln.strip() for ln in tail if ln.strip()]
    if rc not in (None, 0) and lines:
        return f"the command failed (exit {rc}) before the helper started: {' | '.join(lines[-3:])}"
    return None
