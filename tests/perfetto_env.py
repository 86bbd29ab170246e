"""The traced stand-in for tests: a root daemon the peer's `perfetto` stand-in talks to.

``TracedStandin`` starts tests/peer_tools/_traced.py (this interpreter, as root) on a
private consumer socket and creates the phone's /data/misc/perfetto-traces (root:shell
0773, as init.rc makes it) when missing. Peers started while ``env`` is applied (e.g.
``monkeypatch.setenv(*traced.env_item)``) inherit PERFETTO_CONSUMER_SOCK_NAME, so their
`perfetto` reaches this daemon. The ``traced`` fixture does both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from adb_env import SHELL_UID
from adbd_peer import pdeathsig_preexec

TRACED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_tools", "_traced.py")
TRACES_DIR = "/data/misc/perfetto-traces"


class TracedStandin:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="traced-standin-")
        os.chmod(self.dir, 0o755)  # uid 2000 must reach the socket
        self.socket = os.path.join(self.dir, "traced_consumer")
        self.proc: subprocess.Popen | None = None

    @property
    def env_item(self) -> tuple[str, str]:
        return "PERFETTO_CONSUMER_SOCK_NAME", self.socket

    def start(self, timeout: float = 30.0, env: dict | None = None) -> TracedStandin:
        if not os.path.isdir(TRACES_DIR):
            os.makedirs(TRACES_DIR, exist_ok=True)
            os.chown(TRACES_DIR, 0, SHELL_UID)
            os.chmod(TRACES_DIR, 0o773)
        self.proc = subprocess.Popen(
            [sys.executable, TRACED, "--socket", self.socket],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=pdeathsig_preexec, env={**os.environ, **(env or {})},
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        line = b""
        while not line.startswith(b"TRACED_STANDIN_READY"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.poll() is not None else b""
                self.stop()
                raise RuntimeError(f"traced stand-in did not start: {err.decode()[-2000:]}")
            line = self.proc.stdout.readline()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def traced(monkeypatch):
    """A running traced stand-in; peers created afterwards in this test reach it."""
    if os.geteuid() != 0 or not os.path.isdir("/sys/kernel/tracing/instances"):
        pytest.skip("the traced stand-in needs root and tracefs instances")
    t = TracedStandin().start()
    monkeypatch.setenv(*t.env_item)
    yield t
    t.stop()
