"""Malformed inputs, unwritable outputs, file modes and messages (issue 13.7, 13.8, 13.9).

Every malformed input is one line naming the file and exit 2 (for `compare`, exit 1
would mean "regression"); a bad run inside a folder is skipped with a warning.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

import droidoom
from droidoom.errors import DataError

WIDE = dict(os.environ, COLUMNS="300")  # one-line messages stay on one line


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_json(run: Path, **fields) -> None:
    """Set top-level run.json fields; `spec__kinds=` sets meta["spec"]["kinds"]."""
    meta = json.loads((run / "run.json").read_text())
    for key, value in fields.items():
        *parents, last = key.split("__")
        obj = meta
        for k in parents:
            obj = obj[k]
        obj[last] = value
    (run / "run.json").write_text(json.dumps(meta))


def edit_samples(run: Path, edit) -> None:
    """Rewrite samples.parquet as `edit(df)` returns it (a valid parquet file, bad values)."""
    import pandas as pd

    f = run / "samples.parquet"
    edit(pd.read_parquet(f)).to_parquet(f)


def _nan_latencies(df):
    df["latency_ns"] = df["latency_ns"].astype(float)
    df.loc[::7, "latency_ns"] = float("nan")
    return df


def _negative_latencies(df):
    df.loc[:4, "latency_ns"] = -5
    return df


CORRUPTIONS = {
    "truncated-parquet": lambda run: (run / "samples.parquet").write_bytes(
        (run / "samples.parquet").read_bytes()[:300]
    ),
    "random-parquet": lambda run: (run / "samples.parquet").write_bytes(os.urandom(4096)),
    "json-not-object": lambda run: (run / "run.json").write_text("[1, 2, 3]\n"),
    "json-garbage": lambda run: (run / "run.json").write_bytes(b"\xff\xfe{"),
    # valid JSON, wrong types: AttributeError / TypeError tracebacks before issue 16
    "json-target-a-string": lambda run: edit_json(run, target="x"),
    "json-kinds-not-strings": lambda run: edit_json(run, spec__kinds=[1, None]),
    "json-points-a-number": lambda run: edit_json(run, points=5),
    # a valid parquet file, bad values: IntCastingNaNError / KeyError before issue 16
    "nan-latencies": lambda run: edit_samples(run, _nan_latencies),
    "no-latency-column": lambda run: edit_samples(run, lambda df: df.drop(columns="latency_ns")),
    "text-population": lambda run: edit_samples(run, lambda df: df.assign(population="x")),
    "negative-latencies": lambda run: edit_samples(run, _negative_latencies),
}


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_a_corrupt_run_is_one_line_and_exit_2(local_run, tmp_path, how):
    bad = copy_run(local_run, tmp_path / "bad")
    CORRUPTIONS[how](bad)
    bad_file = "run.json" if "json" in how else "samples.parquet"
    for args in (["report", str(bad)], ["compare", str(local_run), str(bad)]):
        p = run_cli(*args, env=WIDE)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr and str(bad / bad_file) in p.stderr
    with pytest.raises(DataError, match=bad_file):
        droidoom.load(bad)


def test_one_bad_run_in_a_folder_is_skipped_not_fatal(local_run, tmp_path):
    farm = tmp_path / "farm"
    copy_run(local_run, farm / "good")
    CORRUPTIONS["random-parquet"](copy_run(local_run, farm / "bad1"))
    CORRUPTIONS["json-not-object"](copy_run(local_run, farm / "bad2"))
    CORRUPTIONS["json-target-a-string"](copy_run(local_run, farm / "bad3"))
    p = run_cli("report", str(farm), env=dict(os.environ, COLUMNS="300"))
    assert p.returncode == 0, p.stderr
    assert "skipped" in p.stderr and "bad1" in p.stderr and "bad2" in p.stderr
    assert "bad3/run.json: field 'target' is a string" in p.stderr
    with pytest.warns(UserWarning, match="skipped"):
        assert len(droidoom.load(farm)) == len(droidoom.load(local_run))


def test_report_of_a_file_says_it_is_a_file(local_run, tmp_path):
    wide = dict(os.environ, COLUMNS="300")
    (tmp_path / "notes.txt").write_text("x")
    p = run_cli("report", str(tmp_path / "notes.txt"), env=wide)
    assert p.returncode == 2 and "is a file; pass a run directory" in p.stderr
    p = run_cli("report", str(local_run / "run.json"), env=wide)  # means the run
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("opt", ["--html", "--figures", "--csv"])
def test_unwritable_outputs_are_refused_before_the_work(local_run, tmp_path, opt):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = blocker / "out"  # a path under a regular file can never be created
    cmd = ["report", str(local_run)]
    if opt == "--csv":
        cmd = ["compare", str(local_run), str(local_run)]
    p = run_cli(*cmd, opt, str(target), env=WIDE)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{opt} {target}" in p.stderr and "cannot write" in p.stderr
    assert "verdict" not in p.stdout.lower() and "median" not in p.stdout.lower()  # no work


def test_results_honour_the_umask(tmp_path, local_run):
    def umask022():
        os.umask(0o022)

    out = tmp_path / "runs"
    p = subprocess.run(
        [sys.executable, "-m", "droidoom", "profile", "--local", "--population", "0",
         "--kinds", "single", "--writes", "50", "-o", str(out)],
        capture_output=True, text=True, preexec_fn=umask022, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    (run,) = out.iterdir()
    html = tmp_path / "r.html"
    p = subprocess.run(
        [sys.executable, "-m", "droidoom", "report", str(run), "--html", str(html)],
        capture_output=True, text=True, preexec_fn=umask022, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    for f in (run / "run.json", run / "samples.parquet", html):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--rate", "nan"], "--rate must be a finite"),
        (["--rate", "inf"], "--rate must be a finite"),
        (["--population", "0,0,0"], "--population repeats"),
        # a 30-year run was accepted (issue 16): the message gives the planned duration
        (["--rate", "1e-9"], "paces 30,000 timed writes over 950,643 years (planned duration);"
                             " a run may plan at most 24 h: give --rate 0.347 or more"),
        (["--rate", "0.3"], "over 27.8 h (planned duration)"),
    ],
)
def test_bad_profile_options_are_refused_by_the_cli(tmp_path, args, expect):
    p = run_cli("profile", "--local", *args, "-o", str(tmp_path), env=WIDE)
    assert p.returncode == 2 and expect in p.stderr and "Traceback" not in p.stderr
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_kernel_with_all_is_refused_not_sent_to_the_farm(tmp_path):
    """`--kernel IMAGE --all` names two targets: refused, never a farm run of the adb
    server's devices (which ignored --kernel)."""
    image = tmp_path / "bzImage"
    image.write_bytes(b"\0" * 512)
    p = run_cli("profile", "--kernel", str(image), "--all", "--quick", "-o", str(tmp_path / "o"),
                env={**WIDE, "ANDROID_ADB_SERVER_PORT": "1"})  # fmt: skip
    assert p.returncode == 2 and "--kernel profiles a VM" in p.stderr, p.stdout + p.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "toml, expect",
    [
        ('servers = ["a:1"]\n[[devices]]\nserail = "x"\n', "[[devices]] #1"),
        ('servers = ["a:1"]\n[profile]\nwrites = 0\n', "[profile]"),
    ],
)
def test_inventory_errors_print_their_toml_names(tmp_path, toml, expect):
    f = tmp_path / "farm.toml"
    f.write_text(toml)
    p = run_cli("farm", "run", "-i", str(f), env=WIDE)
    assert p.returncode == 2 and expect in p.stderr, p.stderr


def test_no_multiprocess_kind_is_not_blamed_on_the_target(local_run_df, local_run):
    from droidoom import analysis

    meta = json.loads((local_run / "run.json").read_text())
    df = local_run_df[local_run_df["kind"] != "multiprocess"]
    (v,) = analysis.verdict(df, [meta])
    assert "left out of --kinds" in v.sentence


# --- bad values inside otherwise valid files (issue 16) ---------------------------------


def _ftrace_text(bad: str, n: int = 200) -> str:
    """n lmkd updates of 5 processes, every second one's adj replaced by `bad`."""
    lines = ["# tracer: nop", "#"]
    for i in range(n):
        adj = bad if i % 2 else str(100 * (i % 10))
        lines.append(f"            lmkd-612     [001] ..... {100 + i / 1000:.6f}: "
                     f"oom_score_adj_update: pid={3001 + i % 5} comm=com.a oom_score_adj={adj}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("bad", ["abc", "999999999999", "1001", "-1001"])
def test_impossible_adj_in_ftrace_text_is_counted_and_said(local_run, tmp_path, bad):
    """Today: "abc" silently dropped half the trace, 999999999999 a TypeError traceback."""
    trace = tmp_path / "atrace.txt"
    trace.write_text(_ftrace_text(bad))
    p = run_cli("cost", str(trace), "--run", str(local_run), env=WIDE)
    err = " ".join(p.stderr.split())
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert f"{trace}: 100 oom_score_adj updates with impossible values skipped" in err, err
    assert f"line 4: pid=3002 comm=com.a oom_score_adj={bad}" in err  # where: file and line
    assert "100 updates of 5 processes" in " ".join(p.stdout.split())  # the good half priced


def test_a_trace_with_only_impossible_updates_is_refused(tmp_path):
    trace = tmp_path / "atrace.txt"
    trace.write_text(_ftrace_text("-5000", n=2).replace("oom_score_adj=0", "oom_score_adj=x"))
    p = run_cli("profile", "--local", "--scenario", f"replay:{trace}", "-o",
                str(tmp_path / "o"), env=WIDE)  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    err = " ".join(p.stderr.split())
    assert "2 oom_score_adj updates with impossible values skipped: line 3" in err, err
    assert not (tmp_path / "o").exists()


def test_out_of_range_perfetto_values_are_not_wrapped(tmp_path):
    """Today: adj 2^31-1 became int16 -1 (foreground!) and was replayed."""
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    from droidoom.traces import replay

    t = pb.Trace()
    b = t.packet.add().ftrace_events
    for ts, pid, adj in [(1000, 700, 900), (2000, 700, 2**31 - 1), (3000, 0, 0),
                         (4000, 701, -(2**31)), (5000, 701, 0)]:  # fmt: skip
        u = b.event.add(timestamp=ts, pid=50).oom_score_adj_update
        u.pid, u.comm, u.oom_score_adj = pid, "app", adj
    f = tmp_path / "t.pftrace"
    f.write_bytes(t.SerializeToString())
    rt = replay.load(f)
    assert rt.events["adj"].tolist() == [900, 0] and rt.impossible == 3
    (note,) = [n for n in rt.notes() if "impossible" in n]
    assert f"{f}: 3 oom_score_adj updates with impossible values skipped" in note
    assert f"packet 1: pid=700 oom_score_adj={2**31 - 1}" in note
    assert rt.summary()["impossible_updates"] == 3


@pytest.mark.parametrize(
    "fields, expect",
    [
        ({"target": "x"}, "field 'target' is a string (\"x\"), not an object"),
        ({"spec__kinds": [1, None]}, "field 'spec.kinds[0]' is an integer (1), not a string"),
        ({"spec__populations": 5}, "field 'spec.populations' is an integer (5), not a list"),
        ({"target__kernel_release": 5}, "field 'target.kernel_release' is an integer (5)"),
        ({"device": ["a"]}, "field 'device' is a list"),
    ],
)
def test_run_json_with_wrong_field_types_names_the_field(local_run, tmp_path, fields, expect):
    bad = copy_run(local_run, tmp_path / "bad")
    edit_json(bad, **fields)
    p = run_cli("report", str(bad), env=WIDE)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert f"{bad / 'run.json'}: {expect}" in p.stderr and "profile again" in p.stderr


@pytest.mark.parametrize(
    "how, expect",
    [
        ("nan-latencies", "column 'latency_ns' has {nan} missing (NaN) values of {n}"),
        ("no-latency-column", "lacks column(s) latency_ns of a samples file"),
        ("text-population", "column 'population' holds "),  # object or str: pandas' choice
        ("negative-latencies", "5 of {n} writes have a negative latency_ns (lowest -5)"),
    ],
)
def test_bad_sample_values_name_the_file_and_column(local_run, tmp_path, how, expect):
    """`compare` accepted negative latencies (a verdict from impossible durations)."""
    bad = copy_run(local_run, tmp_path / "bad")
    CORRUPTIONS[how](bad)
    n = len(droidoom.load(local_run))
    expect = expect.format(n=n, nan=-(-n // 7))
    p = run_cli("compare", str(local_run), str(bad), env=WIDE)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert f"{bad / 'samples.parquet'}" in p.stderr and expect in p.stderr, p.stderr
    assert "where integers belong" in p.stderr or how != "text-population"


def test_export_to_a_missing_folder_or_onto_a_directory_is_refused(local_run, tmp_path):
    """Both were FileNotFoundError / IsADirectoryError tracebacks."""
    (tmp_path / "d").mkdir()
    for out, why in [(tmp_path / "nodir" / "x.pftrace", f"{tmp_path / 'nodir'} does not exist"),
                     (tmp_path / "d", "it is a directory")]:  # fmt: skip
        p = run_cli("export", str(local_run), "--perfetto", str(out), env=WIDE)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert f"--perfetto {out}: " in p.stderr and why in p.stderr, p.stderr
    assert sorted(tmp_path.iterdir()) == [tmp_path / "d"] and not any((tmp_path / "d").iterdir())


def _cost_reading_a_fifo(tmp_path):
    """`droidoom cost FIFO` started; returns (process, writer fd) once the command sits in
    read() of the trace: inside the command, past every import."""
    import time

    from conftest import default_signals

    fifo = tmp_path / "trace.fifo"
    os.mkfifo(fifo)
    p = subprocess.Popen([sys.executable, "-m", "droidoom", "cost", str(fifo), "--run", "x"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=WIDE,
                         preexec_fn=default_signals)  # fmt: skip
    deadline = time.monotonic() + 60
    while True:  # O_NONBLOCK writer open fails (ENXIO) until the reader has it open
        try:
            return p, os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            assert time.monotonic() < deadline and p.poll() is None, p.communicate()
            time.sleep(0.02)


@pytest.mark.parametrize("sig, code, said", [(15, 143, "interrupted by SIGTERM"),
                                             (2, 130, "interrupted by Ctrl-C")])  # fmt: skip
def test_a_signal_during_a_commands_setup_exits_with_its_code(tmp_path, sig, code, said):
    """Click turns a KeyboardInterrupt into Abort, which exited 130 without a word even for
    SIGTERM (143)."""
    p, w = _cost_reading_a_fifo(tmp_path)
    try:
        p.send_signal(sig)
    finally:
        # EOF after the signal: the command cannot sit in read() forever whatever happens to
        # the signal (a lost one shows as exit 2, "not a trace", not as a hang)
        os.close(w)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code and said in err and "Traceback" not in err, err


def test_ctrl_c_while_the_commands_load_is_a_line_not_a_traceback(tmp_path):
    """Ctrl-C in the first second of `droidoom profile` (the commands' imports) printed a
    KeyboardInterrupt traceback."""
    import time

    from conftest import default_signals

    p = subprocess.Popen([sys.executable, "-m", "droidoom", "profile", "--local", "-o",
                          str(tmp_path / "o")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)  # fmt: skip
    maps = Path(f"/proc/{p.pid}/maps")
    while "numpy" not in maps.read_text():  # pandas is loading: the imports are under way
        assert p.poll() is None
        time.sleep(0.005)
    p.send_signal(2)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()
