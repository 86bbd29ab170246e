"""The one place droidoom relies on adbutils internals, and on the text of its errors.

Checked against adbutils 2.12.0 (pyproject.toml asks for >=2.12,<3). What is checked
at run time is the layout below, not the version number: tests/test_adbutils_seam.py
and `check_layout()` fail loudly when the installed adbutils no longer has it.

Why private parts at all:

- `AdbConnection.__init__` calls `self._safe_connect()`, which runs `adb start-server`
  when the server is unreachable. A fresh default server scans USB and multicasts mDNS
  on the network, and would make an unreachable `--adb-port` look like "no device";
  droidoom must fail instead. Overriding `_safe_connect` is the only hook: `__init__`
  calls it directly.
- `AdbConnection.close()` sleeps 10 ms after `shutdown()`; the server needs no such
  grace and a profile opens ~10 connections, so the sleep was a third of our cost. A
  faster close must clear the name-mangled socket slot `_AdbConnection__conn`, which
  `conn` and `closed` read.

No silent fallback: `check_layout()` (run before the first connection) raises a
PermanentTargetError naming the installed and the supported adbutils versions when any
of those parts moved, rather than let a changed adbutils start a server behind our back.

The streaming shell-v2 client (adb_conn.AdbProcess) keeps borrowing an adbutils
connection rather than opening its own TCP socket (`host:transport:SERIAL`, then
`shell,v2,raw:...`): once open it uses only public methods (`send_command`,
`check_okay`, `read_exact`, `conn`), and owning it would not shrink this seam (every
other call, push and pull included, still needs the no-spawn connection and the fast
close), while it would duplicate adbutils' transport selection and FAIL parsing.

Error classification: adbutils gives types for a dead server (AdbConnectionError, which
`NoSpawnConnection` also raises for a connect timeout) and for timeouts (AdbTimeout).
What the server or device says (unauthorized, not found, offline, a refused push, a
missing file) arrives only as the text of a plain AdbError: those text matches live
here, each with the wording it matches.
"""

from __future__ import annotations

import functools
import socket
from typing import Literal

import adbutils
from adbutils.errors import AdbConnectionError, AdbError, AdbTimeout

from ..errors import PermanentTargetError

#: adbutils versions whose private layout this module was checked against.
SUPPORTED = ("2.12",)
#: What adbutils lets escape when a connection breaks (it asserts and unpacks freely).
WIRE_ERRORS = (AdbError, EOFError, OSError, AssertionError, ValueError)
_SLOT = "_AdbConnection__conn"  # AdbConnection's name-mangled `self.__conn`


def installed_version() -> str:
    """The installed adbutils version, e.g. "2.12.0"."""
    return str(getattr(adbutils, "__version__", "unknown"))


def layout_problems() -> list[str]:
    """What of the private layout we rely on is missing from the installed adbutils."""
    cls = adbutils.AdbConnection
    problems = []
    init = getattr(cls.__init__, "__code__", None)
    called = set(init.co_names) if init else set()
    if not callable(cls.__dict__.get("_safe_connect")):
        problems.append("AdbConnection._safe_connect is not a method")
    elif "_safe_connect" not in called:
        problems.append("AdbConnection.__init__ no longer calls _safe_connect")
    if not callable(getattr(cls, "_create_socket", None)):
        problems.append("AdbConnection._create_socket is not a method")
    if _SLOT not in called:
        problems.append(f"AdbConnection.__init__ no longer sets {_SLOT}")
    prop = cls.__dict__.get("conn")
    getter = getattr(getattr(prop, "fget", None), "__code__", None)
    if getter is None or _SLOT not in getter.co_names:
        problems.append(f"AdbConnection.conn no longer reads {_SLOT}")
    return problems


@functools.cache
def check_layout() -> None:
    """Raise PermanentTargetError unless adbutils has the private layout we rely on."""
    problems = layout_problems()
    if problems:
        raise PermanentTargetError(
            f"adbutils {installed_version()} is installed, but droidoom was checked "
            f"against adbutils {' / '.join(SUPPORTED)} and relies on parts of it that "
            f"changed ({'; '.join(problems)}): install a supported version, e.g. "
            f"`pip install 'adbutils=={SUPPORTED[-1]}.*'`"
        )


class NoSpawnConnection(adbutils.AdbConnection):  # type: ignore[misc]  # untyped base
    """An adbutils connection that fails when the server is unreachable (never runs
    `adb start-server`) and closes without adbutils' 10 ms sleep."""

    def __init__(self, host: str, port: int):
        check_layout()
        self._sock: socket.socket | None = None
        super().__init__(host, port)
        if self.__dict__.get(_SLOT) is not self._sock:  # the hook was not ours after all
            self._drop()
            check_layout.cache_clear()
            raise PermanentTargetError(
                f"adbutils {installed_version()} did not connect through droidoom's "
                f"hook; supported: adbutils {' / '.join(SUPPORTED)}"
            )

    def _safe_connect(self) -> socket.socket:
        try:
            self._sock = self._create_socket()
        except AdbTimeout as e:  # a connect timeout: the server is as gone as refused
            raise AdbConnectionError(f"connect to adb server failed: {e}") from e
        return self._sock

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        self.__dict__[_SLOT] = None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self._drop()


def server_unreachable(e: BaseException) -> bool:
    """Did the connection to the adb server itself fail (typed by adbutils and us)?"""
    return isinstance(e, AdbConnectionError)


DeviceState = Literal["unauthorized", "offline", "gone"]


def device_state(e: BaseException) -> DeviceState | None:
    """The device state an adb server FAIL names; only the text says it (server
    messages: "device unauthorized.", "device offline", "device 'X' not found")."""
    text = str(e)
    if "unauthorized" in text:
        return "unauthorized"
    if "offline" in text:
        return "offline"
    if "not found" in text:
        return "gone"
    return None


def push_refused(e: BaseException) -> bool:
    """A sync SEND the device answered with FAIL: adbutils raises AdbError("FAIL") and
    drops the device's reason (permissions, read-only, full)."""
    return isinstance(e, AdbError) and str(e) == "FAIL"


def pull_missing(e: BaseException) -> bool:
    """A sync RECV of a file that is not there: adbd's FAIL text ("No such file or
    directory", or older adbd's "open failed")."""
    return isinstance(e, AdbError) and ("No such file" in str(e) or "open failed" in str(e))
