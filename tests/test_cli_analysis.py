"""`droidoom report` and `droidoom compare` through the real console script, on real runs of
this host (conftest: `local_run`; `slow_run`, profiled while 1600 extra processes exist, so its
multiprocess writes are genuinely slower)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import HOST_VERDICT, require_slow_premise, run_cli

import droidoom
from droidoom import store

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_UNKNOWN = 0, 1, 2, 3
STATUS = "(?:fixed|regressed|inconclusive)"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cli(*args: str) -> tuple[int, str, str]:
    """Run the droidoom console script as in a CI log: stdout is a pipe, so rich renders
    80 columns wide. Returns (exit status, stdout, stderr with line wraps undone)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    p = run_cli(*map(str, args), env={**env, "COLUMNS": "80", "TERM": "dumb"})
    return p.returncode, p.stdout, " ".join(p.stderr.split())


@pytest.fixture
def cli_here(monkeypatch, capsys):
    """The same `droidoom.cli.main`, in this process: for the many small variations, where
    a fresh interpreter per call (pandas, scipy, matplotlib imports) would cost seconds each."""
    from droidoom import cli as cli_module

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["droidoom", *map(str, args)])
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            cli_module.main()
        out, err = capsys.readouterr()
        return e.value.code, out, " ".join(err.split())

    return run


def relabelled(run: Path, dest: Path, device: str, **meta_changes) -> Path:
    """A copy of a real run under another device name (or with run.json fields changed),
    written with droidoom.store like the runner writes it: a second "device" for farm tests."""
    df = droidoom.load(run)
    df["device"] = pd.Categorical([device] * len(df))
    dest.mkdir(parents=True)
    store.write_table(dest / store.SAMPLES, df)
    meta = {**store.read_run(run).meta, "device": device, **meta_changes}
    store.write_json(dest / store.RUN_JSON, meta)
    return dest


def assert_readable_at_80(out: str) -> None:
    """No truncated cell, no line past 80 columns (except file paths, printed unbroken)."""
    assert "…" not in out, out
    lines = [ln for ln in out.splitlines() if not ln.startswith(("figure: ", "html report: "))]
    assert max(map(len, lines)) <= 80, out


# --------------------------------------------------------------------------- report


def test_report_one_run(local_run, tmp_path):
    rc, out, err = cli("report", local_run, "--figures", tmp_path / "figs")
    assert rc == EXIT_OK, err
    assert_readable_at_80(out)
    for word in ("median", "p90", "p99", "O(1)", "O(N)", HOST_VERDICT.upper(), "MMF_MULTIPROCESS"):
        assert word in out, word
    assert os.uname().release in out  # the run's kernel, cross-checked in the verdict
    pngs = sorted((tmp_path / "figs").glob("*.png"))
    assert {p.name.split("_")[0] for p in pngs} == {"scaling", "distribution"}
    assert all(
        p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in pngs
    )
    assert all(f"figure: {p}" in out for p in pngs)


def test_report_farm_folder_side_by_side(local_run, slow_run, tmp_path):
    """A folder of runs from two devices: per-device tables, an overview, one HTML file."""
    farm = tmp_path / "farm"
    shutil.copytree(local_run, farm / local_run.name)
    relabelled(slow_run, farm / "loaded-run", "local:loaded")
    html = tmp_path / "out" / "farm.html"
    rc, out, err = cli("report", farm, "--html", html)
    assert rc == EXIT_OK, err
    assert_readable_at_80(out)
    devices = sorted({str(droidoom.load(local_run)["device"].iloc[0]), "local:loaded"})
    overview = out[out.index("devices side by side") :]
    for device in devices:  # one overview row and one verdict line per device
        assert re.search(rf"^{re.escape(device)}\s.*\s{STATUS}\s", overview, re.M), out
        assert re.search(rf"^{STATUS.upper()} {re.escape(device)}: ", out, re.M), out
    text = html.read_text()
    assert f"html report: {html}" in out
    assert "Farm: per-device overview" in text and text.count("data:image/png;base64,") == 5
    assert not re.search(r"https?://", text)


def test_report_bad_input(tmp_path, cli_here):
    rc, out, err = cli("report", tmp_path / "nope")
    assert rc == EXIT_BAD_INPUT and "does not exist" in err
    (tmp_path / "empty").mkdir()
    rc, out, err = cli_here("report", tmp_path / "empty")
    assert rc == EXIT_BAD_INPUT and "no droidoom runs under" in err


# --------------------------------------------------------------------------- compare


def no_regression(rc: int, out: str) -> bool:
    """Runs that measured the same thing: SAME (exit 0), or UNKNOWN (exit 3) when a quick
    run's blocks are too few or too noisy for the threshold on this busy host - never a
    regression."""
    unknown = rc == EXIT_UNKNOWN and "UNKNOWN (too" in out
    return (rc == EXIT_OK or unknown) and "no regression" in out and "REGRESSION" not in out


def test_compare_run_with_itself_exits_0(local_run):
    # --judge-disturbed: a run the host's load disturbed is UNKNOWN otherwise (checked in
    # test_compare_slow_run_exits_1); here the table itself is under test
    rc, out, err = cli("compare", local_run, local_run, "--judge-disturbed")
    assert no_regression(rc, out), out + err
    assert_readable_at_80(out)
    assert "these runs could detect changes of x" in out
    assert re.search(r"^multiprocess\s+\d+\s+[\d.]+\s+[\d.]+\s+1\.00\s", out, re.M), out


@pytest.mark.timing
def test_compare_slow_run_exits_1(local_run, slow_run, tmp_path, cli_here):
    require_slow_premise(local_run, slow_run)
    table = tmp_path / "ratios.csv"
    # slow_run ran beside another run's 1600 helpers: its notices say disturbed, so its
    # points are UNKNOWN, exit 3 (this was exit 1 before compare knew of disturbances)
    rc, out, err = cli_here("compare", local_run, slow_run)
    assert rc == EXIT_UNKNOWN and "disturbed" in err and "REGRESSION" not in out, out + err
    # judged anyway, its multiprocess points are DIFFERENT: a regression
    rc, out, err = cli("compare", local_run, slow_run, "--csv", table, "--judge-disturbed")
    assert rc == EXIT_REGRESSION, out + err
    assert_readable_at_80(out)
    rows = list(csv.DictReader(table.open()))
    mp = [r for r in rows if r["kind"] == "multiprocess"]
    assert len(mp) >= 3 and all(r["regression"] == "True" for r in mp)
    assert all(r["decision"] == "DIFFERENT" for r in mp)
    assert all(float(r["ci_low"]) > 1.10 for r in mp)
    n = sum(r["regression"] == "True" for r in rows)
    # the ratio table flags exactly the CSV's rows (the slope table below it may flag a
    # kind's ns/process too: that is another table)
    assert f"{n} regression(s)" in out, out
    ratios = out[: out.index(f"{n} regression(s)")]
    assert ratios.count("REGRESSION") == n, out
    # a threshold beyond what 1600 extra processes cost: no regression, exit 0
    worst = max(float(r["ci_low"]) for r in rows)
    rc, out, err = cli_here("compare", local_run, slow_run, "--max-ratio", f"{worst * 2:.2f}",
                            "--judge-disturbed")  # fmt: skip
    assert no_regression(rc, out), out + err
    # pooled over populations, one row per kind
    rc, out, err = cli_here("compare", local_run, slow_run, "--pooled", "--judge-disturbed")
    assert rc == EXIT_REGRESSION and re.search(r"^multiprocess\s.*REGRESSION$", out, re.M), out


def test_compare_bad_input_exits_2(local_run, tmp_path, cli_here):
    rc, _, err = cli("compare", local_run, tmp_path / "missing")
    assert rc == EXIT_BAD_INPUT and "does not exist" in err
    rc, _, err = cli_here("compare", local_run, local_run, "--max-ratio", "0.9")
    assert rc == EXIT_BAD_INPUT and "--max-ratio must be > 1" in err
    # another device: nothing in common unless paired explicitly
    other = relabelled(local_run, tmp_path / "other", "phone-b")
    rc, _, err = cli_here("compare", local_run, other)
    assert rc == EXIT_BAD_INPUT and "share no" in err
    rc, out, err = cli_here("compare", local_run, other, "--pair", "--judge-disturbed")
    assert no_regression(rc, out) and "vs new phone-b" in out, out + err
    # a different write schedule measures something else
    spec = {**store.read_run(local_run).meta["spec"], "scenario": "alternate"}
    alt = relabelled(local_run, tmp_path / "alt", str(droidoom.load(local_run)["device"][0]),
                     spec=spec)  # fmt: skip
    rc, _, err = cli_here("compare", local_run, alt)
    assert rc == EXIT_BAD_INPUT and "scenario" in err and "--ignore-spec" in err
    rc, out, err = cli_here("compare", local_run, alt, "--ignore-spec", "--judge-disturbed")
    assert no_regression(rc, out), out + err
    rc, _, err = cli_here("compare", local_run, local_run, local_run)
    assert rc == EXIT_BAD_INPUT and "takes BASE and NEW" in err


def test_compare_notes_partial_runs(local_run, tmp_path, cli_here):
    device = str(droidoom.load(local_run)["device"][0])
    partial = relabelled(local_run, tmp_path / "partial", device, status="partial")
    rc, out, err = cli_here("compare", local_run, partial, "--judge-disturbed")
    assert no_regression(rc, out) and "is partial" in err, out + err
    rc, _, err = cli_here("compare", local_run, partial, "--complete-only")
    assert rc == EXIT_BAD_INPUT and "every run is partial" in err


@pytest.mark.parametrize("broken", ["not json", json.dumps({"format": 99})])
def test_compare_unreadable_run_exits_2(local_run, tmp_path, broken, cli_here):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / store.RUN_JSON).write_text(broken)
    rc, _, err = cli_here("compare", local_run, bad)
    assert rc == EXIT_BAD_INPUT and str(bad) in err


def test_compare_against_a_cut_short_run_is_unknown(local_run, tmp_path, cli_here):
    """NEW was SIGTERMed 1.3 s in: population 0 plus a few writes at 400. compare said "no
    regression" (exit 0); cut at 0.8 s it blamed "population 0 (x2.9)" on a few writes. Now
    the missing and too-thin points are named, never judged, and the exit status is 3
    (UNKNOWN): a CI must re-run, not pass."""
    cut = tmp_path / "cut"
    shutil.copytree(local_run, cut)
    df = pd.read_parquet(cut / "samples.parquet")
    first = df["point"] == df["point"].min()
    one_more = df.index[(df["point"] == df["point"].min() + 1) & ~df["warmup"]][:10]
    df.loc[first | df.index.isin(one_more)].to_parquet(cut / "samples.parquet")
    meta = json.loads((cut / "run.json").read_text())
    meta.update(status="partial", reason="SIGTERM")
    (cut / "run.json").write_text(json.dumps(meta))
    rc, out, err = cli_here("compare", local_run, cut, "--judge-disturbed")
    assert rc == EXIT_UNKNOWN, out + err
    assert "UNKNOWN" in err and "missing in NEW" in err and "fewer than" in err, err
    assert "800" in err.split("missing in NEW")[1] and "no regression among the points" in out
    assert "too few writes" in out and "REGRESSION" not in out
    # the points both sides measured well are still compared: population 0 has a ratio row
    assert re.search(r"^multiprocess\s+0\s", out, re.M), out
