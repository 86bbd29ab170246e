"""Terminal tables, figures and the self-contained HTML report, on real runs of this host."""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import HOST_VERDICT
from matplotlib import image
from rich.console import Console

import droidoom
from droidoom import analysis, schema
from droidoom.report import plots
from droidoom.report import terminal as report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG_RE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def n_device_modes(df: pd.DataFrame) -> int:
    return len(df[["device", "mode"]].drop_duplicates())


def assert_nontrivial_png(path, min_ink: float = 0.02) -> np.ndarray:
    """The PNG decodes and is not blank: enough non-white pixels, several colours."""
    data = path.read_bytes() if hasattr(path, "read_bytes") else path
    assert data[:8] == PNG_MAGIC
    import io

    img = image.imread(io.BytesIO(data), format="png")[..., :3]
    ink = (img < 0.92).any(axis=-1).mean()
    assert ink > min_ink, f"only {ink:.1%} of the image is not white"
    assert len(np.unique(img.reshape(-1, 3)[::97], axis=0)) > 20
    return img


def recorded(width: int = 80) -> Console:
    """What a CI log or a pipe gets: rich renders non-tty output 80 columns wide."""
    return Console(record=True, width=width, color_system=None, force_terminal=False)


def assert_fits_80_columns(text: str) -> None:
    assert "…" not in text, "a cell was truncated:\n" + text
    wide = [line for line in text.splitlines() if len(line.rstrip()) > 80]
    assert not wide, wide


def test_render_terminal(local_run, local_run_df):
    console = recorded()
    meta = analysis.load_meta(local_run)
    (v,) = report.render_terminal(local_run_df, [meta], console)
    text = console.export_text()
    assert_fits_80_columns(text)
    assert v.status == HOST_VERDICT
    assert HOST_VERDICT.upper() in text and "MMF_MULTIPROCESS" in text
    assert meta["target"]["kernel_release"] in text
    for word in ("median", "p90", "p99", "population", "ns/process", "O(1)", "O(N)"):
        assert word in text, word
    assert "devices side by side" not in text  # one device
    # one row per kind x population: kind named on its first row, then the population alone
    stats = analysis.summary(local_run_df)
    for kind, pops in stats.groupby("kind", observed=True)["population"]:
        first, *rest = sorted(pops)
        assert re.search(rf"^{kind}\s+{first}\s+\d+\s+[\d.]+", text, re.M), kind
        for pop in rest:
            assert re.search(rf"^\s+{pop}\s+\d+\s+[\d.]+", text, re.M), (kind, pop)
    # the scaling table: one row per kind with its complexity at the end
    fits = {f.kind: f for f in analysis.fits(local_run_df)}
    for kind, f in fits.items():
        assert re.search(rf"^{kind}\s+[-+][\d.]+\s+.*{re.escape(f.complexity)}$", text, re.M)


def test_render_terminal_compares_devices_side_by_side(local_run_df, slow_run):
    slow = droidoom.load(slow_run)
    slow["device"] = pd.Categorical(["local:loaded"] * len(slow))
    df = schema.coerce(pd.concat([local_run_df, slow], ignore_index=True))
    console = recorded()
    verdicts = report.render_terminal(df, None, console)
    text = console.export_text()
    assert_fits_80_columns(text)
    assert [v.device for v in verdicts] == sorted(df["device"].astype(str).unique())
    overview = text[text.index("devices side by side") :]
    for v in verdicts:
        assert re.search(rf"^{re.escape(v.device)}\s.*\s{v.status}\s", overview, re.M)
        assert f"write latency (µs) - {v.device}, reopen writes" in text


def test_compare_table_shows_regressions(local_run_df, slow_run):
    result = analysis.compare(local_run_df, droidoom.load(slow_run))
    console = recorded()
    report.compare_table(result, console)
    text = console.export_text()
    assert_fits_80_columns(text)
    assert text.count("REGRESSION") == len(result.regressions)
    assert f"{len(result.regressions)} regression(s)" in text


def test_compare_table_without_regression(local_run_df):
    console = recorded()
    report.compare_table(analysis.compare(local_run_df, local_run_df), console)
    text = console.export_text()
    assert "no regression" in text and "REGRESSION" not in text


def test_save_figures(tmp_path, local_run_df):
    paths = plots.save_figures(local_run_df, tmp_path)
    assert len(paths) == 2 * n_device_modes(local_run_df)  # scaling + distribution each
    for p in paths:
        assert p.parent == tmp_path and p.suffix == ".png"
        assert_nontrivial_png(p)


def test_scaling_figure_titles_carry_the_fit(local_run_df):
    fig = plots.plot_scaling(local_run_df)
    titles = {ax.get_title().split(":")[0]: ax.get_title() for ax in fig.axes}
    assert "O(1)" in titles["threaded"] and "O(N)" in titles["multiprocess"]
    assert all(ax.get_xlabel().startswith("extra processes") for ax in fig.axes)
    assert "µs" in fig.axes[0].get_ylabel()


def screenshot(html_path, tmp_path):
    """Render the page in headless Chromium (no network: only a file:// URL)."""
    png = tmp_path / "shot.png"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'chrome-profile'}",
        f"--screenshot={png}", "--window-size=1200,3000", html_path.resolve().as_uri(),
    ]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0 and png.is_file(), p.stderr[-2000:]
    return png


def check_self_contained(text: str, n_images: int) -> None:
    assert not re.search(r"https?://", text), "the report references the network"
    assert not re.search(r"""(?:src|href)\s*=\s*(?!["']?(?:data:|#))""", text)
    images = IMG_RE.findall(text)
    assert len(images) == n_images
    for b64 in images:
        assert_nontrivial_png(base64.b64decode(b64))


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed")
def test_html_report_is_self_contained_and_renders(tmp_path, local_run, local_run_df):
    meta = analysis.load_meta(local_run)
    path = report.render_html(local_run_df, [meta], tmp_path / "report.html")
    text = path.read_text()
    check_self_contained(text, 2 * n_device_modes(local_run_df))
    (v,) = analysis.verdict(local_run_df, meta)
    assert html.escape(v.sentence) in text
    for fact in (meta["run_id"], meta["target"]["kernel_release"], meta["status"]):
        assert html.escape(str(fact)) in text
    assert "Farm" not in text  # one device: no farm section
    img = assert_nontrivial_png(screenshot(path, tmp_path))
    assert img.shape[:2] == (3000, 1200)
    # the page's top (verdict, tables) is not empty either: text renders before the figures
    assert (img[:600] < 0.92).any(axis=-1).mean() > 0.02


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed")
def test_html_report_farm_section(tmp_path, local_run, slow_run, local_run_df):
    """Two devices (the slow run relabelled as a second host): farm overview + device plot."""
    slow = droidoom.load(slow_run)
    slow["device"] = pd.Categorical(["local:loaded"] * len(slow))
    df = schema.coerce(pd.concat([local_run_df, slow], ignore_index=True))
    metas = [analysis.load_meta(local_run), dict(analysis.load_meta(slow_run))]
    metas[1]["device"] = "local:loaded"
    path = report.render_html(df, metas, tmp_path / "farm.html")
    text = path.read_text()
    assert "Farm: per-device overview" in text and "local:loaded" in text
    modes = df["mode"].nunique()
    check_self_contained(text, 2 * n_device_modes(df) + modes)  # + one devices figure per mode
    # two verdict boxes + two farm rows, whatever the verdicts (the slow run's depends on how
    # steady the host's process count was while it ran)
    assert len(re.findall(r"""class=["']badge (?:fixed|regressed|inconclusive)["']""", text)) == 4
    assert_nontrivial_png(screenshot(path, tmp_path))


def test_report_never_pools_unlike_runs(tmp_path, local_run):
    """A folder holding a sweep, a paced `alternate` run and an ftrace-captured copy used
    to end in one table and one verdict. load() now says which runs measured alike (the
    fingerprint column), and `report` prints each group apart, naming its runs; the HTML's
    Runs table shows what differs."""
    import json

    from conftest import run_cli

    folder = tmp_path / "runs"
    shutil.copytree(local_run, folder / local_run.name)
    for name, change in (("alt", {"spec": {"scenario": "alternate", "rate": 200.0}}),
                         ("ftr", {"captures": {"ftrace": {"matched_fraction": 1.0}}})):  # fmt: skip
        dest = folder / name
        shutil.copytree(local_run, dest)
        meta = json.loads((dest / "run.json").read_text())
        meta["spec"].update(change.get("spec", {}))
        meta.update({k: v for k, v in change.items() if k != "spec"}, run_id=name)
        (dest / "run.json").write_text(json.dumps(meta))
        df = pd.read_parquet(dest / "samples.parquet")
        df["run_id"] = pd.Categorical([name] * len(df))
        df.to_parquet(dest / "samples.parquet")
    df = droidoom.load(folder)
    assert df.groupby("fingerprint", observed=True)["run_id"].nunique().tolist() == [1, 1, 1]
    same = droidoom.load([local_run, local_run])  # one run twice: one fingerprint
    assert same["fingerprint"].nunique() == 1
    page = tmp_path / "r.html"
    p = run_cli("report", str(folder), "--html", str(page))
    out, err = p.stdout, " ".join(p.stderr.split())
    assert p.returncode == 0, err
    assert "measured 3 different things" in err
    assert out.count("group ") >= 3 and "alternate 0/900, 200/s" in " ".join(out.split())
    assert "capture ftrace" in " ".join(out.split())
    assert len(re.findall(r"^(FIXED|REGRESSED|INCONCLUSIVE) ", out, re.M)) == 3  # one each
    text = page.read_text()
    for head in ("scenario", "rate", "captures", "group"):
        assert f">{head}</th>" in text, head
    assert text.count("<h2>Group ") == 3


def test_visits_and_the_walkers_share_on_hand_made_tables():
    from droidoom.capture.perf_parse import symbol_share
    from droidoom.report.rows import with_visits

    v = pd.DataFrame({"point": [0, 1, 2, 3, 4], "kind": ["single"] * 5,
                      "population": [0, 400, 800, 400, 0]})  # fmt: skip
    assert with_visits(v).set_index("point")["sweep"].tolist() == ["up", "up", "", "down", "down"]
    perf = pd.DataFrame({
        "point": [0, 0, 1, 1], "population": [800, 800, 800, 800], "mode": ["reopen"] * 4,
        "kind": ["multiprocess"] * 4, "symbol": ["__set_oom_adj", "vfs_write"] * 2,
        "samples": [40, 1, 10, 0], "children_samples": [80, 100, 20, 50],
        "group_samples": [100, 100, 50, 50],
    })  # fmt: skip
    (row,) = symbol_share(perf).to_dict("records")
    assert row["samples"] == 150 and row["children_pct"] == pytest.approx(100 * 100 / 150)
    assert row["self_pct"] == pytest.approx(100 * 50 / 150)
