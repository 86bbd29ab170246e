"""What a user sees in a terminal (issue 13.10, 13.11): every table readable in 80
columns, and an ETA on long runs."""

from __future__ import annotations

import os
import re

import pytest
from adb_env import cli_env
from conftest import run_cli
from test_farm import toml_inventory

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def check_80(text: str, whole: list[str]) -> None:
    # Paths stay unbroken on purpose (copy & paste); everything else fits 80 columns.
    lines = [line for line in text.splitlines() if "/tmp/" not in line]
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "…" not in text  # nothing cut to "compl…"/"atte…"
    for word in whole:  # serials and states are never wrapped
        assert any(word in line for line in lines), (word, text)


def test_farm_devices_and_doctor_tables_fit_80_columns(adb_peer_factory, tmp_path):
    peers = [adb_peer_factory({"ro.product.model": f"Pixel {i} Pro XL"}) for i in range(2)]
    srv = peers[0].server
    env = dict(cli_env(srv), COLUMNS="80")
    inv = toml_inventory(
        tmp_path / "farm.toml", [f"127.0.0.1:{srv.port}"],
        [{"serial": p.serial, "workdir": str(tmp_path / f"d{i}"), "required": True}
         for i, p in enumerate(peers)],
    )  # fmt: skip
    p = run_cli("farm", "run", "-i", str(inv), "--population", "0,100,200", "--writes", "30",
                "-o", str(tmp_path / "runs"), env=env)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    check_80(p.stdout, [f"{s.serial}*" for s in peers] + ["complete", "threaded µs"])
    p = run_cli("devices", env=env)
    assert p.returncode == 0, p.stderr
    check_80(p.stdout, [s.serial for s in peers] + ["14 (SDK 34)"])
    p = run_cli("doctor", "--local", env=dict(os.environ, COLUMNS="80"))
    assert p.returncode == 0, p.stderr
    check_80(p.stdout, ["population size", "cut-short runs"])


def test_long_runs_show_an_eta(tmp_path):
    env = dict(os.environ, FORCE_COLOR="1", COLUMNS="120")  # a terminal: progress drawn
    p = run_cli("profile", "--local", "--population", "0,100", "--kinds", "single",
                "--writes", "1500", "--rate", "1000", "-o", str(tmp_path), env=env)  # fmt: skip
    assert p.returncode == 0, p.stderr
    etas = re.findall(r"ETA (\d+):(\d\d):(\d\d)", ANSI.sub("", p.stderr))
    seconds = [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in etas]
    assert seconds and max(seconds) >= 1  # a ~3 s run shows time left
    assert seconds[-1] <= max(seconds)


COMMANDS = [["profile"], ["report"], ["compare"], ["cost"], ["export"], ["recover"],
            ["devices"], ["doctor"], ["clean"], ["farm", "run"], ["lab", "build"],
            ["lab", "demo"]]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_reads_at_80_columns(command):
    """`--help` at 80 columns: no cell cut with "…" (clean's `$ANDROID_ADB_SERVER_ADDRES…`),
    and the description reflows (each docstring line break used to start a new line: "no
    kernel" / "change touches" / ...): within a paragraph, only its last line is short."""
    p = run_cli(*command, "--help", env=dict(os.environ, COLUMNS="80"))
    assert p.returncode == 0, p.stderr
    assert "…" not in p.stdout, p.stdout
    head = re.split(r"\n(?:Arguments|Options|Commands):\n", p.stdout)[0]  # above the options
    paragraphs = [b.splitlines() for b in re.split(r"\n\s*\n", head) if b.strip()]
    for para in paragraphs[1:]:  # after the Usage line
        short = [ln for ln in para[:-1] if len(ln.rstrip()) < 55]
        assert not short, (short, head)


def test_doctor_prints_the_helper_path_whole(tmp_path):
    """The helper's path was folded inside the table (`.../bin/x86_6` / `4/droidoom-helper`):
    it is printed on a line of its own."""
    from droidoom.native import abi_for_machine, binary_path

    p = run_cli("doctor", "--local", env=dict(os.environ, COLUMNS="80"))
    assert p.returncode == 0, p.stderr
    assert f"helper: {binary_path(abi_for_machine())}" in p.stdout.splitlines(), p.stdout
