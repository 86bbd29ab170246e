"""Phone facts are typed (PhoneFacts) yet run.json keeps them exactly as before, and
`find_files` (what `recover` needs) is on the Target interface.

The facts script's output here was captured text (a parser test: no device needed);
run_json_target.json is what the dict-based parser of c462022 wrote for it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from droidoom.run import recover
from droidoom.targets import LocalTarget
from droidoom.targets.adb_facts import parse_facts
from droidoom.targets.base import Target, file_glob
from droidoom.targets.phone_facts import PhoneFacts, PowerState

DATA = Path(__file__).parent / "data" / "phone_facts"


def parsed() -> tuple[PhoneFacts, dict]:
    facts, hashes = parse_facts((DATA / "facts_output.txt").read_text(), "R58M")
    assert facts.phone is not None
    phone = replace(facts.phone, adb_server="127.0.0.1:5037", adb_features=("cmd", "shell_v2"))
    return phone, replace(facts, phone=phone).to_json()


def test_run_json_target_is_unchanged_key_for_key():
    _, doc = parsed()
    expected = json.loads((DATA / "run_json_target.json").read_text())
    assert json.dumps(doc) == json.dumps(expected)  # same keys, same order, same values


def test_phone_facts_are_typed():
    phone, _ = parsed()
    assert phone.uid == 2000 and phone.su is None and phone.su_denied
    assert phone.power == PowerState("Awake", True, 2, False, 0, 30000)
    assert phone.thermal_c == {"battery": 31.2, "skin-therm": 29.5}
    assert phone.cpu_governors == ("schedutil",) and phone.perf_event_paranoid == 3


def test_a_host_has_no_phone_facts_and_no_phone_keys_in_run_json():
    facts = LocalTarget().facts()
    assert facts.phone is None
    doc = facts.to_json()
    assert "phone" not in doc and doc["extra"] == facts.extra


def test_find_files_is_on_the_interface():
    assert "find_files" in Target.__abstractmethods__


def test_local_find_files_feeds_recover(tmp_path):
    for name in ("records-r1.bin", "records-r2.bin", "plan-r1.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "records-dir.bin").mkdir()  # not a file: never listed
    with LocalTarget(workdir=str(tmp_path)) as t:
        assert t.find_files("records-*.bin") == [
            str(tmp_path / "records-r1.bin"), str(tmp_path / "records-r2.bin")
        ]
        assert recover.pending(t) == {"r1": str(tmp_path / "records-r1.bin"),
                                      "r2": str(tmp_path / "records-r2.bin")}  # fmt: skip


@pytest.mark.parametrize("pattern", ["../x*", "a b", "$(reboot)", "*;rm", ""])
def test_find_files_refuses_what_is_not_a_file_glob(pattern):
    with pytest.raises(ValueError):
        file_glob(pattern)
