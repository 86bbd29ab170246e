"""Targets are context managers: `with target:` closes it however the block ends (issue 10,
item 5). Observed on this host's LocalTarget, whose close removes its temporary workdir."""

from __future__ import annotations

from pathlib import Path

import pytest

from droidoom.targets.local import LocalTarget


def test_with_target_closes_it():
    with LocalTarget() as target:
        workdir = Path(target.workdir())
        assert workdir.is_dir()
    assert not workdir.exists()


def test_with_target_closes_it_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"), LocalTarget() as target:
        workdir = Path(target.workdir())
        raise RuntimeError("boom")
    assert not workdir.exists()
