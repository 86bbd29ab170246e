"""How a helper run ended, from its events and exit code alone (issue 10, item 1):
`classify_end` is pure, so every branch is checked here without a target."""

from __future__ import annotations

import dataclasses

import pytest

from droidoom.protocol import EXIT_OK, parse_line
from droidoom.run.helper_io import Probe, probe
from droidoom.run.session import Ending, classify_end
from droidoom.targets.local import LocalTarget


def events(*lines: str) -> dict:
    evs = [parse_line(line) for line in lines]
    return {e.kind: e for e in evs if e}


HELLO = "hello proto=1 source=x abi=x86_64 pid=42"
DONE = "done status=complete writes=40"


def test_a_finished_helper_that_exited_0_is_complete():
    assert classify_end(events(HELLO, DONE), 40, EXIT_OK) == Ending(None, False)


def test_without_done_a_remote_device_is_presumed_gone():
    end = classify_end(events(HELLO), 12, None, remote=True)
    assert end.reason == "the helper stopped without finishing (exit None); device disconnected?"
    assert end.link_lost and end.fatal is None


def test_without_done_the_local_host_is_not_a_lost_link():
    end = classify_end(events(HELLO), 12, 137)
    assert "exit 137" in (end.reason or "") and not end.link_lost


def test_a_wrapper_failure_names_the_wrapper_and_is_no_lost_link():
    end = classify_end({}, 0, 1, wrapper_failure="perf failed (exit 1)", remote=True)
    assert end == Ending("perf failed (exit 1)", False)


def test_an_error_before_any_write_is_fatal():
    end = classify_end(events(HELLO, "error where=spawn msg='pid_max too low'"), 0, 4)
    assert end.fatal == "pid_max too low"


def test_an_error_after_writes_keeps_the_partial_run():
    end = classify_end(events(HELLO, "error where=write msg=EPERM"), 7, 4)
    assert end == Ending("helper error: EPERM", False)


def test_what_stopped_the_stream_wins_over_what_followed():
    end = classify_end(
        events(HELLO, "error msg=EPIPE"), 7, 130, stopped="cancelled", link_lost=False
    )
    assert end.reason == "cancelled"
    lost = classify_end(events(HELLO), 7, None, stopped="adb: device offline", link_lost=True)
    assert lost == Ending("adb: device offline", True)


def test_an_interrupted_done_says_why():
    end = classify_end(events(HELLO, "done status=interrupted reason=SIGTERM"), 7, 130)
    assert end.reason == "the helper was interrupted (SIGTERM)"


@pytest.mark.parametrize("rc", [1, 4])
def test_a_complete_done_with_a_bad_exit_code_is_partial(rc):
    end = classify_end(events(HELLO, DONE), 40, rc)
    assert end.reason == f"the helper exited with {rc}"


def test_a_stopped_stream_with_an_error_before_writes_is_still_fatal():
    """Ctrl-C right after the helper refused to start: the refusal is the news."""
    end = classify_end(events("error msg=refused"), 0, 3, stopped="interrupted (Ctrl-C)")
    assert end.fatal == "refused"


def test_probe_is_typed_and_frozen():
    """The real helper on this host: hello, facts and calib as typed fields, not a dict."""
    t = LocalTarget()
    p = probe(t, t.install_helper())
    assert isinstance(p, Probe)
    assert p.hello.kind == "hello" and p.facts.kind == "facts" and p.calib.kind == "calib"
    assert p.adj_min == int(p.facts.fields["adj_min"]) and int(p.calib.fields["timer_ns"]) > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.hello = p.facts  # type: ignore[misc]
