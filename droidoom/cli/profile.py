"""`droidoom profile`: one target (this host, a phone, a kernel in QEMU) or `--all`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from .. import signals
from ..errors import UsageError
from . import farm as cli_farm
from . import lab as cli_lab
from . import vm as cli_vm
from .app import app, console, err_console
from .options import (
    DEFAULT_OUT,
    SPEC_OPTIONS,
    AdbHost,
    AdbPort,
    Capture,
    Compress,
    Cpu,
    Fifo,
    Order,
    Out,
    Repeat,
    ReplayKinds,
    Serial,
    SpecOptions,
    spec_options,
    words,
)
from .progress import LiveProgress

if TYPE_CHECKING:  # the run machinery loads only when a command runs
    from ..capture.base import CaptureSource
    from ..run.runner import RunResult
    from ..spec import ProfileSpec
    from ..targets.base import Target
    from ..targets.select import AdbServer


@app.command()
@spec_options
def profile(
    local: Annotated[bool, typer.Option("--local", help="Profile this Linux host.")] = False,
    serial: Serial = None,
    adb_host: AdbHost = None,
    adb_port: AdbPort = None,
    spec: SpecOptions = SPEC_OPTIONS,
    cpu: Cpu = None,
    fifo: Fifo = None,
    order: Order = None,
    capture: Capture = "clock",
    out: Out = DEFAULT_OUT,
    all_devices: Annotated[
        bool, typer.Option("--all", help="Every device on the adb server, in parallel (a farm).")
    ] = False,
    kernel: cli_lab.KernelImage = None,
    accel: cli_lab.Accel = "auto",
    vm_cpus: cli_lab.VmCpus = 2,
    vm_memory: cli_lab.VmMemory = 1024,
    replay_kinds: ReplayKinds = None,
    compress: Compress = None,
    repeat: Repeat = None,
) -> None:
    """Time oom_score_adj writes across populations; say if this kernel has the O(N) path.

    With no --local/--serial: the single attached phone, else this host. Prints a table
    (median, p90, p99 per kind and population), a verdict, and writes a run directory
    (run.json + samples.parquet) that `droidoom.load()` reads.
    """

    from ..targets.select import AdbServer
    from ..traces.replay import spec_for_replay, trace_path

    given = spec
    asked = given.spec(cpu=cpu, fifo=fifo, order=order)
    runs = 1
    if repeat is not None and trace_path(asked.scenario) is None:
        runs, repeat = _runs(repeat, all_devices), None  # N runs; for a replay, N plays
    sweep = spec_for_replay(
        asked, population_given=given.population is not None,
        kinds_given=given.kinds is not None, replay_kinds=words(replay_kinds), compress=compress,
        repeat=repeat,
    )  # fmt: skip
    if kernel is not None and (local or serial or all_devices):
        raise UsageError("--kernel profiles a VM: drop --local/--serial/--all")
    if all_devices:  # a one-server farm (droidoom/cli/farm.py)
        if local or serial:
            raise UsageError("--all profiles every device on the server: drop --local/--serial")
        server = AdbServer.from_env(adb_host, adb_port)
        raise typer.Exit(cli_farm.profile_all(server, sweep, out, capture))
    sources = _captures(capture)
    if kernel is not None:  # droidoom/cli/lab.py: a kernel image booted in QEMU
        sweep = cli_vm.vm_spec_defaults(sweep, given.threads is not None, given.writes is not None)
    for i in range(runs):  # each run complete on its own: a failed one stops the rest
        if runs > 1:
            console.rule(f"[bold]run {i + 1} of {runs}[/]", align="left")
        if kernel is not None:
            vm = cli_vm.open_vm(kernel, accel, vm_cpus, vm_memory)
            _run_and_print(vm, sweep, out, sources, {"vm": vm.vm_info()})
        else:
            target = _select(local, serial, AdbServer.from_env(adb_host, adb_port))
            _run_and_print(target, sweep, out, sources, None)


#: Most runs one `profile --repeat` makes (a slip like --repeat 10000 would run for days).
MAX_REPEAT = 100


def _runs(repeat: int, all_devices: bool) -> int:
    """How many runs `--repeat` asks for (a role-change scenario); UsageError if out of
    range or with --all."""
    if not 1 <= repeat <= MAX_REPEAT:
        raise UsageError(f"--repeat must be 1..{MAX_REPEAT} runs (got {repeat})")
    if all_devices and repeat > 1:
        raise UsageError("--repeat N with --all is not supported: run `profile --all` N times")
    return repeat


def _select(local: bool, serial: str | None, server: AdbServer) -> Target:
    """The target --local / --serial names (else the one phone, else this host); prints
    the notice on how it was chosen, if any."""
    from ..targets.select import select_target

    target, notice = select_target(local=local, serial=serial, server=server)
    if notice:
        err_console.print(f"[dim]{notice}[/]")
    return target


def _run_and_print(
    target: Target,
    spec: ProfileSpec,
    out: Path,
    sources: Sequence[CaptureSource],
    extra_meta: dict[str, Any] | None,
) -> None:
    """Profile `target` with live progress, close it, print the run; exit 1 unless it
    completed (saying how to fetch what a dropped phone still holds), 130 on Ctrl-C."""
    from ..run.runner import Interrupted
    from ..run.runner import profile as run_profile

    try:
        with target, LiveProgress([target.name], state="starting", compact=False) as bar:
            result = run_profile(
                target, spec, out, captures=sources, progress=bar.callbacks(target.name, "note"),
                extra_meta=extra_meta,
            )
    except Interrupted as e:
        _finish(target, e.result)
        raise typer.Exit(signals.exit_code(e)) from None
    _finish(target, result)
    if result.status != "complete":
        raise typer.Exit(1)


def _finish(target: Target, result: RunResult) -> None:
    """Print the run; over adb, end with what to run for what it left on the device."""
    _print_run(result)
    # A device keeps this run's files (this host's workdir goes, a VM ends with the run).
    reach = target.is_remote and target.reach_again() is not None
    if reach and (hint := device_hint(target.facts().device, result)):
        console.print(hint, highlight=False, soft_wrap=True)  # a command to copy whole


def device_hint(serial: str, result: RunResult) -> str | None:
    """The last word on a run over adb that left files on the device (a complete run
    removes them): `droidoom recover` when they hold records, else `droidoom clean`."""
    meta = result.meta
    left = result.status != "complete" or any(
        str(n).startswith("cleanup: could not remove") for n in meta.get("notices") or ()
    )
    if not left:
        return None
    recorded = max(meta.get("writes_on_device") or 0, len(result.samples))
    if result.status != "complete" and recorded:
        return (
            f"[yellow]the device keeps this run's records:[/] `droidoom recover --serial "
            f"{escape(serial)} {escape(str(result.path))}` fetches what the run lacks "
            "(once the device is back) and removes them from it"
        )
    return (
        f"[yellow]the device keeps this run's files:[/] `droidoom clean --serial "
        f"{escape(serial)}` removes them"
    )


def _captures(text: str) -> list[CaptureSource]:
    names = [n for n in (words(text) or ()) if n != "clock"]
    if not names:
        return []
    from ..capture import build_sources

    return build_sources(names)


def _print_run(result: RunResult) -> None:
    from ..report import terminal as report

    report.render_terminal(result.samples, [result.meta], console)
    status = "[green]complete[/]" if result.status == "complete" else "[yellow]partial[/]"
    console.print(f"run {status}: {result.path}")
    if result.status != "complete":
        console.print(f"[yellow]reason:[/] {escape(str(result.meta.get('reason')))}")
