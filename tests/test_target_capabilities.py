"""Transport is not a string: what differs between targets is asked of the Target (its
capabilities), never by testing a transport name outside droidoom/targets; and a VM's
requests, SPAWN included, go over its channel one at a time."""

from __future__ import annotations

import ast
import re
import shlex
import threading
from pathlib import Path

import pytest

import droidoom
from droidoom.private import private_dir
from droidoom.targets.adb_server import AdbServer
from droidoom.targets.base import Process, recover_command
from droidoom.targets.local import LocalTarget
from droidoom.targets.select import recorded_in_vm, recorded_reach, recover_hint
from droidoom.targets.vm import VmTarget

PKG = Path(droidoom.__file__).parent
TRANSPORTS = {"local", "adb", "qemu"}
#: attributes only some targets (or processes) had, once read with getattr()
OPTIONAL = {"keep_workdir", "stderr_tail", "serial", "server", "lock_home"}
TARGET_CLASSES = {"LocalTarget", "AdbTarget", "VmTarget", "FarmTarget"}


def _outside_targets() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if PKG / "targets" not in p.parents)


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _mentions_transport(node: ast.AST) -> bool:
    """`transport`, `x.transport`, `x["transport"]`, `x.get("transport")` in `node`."""
    for n in ast.walk(node):
        if _name(n) == "transport":
            return True
        if isinstance(n, ast.Constant) and n.value == "transport":
            return True
    return False


def transport_tests(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of each place that branches on a transport: a comparison with a
    transport name or with a transport field, isinstance() with a Target class, a
    getattr() of an attribute only some targets have."""
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Compare):
            sides = [n.left, *n.comparators]
            names = {s.value for s in sides if isinstance(s, ast.Constant)}
            for s in sides:  # `x in ("local", "adb")`
                if isinstance(s, ast.Tuple | ast.List | ast.Set):
                    names |= {e.value for e in s.elts if isinstance(e, ast.Constant)}
            if names & TRANSPORTS and any(_mentions_transport(s) for s in sides):
                found.append((n.lineno, "compares a transport field with a transport name"))
            elif any(_mentions_transport(s) for s in sides):
                found.append((n.lineno, "compares a transport field"))
        elif isinstance(n, ast.Call) and _name(n.func) == "isinstance" and len(n.args) == 2:
            classes = n.args[1].elts if isinstance(n.args[1], ast.Tuple) else [n.args[1]]
            if {_name(c) for c in classes} & TARGET_CLASSES:
                found.append((n.lineno, "isinstance() with a Target class"))
        elif isinstance(n, ast.Call) and _name(n.func) == "getattr" and len(n.args) >= 2:
            arg = n.args[1]
            if isinstance(arg, ast.Constant) and arg.value in OPTIONAL:
                found.append((n.lineno, f"getattr(..., {arg.value!r})"))
    return found


#: the same, as text: a comparison the AST walk could miss in a new spelling
_TEXT = re.compile(
    r"""transport["')\]]*\s*(==|!=|\bin\b|\bnot in\b)|(==|!=)\s*["'](local|adb|qemu)["']"""
)


def test_no_module_outside_targets_tests_a_transport():
    bad = []
    for path in _outside_targets():
        text = path.read_text()
        rel = path.relative_to(PKG.parent)
        bad += [f"{rel}:{line}: {what}" for line, what in transport_tests(ast.parse(text))]
        for i, line in enumerate(text.splitlines(), 1):
            if _TEXT.search(line.split("#", 1)[0]):
                bad.append(f"{rel}:{i}: {line.strip()}")
    assert not bad, "ask the Target (droidoom/targets/base.py) instead:\n" + "\n".join(bad)


@pytest.mark.parametrize("code", [
    'if target.facts().transport == "local": pass',
    'x = facts.transport != "adb"',
    "y = transport == 'local'",
    'ok = meta["target"].get("transport") in ("local", "adb")',
    'if isinstance(target, AdbTarget): pass',
    'getattr(target, "keep_workdir", lambda: None)()',
    'tail = getattr(proc, "stderr_tail", [])',
])  # fmt: skip
def test_the_check_sees_each_old_spelling(code):
    """The check is not vacuous: each kind of test the old code had is caught."""
    assert transport_tests(ast.parse(code)), code


def test_local_capabilities(tmp_path):
    with LocalTarget() as t:
        assert t.is_remote is False and t.lock_key() == ""
        assert t.lock_home() == str(private_dir())  # never the shared temp directory
        run = tmp_path / "run 1"
        hint = t.recover_hint(run)
        assert hint and shlex.split(hint) == ["droidoom", "recover", "--local", str(run)]
        assert t.shell_hint("rm -r /x") == "rm -r /x"
        wd = t.workdir()
        t.keep_workdir()  # the workdir outlives close(): recover --local needs it
    assert Path(wd).is_dir()
    Path(wd).rmdir()


def test_recorded_runs_map_back_to_their_target(tmp_path):
    """run.json records the transport; the one place reading it back is targets/select."""
    run = tmp_path / "r"
    local = {"target": {"transport": "local"}, "device": "local:h"}
    adb = {"target": {"transport": "adb"}, "device": "emu-1"}
    farm = {**adb, "device": "pixel", "farm": {"serial": "S1", "server_address": "10.0.0.2:5038"}}
    assert recorded_reach(local) == ["--local"]
    assert recover_hint(adb, run) == f"droidoom recover --serial emu-1 {run}"
    assert recorded_reach(farm) == ["--serial", "S1", "--adb-host", "10.0.0.2", "--adb-port",
                                    "5038"]  # fmt: skip
    vm = {"target": {"transport": "qemu"}}
    assert recover_hint(vm, run) is None and recorded_in_vm(vm) and not recorded_in_vm(adb)
    assert recover_hint({}, run) is None  # an old or odd run.json: no guess
    assert recover_command(["--local"], Path("/a b")) == "droidoom recover --local '/a b'"


def test_adb_target_reaches_its_named_server_again():
    """AdbTarget.reach_again without a connection: the capability needs no device."""
    from droidoom.targets.adb import AdbTarget

    t = AdbTarget.__new__(AdbTarget)
    t.serial, t.name = "emu 5554", "emu 5554"
    t.server = AdbServer("127.0.0.1", 5037)
    assert t.reach_again() == ["--serial", "emu 5554"] and t.is_remote
    t.server = AdbServer("::1", 5039, explicit=True)
    assert t.reach_again() == ["--serial", "emu 5554", "--adb-host", "::1", "--adb-port", "5039"]
    t.server = AdbServer("10.0.0.7", 5037)  # a farm's server, named in its inventory
    assert t.reach_again()[2:] == ["--adb-host", "10.0.0.7", "--adb-port", "5037"]
    assert t.shell_hint("rm -r /d/l") == "adb -s 'emu 5554' shell rm -r /d/l"


class _Chan:
    """A VM channel that notes whether the target's lock was held at each send."""

    def __init__(self, lock: threading.Lock):
        self.lock, self.sent = lock, []

    def send(self, data: bytes) -> None:
        self.sent.append((data.split()[0].decode(), self.lock.locked()))


def _vm_without_qemu() -> VmTarget:
    vm = VmTarget.__new__(VmTarget)  # no boot: only the request bookkeeping is exercised
    vm.name, vm._lock, vm._rid = "qemu:test", threading.Lock(), 0
    vm._follow, vm._sinks = None, {}
    vm._chan = _Chan(vm._lock)  # type: ignore[assignment]
    return vm


def test_vm_spawn_and_its_stop_requests_take_the_channel_lock():
    """SPAWN used to be sent without the lock that RUN/PUT/GET take: its id could collide
    with a concurrent request's and its line interleave with a PUT's bytes."""
    vm = _vm_without_qemu()
    proc = vm.spawn("exec helper run")
    vm._send(b"CLOSE 1\n")  # what VmProcess.close() sends (it then reads the channel)
    assert vm._chan.sent == [("SPAWN", True), ("CLOSE", True)]
    assert vm.is_remote and vm.reach_again() is None and vm.recover_hint(Path("/r")) is None
    assert isinstance(proc, Process) and proc.stderr_tail == []

