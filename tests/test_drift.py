"""Drift over a run (issue 9 item 7): the sweep's way back down shows it, the verdict and
the report say so. Data: a real quick run of this host, its late points slowed on disk
(a device that heats up) - the analysis below the real run is what is under test."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
from conftest import run_cli

import droidoom
from droidoom import analysis
from droidoom.analysis.drift import drift


def late_points(df: pd.DataFrame) -> pd.Series:
    """Rows of the visits after the sweep's peak (the way back down)."""
    peak = df.loc[df["population"] == df["population"].max(), "point"].max()
    return df["point"] > peak


def test_way_down_slower_is_drift_in_verdict_and_report(local_run, tmp_path):
    run = tmp_path / local_run.name
    shutil.copytree(local_run, run)
    meta = json.loads((run / "run.json").read_text())
    df = pd.read_parquet(run / "samples.parquet")
    # steady: the late visits replay the early ones' latencies -> no drift
    steady = df.copy()
    for (kind, pop), g in df.groupby(["kind", "population"], observed=True):
        early = g[g["point"] == g["point"].min()]["latency_ns"].to_numpy()
        late = steady.index[(steady["kind"] == kind) & (steady["population"] == pop)
                            & late_points(steady)]  # fmt: skip
        steady.loc[late, "latency_ns"] = early[: len(late)]
    assert not drift(steady, meta).detected
    # hot: the way back down runs 60% slower for every kind than on the way up
    hot = steady.copy()  # from the replay, so the gap is exactly the 60% added
    slow = hot.loc[late_points(hot), "latency_ns"] * 1.6
    hot.loc[late_points(hot), "latency_ns"] = slow.round().astype(hot["latency_ns"].dtype)
    d = drift(hot, meta)
    assert d.detected and 0.5 < d.change < 0.7 and d.pairs == 2 * hot["kind"].nunique()
    hot.to_parquet(run / "samples.parquet")
    (v,) = analysis.verdict(droidoom.load(run), meta)
    assert re.search(r"drift: the same kind and population ran \+(5[0-9]|6[0-9])%", v.sentence)
    # this host is no phone: no advice to let it cool (a phone's run.json has its SDK level)
    assert "phone" not in v.sentence and "let the host settle" in v.sentence, v.sentence
    phone = {**meta, "target": {**meta["target"], "sdk": 34}}
    assert "let the phone cool" in drift(hot, phone).text()
    p = run_cli("report", str(run))
    assert p.returncode == 0, p.stderr
    assert "drift:" in " ".join(p.stdout.split())
