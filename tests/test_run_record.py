"""run.json has one writer (droidoom/run/record.py) and it refuses the status changes no
run makes: a complete run stays complete, whoever asks (issue 19.1, issue 16)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import droidoom
from droidoom import store
from droidoom.errors import DataError
from droidoom.run import record

PACKAGE = Path(droidoom.__file__).parent


def _meta(status: str, run_id: str = "r1", **kw: object) -> dict[str, object]:
    return {"run_id": run_id, "device": "dev", "status": status, "started": "t0", **kw}


def test_only_the_record_module_writes_run_json():
    writers = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "run" / "record.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and "write_json" in ast.unparse(node.func):
                if "RUN_JSON" in ast.unparse(node):
                    writers.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert writers == []


def test_a_run_goes_running_then_complete_and_its_own_run_may_add_notices(tmp_path):
    record.write(tmp_path, _meta("running"))
    record.write(tmp_path, _meta("complete", writes_recorded=10))
    record.write(tmp_path, _meta("complete", writes_recorded=10, notices=["after"]))
    meta = store.read_run(tmp_path).meta
    assert (meta["status"], meta["notices"], meta["format"]) == ("complete", ["after"], 1)


@pytest.mark.parametrize("status", ["partial", "failed", "running"])
def test_a_complete_run_is_never_made_anything_else(tmp_path, status):
    record.write(tmp_path, _meta("complete"))
    before = (tmp_path / store.RUN_JSON).read_bytes()
    with pytest.raises(DataError, match="does not make a complete run"):
        record.write(tmp_path, _meta(status, reason="forged"))
    assert (tmp_path / store.RUN_JSON).read_bytes() == before


def test_another_run_cannot_rewrite_a_complete_one(tmp_path):
    record.write(tmp_path, _meta("complete"))
    with pytest.raises(DataError, match="only that run may update it"):
        record.write(tmp_path, _meta("complete", run_id="r2"))
    assert store.read_run(tmp_path).meta["run_id"] == "r1"


def test_a_partial_run_stays_partial_and_a_failed_one_may_be_recovered(tmp_path):
    record.write(tmp_path, _meta("partial"))
    with pytest.raises(DataError):
        record.write(tmp_path, _meta("complete"))
    failed = tmp_path / "failed"
    failed.mkdir()
    record.write(failed, _meta("failed", error="boom"))
    record.write(failed, _meta("partial", reason="recovered"))
    assert store.read_run(failed).meta["status"] == "partial"


def test_a_field_of_the_wrong_type_is_refused_before_writing(tmp_path):
    with pytest.raises(DataError, match="writes_recorded"):
        record.write(tmp_path, _meta("running", writes_recorded="many"))
    assert not (tmp_path / store.RUN_JSON).exists()


def test_mark_partial_changes_only_a_run_that_still_says_running(tmp_path):
    record.write(tmp_path, _meta("running"))
    assert record.mark_partial(tmp_path, "its process was killed")
    meta = store.read_run(tmp_path).meta
    assert (meta["status"], meta["reason"]) == ("partial", "its process was killed")
    assert not record.mark_partial(tmp_path, "again")
    assert store.read_run(tmp_path).meta["reason"] == "its process was killed"
