"""SIGTERM and SIGHUP end a run like Ctrl-C does: partial run saved, tracing restored.

CI timeouts and job cancellation send SIGTERM; a closed ssh session sends SIGHUP. Python's
default for both is to die on the spot, losing the run. `install()` turns the first of
them into `Terminated` (a KeyboardInterrupt, so every Ctrl-C path also handles it) raised
in the main thread; later ones are ignored so the cleanup they started can finish.
The process then exits 128 + the signal number (143, 129), as a shell reports it.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGHUP)


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
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in HANDLED:
        if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup: the user asked to ignore it
            signal.signal(sig, _handler)


def describe(exc: BaseException) -> str:
    """'interrupted by SIGTERM' / 'interrupted by Ctrl-C' for a KeyboardInterrupt."""
    return f"interrupted by {exc.name}" if isinstance(exc, Terminated) else "interrupted by Ctrl-C"


def exit_code(exc: BaseException | None) -> int:
    """The shell's code for death by this signal: 143 SIGTERM, 129 SIGHUP, 130 Ctrl-C."""
    for e in (exc, getattr(exc, "__cause__", None), getattr(exc, "__context__", None)):
        if isinstance(e, Terminated):
            return 128 + e.signum
    return 130
