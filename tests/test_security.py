"""A hostile local user (issue 16): planted locks, records, plans and output paths.

"Another user" is `nobody` (uid 65534): files are made here and chowned to it (the suite
runs as root). The shared temp directory is a 1777 directory of the test's own, named by
TMPDIR. Every run is a real `droidoom profile --local` (tiny), every refusal the real CLI's.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
from conftest import run_cli

from droidoom import store
from droidoom.errors import UsageError

NOBODY = 65534
TINY = ["--population", "0,50", "--kinds", "single", "--writes", "50"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to nobody needs root")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real complete tiny run of this host."""
    out = tmp_path_factory.mktemp("finished")
    p = run_cli("profile", "--local", *TINY, "-o", str(out))
    assert p.returncode == 0, p.stderr
    (run,) = out.iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    return run


def give_to_nobody(*paths: Path) -> None:
    for p in paths:
        os.lchown(p, NOBODY, NOBODY)


# ------------------------------------------------------------ output paths (16.2)


def char_device(path: Path) -> Path:
    """A char device 1,3 (what /dev/null is) of our own, never /dev/null itself."""
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return path


def special(kind: str, path: Path) -> Path:
    if kind == "char device":
        return char_device(path)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    return path


def still(kind: str, path: Path) -> bool:
    mode = os.lstat(path).st_mode
    return {"char device": stat.S_ISCHR, "fifo": stat.S_ISFIFO, "directory": stat.S_ISDIR,
            "socket": stat.S_ISSOCK}[kind](mode)  # fmt: skip


@pytest.mark.parametrize("kind", ["char device", "fifo", "directory", "socket"])
def test_report_html_refuses_a_path_that_is_not_a_regular_file(tmp_path, finished_run, kind):
    node = special(kind, tmp_path / "out.html")
    p = run_cli("report", str(finished_run), "--html", str(node), env={**os.environ,
                "COLUMNS": "300"})  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert kind.split()[0] in p.stderr and str(node) in " ".join(p.stderr.split())
    assert still(kind, node)  # not replaced by a file


@pytest.mark.parametrize("kind", ["char device", "fifo"])
def test_the_atomic_writer_refuses_special_files_too(tmp_path, kind):
    """store.atomic_write (run.json, samples, html, csv, json) checks at the write
    itself, not only when a command starts."""
    node = special(kind, tmp_path / "x")
    with pytest.raises(UsageError, match="not a regular file"):
        store.atomic_write(node, b"data")
    assert still(kind, node) and not [f for f in tmp_path.iterdir() if f.name != "x"]


def foreign_link(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """(a symlink `name` owned by nobody, the root-owned file it points at)."""
    victim = tmp_path / "precious"
    victim.write_text("root's file\n")
    link = tmp_path / name
    link.symlink_to(victim)
    give_to_nobody(link)
    return link, victim


def test_export_does_not_follow_a_symlink_another_user_planted(tmp_path, finished_run):
    link, victim = foreign_link(tmp_path, "out.pftrace")
    p = run_cli("export", str(finished_run), "--perfetto", str(link),
                env={**os.environ, "COLUMNS": "300"})  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "nobody" in p.stderr and "symlink" in p.stderr
    assert victim.read_text() == "root's file\n" and link.is_symlink()


def test_export_writes_through_the_users_own_symlink(tmp_path, finished_run):
    target = tmp_path / "real.pftrace"
    target.write_text("old")
    link = tmp_path / "out.pftrace"
    link.symlink_to(target)
    p = run_cli("export", str(finished_run), "--perfetto", str(link))
    assert p.returncode == 0, p.stderr
    assert link.is_symlink() and target.stat().st_size > 100  # the link stays, its file new


def test_cost_json_does_not_follow_a_symlink_another_user_planted(tmp_path):
    """cost --json: refused before the work (with a real trace and replay run, the old
    code followed the link)."""
    from droidoom.synth_trace import SynthSpec, generate

    data, _ = generate(SynthSpec(seed=3, duration_s=120))
    trace = tmp_path / "phone.pftrace"
    trace.write_bytes(data)
    p = run_cli("profile", "--local", "--scenario", f"replay:{trace}", "--compress", "0",
                "--population", "0,50", "--out", str(tmp_path / "runs"))  # fmt: skip
    assert p.returncode == 0, p.stderr
    (run,) = (tmp_path / "runs").iterdir()
    link, victim = foreign_link(tmp_path, "cost.json")
    p = run_cli("cost", str(trace), "--run", str(run), "--json", str(link),
                env={**os.environ, "COLUMNS": "300"})  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "nobody" in p.stderr and victim.read_text() == "root's file\n"
    own = tmp_path / "mine.json"
    p = run_cli("cost", str(trace), "--run", str(run), "--json", str(own))
    assert p.returncode == 0 and json.loads(own.read_text())["runs"], p.stderr


def test_output_target_follows_only_a_chain_of_own_links(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("x")
    (tmp_path / "a").symlink_to(mine)
    assert store.output_target(tmp_path / "a") == mine
    link, _ = foreign_link(tmp_path, "b")  # mine -> nobody's link -> root's file
    (tmp_path / "c").symlink_to(link)
    with pytest.raises(UsageError, match="nobody"):
        store.output_target(tmp_path / "c")
    (tmp_path / "d").symlink_to(tmp_path / "nowhere")  # a dangling link: refused too
    with pytest.raises(UsageError, match="does not exist"):
        store.output_target(tmp_path / "d")
    someone = tmp_path / "theirs.txt"
    someone.write_text("y")
    give_to_nobody(someone)
    (tmp_path / "e").symlink_to(someone)  # my link, their file
    with pytest.raises(UsageError, match="nobody"):
        store.output_target(tmp_path / "e")
