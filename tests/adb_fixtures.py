"""pytest fixtures for tests that need an adb server and loopback adbd peers.

Register from ``tests/conftest.py`` (tests/ is on sys.path under pytest's default
``prepend`` import mode)::

    pytest_plugins = ["adb_fixtures"]

Fixtures:

* ``adb_server`` (session): ``adb_env.AdbServer`` running ``$DROIDOOM_TEST_ADB`` or Debian's
  adb (else the adbutils-bundled one) on a private port.
* ``each_adb_server`` (module): parametrized over every adb binary present (ids
  ``adb-debian`` / ``adb-bundled``).
* ``adb_peer_factory`` (function): ``make(props=None, *, server=None, serial=None,
  connect=True, peer_class=PeerProcess, **peer kwargs) -> PeerProcess``; ``server`` defaults
  to ``adb_server``; ``peer_class`` may be e.g. ``adb_env.ShellUidPeer``.
  A connected peer has ``.server`` and ``.device`` (``adbutils.AdbDevice`` in state
  ``device``).  At teardown every peer is disconnected and stopped.
* ``adb_peer`` (function): one connected peer with default props on ``adb_server``.
* ``adb_device`` (function): ``adb_peer.device``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil

import pytest
from adb_env import (
    AdbServer,
    PeerProcess,
    adb_binary_id,
    available_adb_binaries,
    default_adb_binary,
)

_serials = itertools.count(1)


@pytest.fixture(scope="session")
def adb_server():
    with AdbServer(default_adb_binary()) as server:
        yield server


@pytest.fixture(scope="module", params=available_adb_binaries(), ids=adb_binary_id)
def each_adb_server(request):
    with AdbServer(request.param) as server:
        yield server


@pytest.fixture
def adb_peer_factory(request):
    made: list[PeerProcess] = []

    def make(
        props=None, *, server: AdbServer | None = None, serial=None, connect=True,
        peer_class=PeerProcess, **kw,
    ):  # fmt: skip
        server = server or request.getfixturevalue("adb_server")
        if serial is None:  # each peer is its own phone: own ro.serialno (device lock name)
            props = {"ro.serialno": f"LOOPBACK{os.getpid()}X{next(_serials)}", **(props or {})}
        peer = peer_class(props, serial=serial, **kw)
        made.append(peer)
        peer.start()
        peer.server = server
        peer.device = server.connect(peer) if connect else None
        return peer

    yield make
    for peer in reversed(made):
        server = getattr(peer, "server", None)
        if server is not None:
            with contextlib.suppress(Exception):
                server.disconnect(peer)
        peer.stop()


@pytest.fixture
def adb_peer(adb_peer_factory):
    return adb_peer_factory()


@pytest.fixture
def adb_device(adb_peer):
    return adb_peer.device


@pytest.fixture
def device_dir():
    """A private device-side working directory (see adb_env.make_device_dir)."""
    from adb_env import make_device_dir

    path = make_device_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)
