"""Which adb server, and never this host by mistake (issue 13.4, issue 9.4).

A user who names a server (--adb-host/--adb-port or adb's own variables) and cannot
reach it gets an error, not a profile of the machine running droidoom. adb's variables
are read as the adb client reads them: ADB_SERVER_SOCKET first, then
ANDROID_ADB_SERVER_ADDRESS + ANDROID_ADB_SERVER_PORT.
"""

from __future__ import annotations

import os

import pytest
from adb_env import AdbServer, free_port
from conftest import run_cli

from droidoom.errors import PermanentTargetError, UsageError
from droidoom.targets.select import SERVER_ENV, parse_socket_spec, select_target
from droidoom.targets.select import AdbServer as Server


def clean_env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*SERVER_ENV, "ANDROID_SERIAL")}
    return dict(env, HOME=str(tmp_path), ADB_MDNS="0", ADB_LIBUSB="0", ADB_EMU="0", **extra)


@pytest.mark.parametrize(
    "args, env",
    [
        (["--adb-port", "{port}"], {}),
        (["--adb-host", "no.such.host.invalid"], {}),
        ([], {"ANDROID_ADB_SERVER_PORT": "{port}"}),
        ([], {"ANDROID_ADB_SERVER_ADDRESS": "no.such.host.invalid"}),
        ([], {"ADB_SERVER_SOCKET": "tcp:127.0.0.1:{port}"}),
    ],
    ids=["adb-port", "adb-host", "env-port", "env-address", "env-socket"],
)
def test_a_named_but_unreachable_server_is_an_error(tmp_path, args, env):
    port = str(free_port())
    args = [a.format(port=port) for a in args]
    env = {k: v.format(port=port) for k, v in env.items()}
    out = tmp_path / "runs"
    p = run_cli("profile", "--quick", "-o", str(out), *args, env=clean_env(tmp_path, **env))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "no adb server answers" in p.stderr and "--local" in p.stderr
    assert "Traceback" not in p.stderr
    assert not out.exists() or not any(out.iterdir())  # nothing was measured


def test_socket_spec_forms():
    assert parse_socket_spec("tcp:5038") == ("127.0.0.1", 5038)
    assert parse_socket_spec("tcp:lab1:5037") == ("lab1", 5037)
    assert parse_socket_spec("tcp:[::1]:5039") == ("::1", 5039)
    with pytest.raises(UsageError, match="TCP only"):
        parse_socket_spec("localabstract:adb")
    with pytest.raises(UsageError, match="port"):
        parse_socket_spec("tcp:lab1:http")


def test_precedence_is_the_adb_clients(monkeypatch):
    for v in SERVER_ENV:
        monkeypatch.delenv(v, raising=False)
    assert not Server.from_env().explicit and str(Server.from_env()) == "127.0.0.1:5037"
    monkeypatch.setenv("ANDROID_ADB_SERVER_ADDRESS", "lab2")
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "6000")
    assert (Server.from_env().host, Server.from_env().port) == ("lab2", 6000)
    monkeypatch.setenv("ADB_SERVER_SOCKET", "tcp:lab3:7000")
    s = Server.from_env()
    assert (s.host, s.port, s.explicit) == ("lab3", 7000, True)
    s = Server.from_env(port=8000)  # an option overrides every variable, as -P does
    assert (s.host, s.port) == ("lab2", 8000)
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "0")
    monkeypatch.delenv("ADB_SERVER_SOCKET")
    with pytest.raises(UsageError, match="ANDROID_ADB_SERVER_PORT"):
        Server.from_env()


def test_named_server_with_no_device_is_an_error_unnamed_falls_back(monkeypatch):
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    with AdbServer() as srv:
        t, notice = select_target(server=Server("127.0.0.1", srv.port))
        assert type(t).__name__ == "LocalTarget" and "profiling this host" in notice
        with pytest.raises(PermanentTargetError, match="has no device"):
            select_target(server=Server("127.0.0.1", srv.port, explicit=True))


@pytest.mark.parametrize("how", ["socket", "address"])
def test_adb_variables_reach_the_server(adb_peer, tmp_path, how):
    port = adb_peer.server.port
    env = (
        {"ADB_SERVER_SOCKET": f"tcp:127.0.0.1:{port}"}
        if how == "socket"
        else {"ANDROID_ADB_SERVER_ADDRESS": "127.0.0.1", "ANDROID_ADB_SERVER_PORT": str(port)}
    )
    p = run_cli("devices", env=clean_env(tmp_path, COLUMNS="200", **env))
    assert p.returncode == 0, p.stderr
    assert adb_peer.serial in p.stdout and f"127.0.0.1:{port}" in p.stdout


def test_one_server_must_be_up_check(tmp_path):
    """Commands that need a server (devices, clean, recover, profile --all, the adb client)
    share one check: its error says how to start a server, and none is started."""
    import socket

    from droidoom.errors import TransientTargetError

    dead = Server("127.0.0.1", free_port())
    with pytest.raises(TransientTargetError, match="adb start-server"):
        dead.require_up()
    with pytest.raises(UsageError, match=f"no adb server at {dead}"):
        dead.require_up(UsageError)
    with socket.create_server(("127.0.0.1", 0)) as listener:  # something listening
        live = Server("127.0.0.1", listener.getsockname()[1])
        assert live.require_up() is live
    for cmd in (["profile", "--all", "-o", str(tmp_path / "runs")], ["devices"]):
        p = run_cli(*cmd, "--adb-port", str(dead.port), env=clean_env(tmp_path))
        assert p.returncode == 2, p.stdout + p.stderr
        assert f"no adb server at {dead}: start one with `adb start-server`" in p.stderr
    assert not dead.listening()  # neither command started one
