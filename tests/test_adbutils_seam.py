"""The adbutils seam: the installed adbutils must still have exactly the private layout
droidoom/targets/adbutils_seam.py relies on, and a changed layout must fail loudly.

If a test here fails after an adbutils upgrade, do not relax it: re-check the seam
module against the new adbutils and update SUPPORTED.
"""

from __future__ import annotations

import socket

import adbutils
import pytest
from adb_env import free_port
from adbutils.errors import AdbConnectionError, AdbError

from droidoom.errors import PermanentTargetError, TransientTargetError
from droidoom.targets import adbutils_seam as seam
from droidoom.targets.adb_conn import translate
from droidoom.targets.select import AdbServer

pytest_plugins = ["adb_fixtures"]


def test_installed_adbutils_has_the_layout_we_rely_on():
    assert seam.layout_problems() == [], seam.installed_version()
    cls = adbutils.AdbConnection
    assert callable(cls.__dict__["_safe_connect"]) and callable(cls._create_socket)
    assert {"_safe_connect", "_AdbConnection__conn"} <= set(cls.__init__.__code__.co_names)
    seam.check_layout()  # no error


def test_hook_returns_the_socket_adbutils_then_uses(adb_server):
    """Against a real private adb server: our `_safe_connect` is what adbutils calls, the
    socket it returns is the one in the private slot and behind `conn`, and our close
    empties the slot the way adbutils' own close does."""
    c = seam.NoSpawnConnection("127.0.0.1", adb_server.port)
    sock = c.__dict__["_AdbConnection__conn"]
    assert isinstance(sock, socket.socket) and c.conn is sock and not c.closed
    c.send_command("host:version")
    c.check_okay()
    assert int(c.read_string_block(), 16) > 0  # a real server answered on that socket
    c.close()
    assert c.closed and sock.fileno() == -1
    with pytest.raises(AdbError, match="closed"):
        c.conn  # noqa: B018 - the property is the check


def test_no_server_is_a_typed_error_and_none_is_started():
    port = free_port()
    with pytest.raises(AdbConnectionError):
        seam.NoSpawnConnection("127.0.0.1", port)
    assert not AdbServer("127.0.0.1", port).listening()  # no `adb start-server` fallback
    err = translate(AdbConnectionError("connect to adb server failed"), "dev", AdbServer())
    assert isinstance(err, TransientTargetError) and "went away" in str(err)


@pytest.mark.parametrize(
    "attr", ["_safe_connect", "_create_socket"], ids=["hook-renamed", "socket-maker-renamed"]
)
def test_a_changed_layout_fails_loudly(monkeypatch, attr):
    """A renamed private method is refused before any connection is made, with the
    installed and supported versions in the message (no silent fallback)."""
    monkeypatch.delattr(adbutils.AdbConnection, attr)
    seam.check_layout.cache_clear()
    try:
        with pytest.raises(PermanentTargetError) as e:
            seam.NoSpawnConnection("127.0.0.1", free_port())
    finally:
        monkeypatch.undo()
        seam.check_layout.cache_clear()
    msg = str(e.value)
    assert attr in msg and seam.installed_version() in msg and seam.SUPPORTED[-1] in msg


@pytest.mark.parametrize(
    ("text", "state", "error"),
    [
        ("device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS", "unauthorized",
         PermanentTargetError),
        ("device 'R58M' not found", "gone", PermanentTargetError),
        ("device offline", "offline", TransientTargetError),
        ("closed", None, TransientTargetError),
    ],
)  # fmt: skip
def test_server_fail_texts_are_classified_in_the_seam(text, state, error):
    assert seam.device_state(AdbError(text)) == state
    assert type(translate(AdbError(text), "dev", AdbServer())) is error
