"""droidoom command line. Thin: parse options, build a spec, delegate, print."""

from __future__ import annotations

import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from . import signals
from . import spec as specs
from .errors import DroidoomError, UsageError

app = typer.Typer(
    help=(
        "Measure what an oom_score_adj update costs: on the phone on your desk, a farm of "
        "phones, or this Linux host. Start with `droidoom profile --quick`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

DEFAULT_OUT = Path("droidoom-runs")


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        console.print(f"droidoom {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Measure what an oom_score_adj update costs (see `droidoom COMMAND --help`)."""


def _ints(text: str | None, what: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(
            f"{what} takes comma-separated integers, e.g. 0,400,800 (got {text!r})"
        ) from None


def _words(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(w.strip() for w in text.split(",") if w.strip())


# Options shared by profile-like commands (profile, farm run).
Population = Annotated[
    str | None,
    typer.Option("--population", "-p", help="Extra processes per sweep point, e.g. 0,400,1600."),
]
Kinds = Annotated[
    str | None,
    typer.Option(help="Target kinds: single, threaded (an app), multiprocess (CLONE_VM)."),
]
Writes = Annotated[int | None, typer.Option(help="Timed writes per kind per point.")]
Threads = Annotated[int | None, typer.Option(help="Threads in each population process.")]
Quick = Annotated[bool, typer.Option("--quick", help="Small sweep (0,400,800 x 400 writes).")]
Scenario = Annotated[
    str | None,
    typer.Option(
        help="lmkd (realistic role changes), alternate (two levels), or replay:TRACE (a "
        "phone's recorded oom_score_adj changes: Perfetto trace or ftrace text)."
    ),
]
Adj = Annotated[
    str | None, typer.Option("--adj", help="The two levels of `alternate`, e.g. 0,900.")
]
Rate = Annotated[
    float | None, typer.Option(help="Pace writes at N updates/s (default: back to back).")
]
Mode = Annotated[
    str | None,
    typer.Option(help="reopen (open+write+close, as lmkd) and/or persistent (one fd)."),
]
Seed = Annotated[int | None, typer.Option(help="Scenario seed: same seed, same schedule.")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Directory that receives run directories.")]
TargetThreads = Annotated[int | None, typer.Option(help="Threads in the `threaded` target.")]
Serial = Annotated[
    str | None, typer.Option("--serial", "-s", help="Device serial (default: ANDROID_SERIAL).")
]
AdbHost = Annotated[
    str | None,
    typer.Option(help="adb server host (default: $ADB_SERVER_SOCKET, $ANDROID_ADB_SERVER_ADDRESS)"),
]
AdbPort = Annotated[
    int | None, typer.Option(help="adb server port (default: $ANDROID_ADB_SERVER_PORT or 5037).")
]
Cpu = Annotated[
    int | None,
    typer.Option(help="Pin the writer to this CPU (default: the core it starts on; -1: unpinned)."),
]
Fifo = Annotated[
    bool | None,
    typer.Option("--fifo/--no-fifo", help="Writer at SCHED_FIFO like lmkd when allowed (default)."),
]
Order = Annotated[
    str | None,
    typer.Option(help="Sweep order: updown (up and back down: drift shows) or ascending."),
]
Capture = Annotated[
    str,
    typer.Option(
        help="Capture sources: clock (always), ftrace, perf, perfetto (no root, Android 10+). "
        "e.g. clock,ftrace,perf"
    ),
]


def build_spec(
    quick=False, population=None, kinds=None, writes=None, threads=None, target_threads=None,
    scenario=None, adj=None, rate=None, mode=None, seed=None, base=None, *, cpu=None, fifo=None,
    order=None,
) -> specs.ProfileSpec:  # fmt: skip
    """Spec from CLI options: `base` (else --quick or the default), explicit options on top."""
    base = base or (specs.QUICK if quick else specs.DEFAULT)
    changes = {
        "populations": _ints(population, "--population"),
        "kinds": _words(kinds),
        "writes": writes,
        "threads": threads,
        "target_threads": target_threads,
        "scenario": scenario,
        "levels": _ints(adj, "--adj"),
        "rate": rate,
        "modes": _words(mode),
        "seed": seed,
        "cpu": cpu,
        "fifo": fifo,
        "order": order,
    }
    return replace(base, **{k: v for k, v in changes.items() if v is not None}).validate()


class _Bar:
    """runner.Progress callbacks drawn as a rich progress bar."""

    def __init__(self, label: str):
        self.rich = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("writes"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        )
        self.label = label
        self.task = None

    def callbacks(self):
        from .runner import Progress as RunnerProgress

        def start(total: int) -> None:
            self.task = self.rich.add_task(self.label, total=total)

        def advance(done: int) -> None:
            if self.task is not None:
                self.rich.update(self.task, completed=done)

        def point(idx: int, population: int) -> None:
            if self.task is not None:
                self.rich.update(self.task, description=f"{self.label} · {population} procs")

        def notice(text: str) -> None:
            self.rich.console.print(f"[yellow]note:[/] {text}")

        return RunnerProgress(start=start, advance=advance, point=point, notice=notice)


@app.command()
def profile(
    local: Annotated[bool, typer.Option("--local", help="Profile this Linux host.")] = False,
    serial: Serial = None,
    adb_host: AdbHost = None,
    adb_port: AdbPort = None,
    quick: Quick = False,
    population: Population = None,
    kinds: Kinds = None,
    writes: Writes = None,
    threads: Threads = None,
    target_threads: TargetThreads = None,
    scenario: Scenario = None,
    adj: Adj = None,
    rate: Rate = None,
    mode: Mode = None,
    seed: Seed = None,
    cpu: Cpu = None,
    fifo: Fifo = None,
    order: Order = None,
    capture: Capture = "clock",
    out: Out = DEFAULT_OUT,
    all_devices: Annotated[
        bool, typer.Option("--all", help="Every device on the adb server, in parallel (a farm).")
    ] = False,
    kernel: Annotated[
        Path | None,
        typer.Option(
            "--kernel", help="Boot this x86_64 bzImage in QEMU and profile it (needs: `droidoom "
            "lab config`)."
        ),
    ] = None,
    accel: Annotated[str, typer.Option(help="--kernel: auto (KVM if it boots), kvm, tcg.")] = (
        "auto"
    ),
    vm_cpus: Annotated[int, typer.Option(help="--kernel: vCPUs of the guest.")] = 2,
    vm_memory: Annotated[int, typer.Option(help="--kernel: guest RAM in MiB.")] = 1024,
    replay_kinds: Annotated[
        str | None,
        typer.Option(help="replay:TRACE: target kinds each traced process is replayed on "
                     "(default threaded, like an app)."),
    ] = None,
    compress: Annotated[
        float | None,
        typer.Option(help="replay:TRACE: play the trace N times faster (default 1: its own "
                     "pace; 0: back to back)."),
    ] = None,
) -> None:
    """Time oom_score_adj writes across populations; say if this kernel has the O(N) path.

    With no --local/--serial: the single attached phone, else this host. Prints a table
    (median, p90, p99 per kind and population), a verdict, and writes a run directory
    (run.json + samples.parquet) that `droidoom.load()` reads.
    """
    from .runner import profile as run_profile
    from .targets.select import AdbServer, select_target

    spec = build_spec(
        quick, population, kinds, writes, threads, target_threads, scenario, adj, rate, mode, seed,
        cpu=cpu, fifo=fifo, order=order,
    )  # fmt: skip
    from .replay import spec_for_replay

    spec = spec_for_replay(
        spec, population_given=population is not None, kinds_given=kinds is not None,
        replay_kinds=_words(replay_kinds), compress=compress,
    )  # fmt: skip
    if all_devices:  # a one-server farm (droidoom/cli_farm.py)
        if local or serial:
            raise UsageError("--all profiles every device on the server: drop --local/--serial")
        server = AdbServer.from_env(adb_host, adb_port)
        raise typer.Exit(cli_farm.profile_all(server, spec, out, capture))
    sources = _captures(capture)
    extra_meta = None
    if kernel is not None:  # droidoom/cli_lab.py: a kernel image booted in QEMU
        if local or serial or all_devices:
            raise UsageError("--kernel profiles a VM: drop --local/--serial/--all")
        spec = cli_lab.vm_spec_defaults(spec, threads is not None, writes is not None)
        target, notice = cli_lab.open_vm(kernel, accel, vm_cpus, vm_memory), None
        extra_meta = {"vm": target.vm_info()}
    else:
        target, notice = select_target(
            local=local, serial=serial, server=AdbServer.from_env(adb_host, adb_port)
        )
    if notice:
        err_console.print(f"[dim]{notice}[/]")
    from .runner import Interrupted

    bar = _Bar(target.name)
    try:
        with bar.rich:
            result = run_profile(
                target, spec, out, captures=sources, progress=bar.callbacks(),
                extra_meta=extra_meta,
            )
    except Interrupted as e:
        _print_run(e.result)
        raise typer.Exit(signals.exit_code(e)) from None
    finally:
        target.close()
    _print_run(result)
    if result.status != "complete":
        # A device that dropped keeps its records file: say how to fetch it later.
        if target.facts().transport == "adb" and not len(result.samples):
            console.print(
                "[yellow]the device keeps what it recorded:[/] once it is back, run "
                f"`droidoom recover --serial {target.facts().device} {result.path}`"
            )
        raise typer.Exit(1)


def _captures(text: str):
    names = [n for n in (_words(text) or ()) if n != "clock"]
    if not names:
        return []
    from .capture import build_sources

    return build_sources(names)


def _print_run(result) -> None:
    from . import report

    report.render_terminal(result.samples, [result.meta], console)
    status = "[green]complete[/]" if result.status == "complete" else "[yellow]partial[/]"
    console.print(f"run {status}: {result.path}")
    if result.status != "complete":
        console.print(f"[yellow]reason:[/] {escape(str(result.meta.get('reason')))}")


# Sub-command modules register themselves on `app` (kept apart so each stays small).
from . import cli_adb, cli_analysis, cli_cost, cli_export, cli_farm, cli_lab  # noqa: E402, F401


def _show_warning(message, category, *_args, **_kw) -> None:
    """Warnings (a skipped corrupt run, a cleanup that failed) as one yellow line."""
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)


def main() -> None:
    """Console entry point: DroidoomErrors become one red line and an exit code."""
    signals.install()  # SIGTERM/SIGHUP save the partial run like Ctrl-C
    warnings.showwarning = _show_warning
    try:
        rv = app(standalone_mode=False)
        sys.exit(rv if isinstance(rv, int) else 0)  # typer.Exit(n) is returned, not raised
    except DroidoomError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}")  # "[[devices]]" is not markup
        sys.exit(e.exit_code)
    except KeyboardInterrupt as e:
        err_console.print("[yellow]interrupted[/]: partial results, if any, were saved")
        sys.exit(signals.exit_code(e))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:
        # Click's usage errors arrive here in non-standalone mode (typer vendors click,
        # so match by behaviour rather than class).
        if callable(getattr(e, "show", None)) and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":
            sys.exit(130)
        raise
