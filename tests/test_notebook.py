"""notebooks/analysis.ipynb: committed without outputs, and it runs top to bottom (nbclient, a
real Jupyter kernel) against runs generated in this test session."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
from conftest import REPO
from nbclient import NotebookClient

NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_committed_notebook_has_no_outputs():
    raw = json.loads(NOTEBOOK.read_text())
    nb = nbformat.reads(NOTEBOOK.read_text(), as_version=4)
    nbformat.validate(nb)
    assert raw["metadata"]["kernelspec"]["name"] == "python3"
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], cell["source"][:80]
            assert cell["execution_count"] is None, cell["source"][:80]
        assert set(cell.get("metadata", {})) <= {"tags"}, "editor noise in cell metadata"
    text = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for must in ("44a70adec910", "67197a4f28d2", "MMF_MULTIPROCESS", "How to read"):
        assert must in text, must


def outputs(nb, kind: str) -> list:
    return [o for c in code_cells(nb) for o in c.outputs if o.output_type == kind]


def test_notebook_runs_top_to_bottom(local_run, slow_run, monkeypatch):
    monkeypatch.setenv("DROIDOOM_RUNS", str(local_run))
    monkeypatch.setenv("DROIDOOM_BASE", str(local_run))
    monkeypatch.setenv("DROIDOOM_NEW", str(slow_run))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": NOTEBOOK.parent}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    # errors raised outside a cell's body (e.g. drawing a figure after the cell) do not stop
    # nbclient: look for them, and for anything on stderr, explicitly
    assert not outputs(nb, "error")
    stderr = [o.text for o in outputs(nb, "stream") if o.name == "stderr"]
    assert not stderr, stderr
    stdout = "".join(o.text for o in outputs(nb, "stream"))
    assert f"{local_run.name}: " in stdout and "complete" in stdout
    assert "FIXED" in stdout and "MMF_MULTIPROCESS" in stdout  # the verdict on this kernel
    assert "multiprocess on " in stdout and "ns per extra process" in stdout
    regressions = int(stdout.split("regressions: ")[1].split(",")[0])
    assert regressions >= 3, stdout  # slow_run: every multiprocess population is slower
    shown = [o for c in code_cells(nb) for o in c.outputs if "data" in o]
    images = [o for o in shown if "image/png" in o["data"]]
    # scaling, by hand, distribution, before/after (no devices figure: one device)
    assert len(images) == 4
    assert all(len(o["data"]["image/png"]) > 10_000 for o in images)
    tables = [o for o in shown if "text/html" in o["data"]]
    assert len(tables) >= 4  # head, counts, summary, scaling, compare


def setup_cell() -> str:
    """The notebook's first code cell as plain Python (without its % magics)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    src = code_cells(nb)[0].source
    return "\n".join(line for line in src.splitlines() if not line.startswith("%"))


def test_notebook_falls_back_to_the_default_output_folder(local_run, tmp_path, monkeypatch):
    """No DROIDOOM_* variables: ./droidoom-runs (the CLI's default --out) is used."""
    for name in ("DROIDOOM_RUNS", "DROIDOOM_BASE", "DROIDOOM_NEW"):
        monkeypatch.delenv(name, raising=False)
    shutil.copytree(local_run, tmp_path / "droidoom-runs" / local_run.name)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(setup_cell(), "analysis.ipynb[setup]", "exec"), ns)
    assert ns["RUNS"] == [Path("droidoom-runs")]
    assert ns["BASE"] == ns["NEW"] == [Path("droidoom-runs") / local_run.name]


def test_notebook_falls_back_to_a_fresh_profile(tmp_path, monkeypatch):
    """No variables and no runs around: the notebook measures this host (a --quick profile)."""
    for name in ("DROIDOOM_RUNS", "DROIDOOM_BASE", "DROIDOOM_NEW"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(setup_cell(), "analysis.ipynb[setup]", "exec"), ns)
    (out,) = ns["RUNS"]
    try:
        (info,) = ns["infos"]
        assert info.status == "complete" and (info.path / "samples.parquet").is_file()
    finally:
        shutil.rmtree(out)


def test_notebook_runs_clean_on_a_folder_of_unlike_runs(local_run, tmp_path, monkeypatch):
    """A folder after several README commands: a paced `alternate` sweep (oldest), a sweep
    and a replay (newest). The notebook pooled them all and took the newest (the replay) as NEW,
    then crashed ("the runs share no device x kind x mode x population group"). It now
    analyses one group of like runs, the sweep, and says which."""
    import pandas as pd

    from droidoom.fingerprint import fingerprint

    folder = tmp_path / "droidoom-runs"
    shutil.copytree(local_run, folder / local_run.name)

    def variant(name: str, keep, **spec) -> None:
        dest = folder / name
        shutil.copytree(local_run, dest)
        meta = json.loads((dest / "run.json").read_text())
        meta["spec"].update(spec)
        meta["run_id"] = name
        (dest / "run.json").write_text(json.dumps(meta))
        df = pd.read_parquet(dest / "samples.parquet")
        df = df[keep(df)].copy()
        df["run_id"] = pd.Categorical([name] * len(df))
        df.to_parquet(dest / "samples.parquet")

    variant("00-alternate", lambda d: d["kind"].notna(), scenario="alternate", rate=200.0)
    variant("zzz-replay", lambda d: (d["kind"] == "threaded") & (d["population"] == 400),
            scenario="replay:phone.pftrace", kinds=["threaded"], populations=[400])  # fmt: skip
    for name in ("DROIDOOM_BASE", "DROIDOOM_NEW"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DROIDOOM_RUNS", str(folder))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": NOTEBOOK.parent}}
    )
    client.execute()
    assert not outputs(nb, "error")
    stdout = "".join(o.text for o in outputs(nb, "stream") if o.name == "stdout")
    meta = json.loads((local_run / "run.json").read_text())
    assert f"analysing group {fingerprint(meta)} (1 of 3 runs)" in stdout, stdout
    assert "regressions: 0" in stdout  # BASE and NEW: the one sweep, compared with itself
