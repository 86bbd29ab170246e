"""The package is complete: the sdist carries the C source behind the shipped binaries and
the tests, the wheel carries the helpers and the farm example, one version everywhere."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import droidoom

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    p = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "-o", str(out), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return out


@pytest.mark.slow
def test_sdist_carries_sources_and_tests(dists, tmp_path):
    (sdist,) = dists.glob("droidoom-*.tar.gz")
    assert sdist.name == f"droidoom-{droidoom.__version__}.tar.gz"
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        tar.extractall(tmp_path, filter="data")
    for need in (
        "LICENSE", "device_scripts/droidoom_helper.c", "device_scripts/build_helpers.py",
        "tests/conftest.py", "tests/adbd_peer.py", "benchmarks/bare_write.c",
        "notebooks/analysis.ipynb", "droidoom/farm_example.toml", ".ci/run",
    ):  # fmt: skip
        assert need in names, f"sdist lacks {need}"
    # The sdist's own tests run (a pure-Python module of them, against the unpacked tree).
    root = tmp_path / sdist.name.removesuffix(".tar.gz")
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_scenario.py"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:]
    assert " passed" in p.stdout


@pytest.mark.slow
def test_wheel_carries_helpers_example_and_license(dists):
    (wheel,) = dists.glob("droidoom-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for abi in ("arm64-v8a", "armeabi-v7a", "x86", "x86_64"):
        assert f"droidoom/bin/{abi}/droidoom-helper" in names
    assert "droidoom/farm_example.toml" in names
    # the lab's config fragments (`lab config [--arch arm64]`, `lab build`) and the revert
    for data in ("kernel.config", "kernel-arm64.config", "revert-67197a4f28d2.patch"):
        assert f"droidoom/lab/{data}" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_version_flag_prints_the_package_version():
    p = subprocess.run(
        [sys.executable, "-m", "droidoom", "--version"], capture_output=True, text=True
    )
    assert p.returncode == 0 and p.stdout.strip() == f"droidoom {droidoom.__version__}"


HEAVY = ("pandas", "numpy", "scipy", "matplotlib", "pyarrow", "adbutils",
         "markdown_it", "pygments")  # the last two: Typer's rich help, ~0.3 s


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["profile", "--help"],
                                  ["cost", "--help"], ["farm", "run", "--help"]])  # fmt: skip
def test_help_and_version_import_no_heavy_module(argv):
    """`--version` and `--help` start in a blink: what they print needs typer and rich only
    (scipy via cost and pandas via the specs cost 1.5 s per start before). Timed side by
    side in benchmarks/bench_startup.py; here the cause is checked, not the clock. A
    command's `--help` still pays pydantic (~0.2 s): Typer coerces the group's unset help
    flag through it; the root `--help` and `--version` do not."""
    heavy = HEAVY + (("pydantic",) if len(argv) == 1 else ())
    code = ("import sys; from droidoom.cli import main; sys.argv = ['droidoom', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert p.stdout and p.stderr.strip().splitlines()[-1] == "[]", p.stderr[-2000:]


def test_cost_help_default_trim_is_the_models():
    from droidoom.analysis import cost
    from droidoom.cli import cost as cli_cost

    assert cli_cost.TRIM == cost.TRIM
