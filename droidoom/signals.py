"""SIGTERM and SIGHUP end a run like Ctrl-C does: partial run saved, tracing restored.

CI timeouts and job cancellation send SIGTERM; a closed ssh session sends SIGHUP. Python's
default for both is to die on the spot, losing the run. `install()` turns the first of
them into `Terminated` (a KeyboardInterrupt, so every Ctrl-C path also handles it) raised
in the main thread; later ones are ignored so the cleanup they started can finish.
The process then exits 128 + the signal number (143, 129), as a shell reports it.

While a run saves what it measured, `SaveGuard` holds off every further stop request
(Ctrl-C included): a second Ctrl-C in the middle of writing the run used to lose it all.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGHUP)
#: The signals that ask a run to stop (and a save to be cut short, were it not guarded).
STOPS = (signal.SIGINT, *HANDLED)
#: Said on stderr for each stop request a save holds off.
SAVING = "saving, please wait: the run is being written to disk (Ctrl-C is ignored until then)"
#: Set by `install()`: this process (the CLI) exits once a run has stopped.
_exits_on_stop = False


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by `signum` (SIGTERM or SIGHUP)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


#: The stop request `_handler` raised last (None: none, or only Ctrl-C). Typer turns any
#: KeyboardInterrupt that leaves a command into exit code 130, losing which signal it was:
#: the entry point looks here for it.
last: Terminated | None = None


def _handler(signum: int, frame: FrameType | None) -> None:
    global last
    for sig in HANDLED:  # one stop request is enough: let the cleanup run undisturbed
        signal.signal(sig, signal.SIG_IGN)
    last = Terminated(signum)
    raise last


def install() -> None:
    """Route SIGTERM/SIGHUP to `Terminated` (main thread only; no-op elsewhere)."""
    global _exits_on_stop
    if threading.current_thread() is not threading.main_thread():
        return
    _exits_on_stop = True
    for sig in HANDLED:
        if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup: the user asked to ignore it
            signal.signal(sig, _handler)


def stop_exception(signum: int) -> KeyboardInterrupt:
    """What a stop request raises: KeyboardInterrupt for Ctrl-C, else `Terminated`."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


class SaveGuard:
    """A run's stop requests: the first raises (KeyboardInterrupt, `Terminated`) so the
    run stops and saves; from then on, or from `hold()` on, each one is reported
    ("saving, please wait") and ignored until the guard is left, so nothing cuts the
    save short. `deferred` is the first request held off (None if none).

    Leaving it restores the handlers, except in the CLI (`install()` was called) after a
    stop request: the process is on its way out, and later requests stay ignored so
    that the exit and its cleanup (the local workdir) finish too.

    Only the main thread receives signals: elsewhere (a farm's worker) it does nothing.
    A signal ignored on entry (nohup, a background job) stays ignored.
    """

    def __init__(self, say: Callable[[str], None] | None = None):
        self.holding = False
        self.deferred: int | None = None
        self.stopped = False  # a stop request arrived (raised or held off)
        self._say = say or _say_stderr
        self._old: dict[int, Any] = {}

    def __enter__(self) -> SaveGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in STOPS:
                old = signal.getsignal(sig)
                if old is not signal.SIG_IGN:
                    self._old[sig] = old
                    signal.signal(sig, self._handler)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        linger = self.stopped and _exits_on_stop
        for sig, old in self._old.items():
            signal.signal(sig, signal.SIG_IGN if linger else old)
        self._old.clear()

    def hold(self) -> None:
        """From now on hold off stop requests: what is left is saving."""
        self.holding = True

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.stopped = True
        if not self.holding:
            # Holding starts in the handler itself, before the exception is even
            # raised: a burst of Ctrl-C cannot land between the two.
            self.holding = True
            raise stop_exception(signum)
        if self.deferred is None:
            self.deferred = signum
        self._say(SAVING)


def _say_stderr(text: str) -> None:
    # A raw write: the handler may run in the middle of the console's own output.
    try:
        os.write(2, f"{text}\n".encode())
    except OSError:
        pass


def describe(exc: BaseException) -> str:
    """'interrupted by SIGTERM' / 'interrupted by Ctrl-C' for a KeyboardInterrupt."""
    return f"interrupted by {exc.name}" if isinstance(exc, Terminated) else "interrupted by Ctrl-C"


def exit_code(exc: BaseException | None) -> int:
    """The shell's code for death by this signal: 143 SIGTERM, 129 SIGHUP, 130 Ctrl-C."""
    for e in (exc, getattr(exc, "__cause__", None), getattr(exc, "__context__", None)):
        if isinstance(e, Terminated):
            return 128 + e.signum
    return 130
