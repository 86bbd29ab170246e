"""CLI commands: `droidoom farm run|devices` (registered on droidoom.cli.app.app).

Also the pieces other commands reuse: `profile_all` (`droidoom profile --all`) and
`show_inventory` (`droidoom devices --inventory`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape as _e
from rich.table import Table

from .. import signals, units
from .. import spec as specs
from ..errors import UsageError
from ..vocab import KINDS
from .app import app, console, err_console
from .options import DEFAULT_OUT, SPEC_OPTIONS, Out, SpecOptions, spec_options
from .progress import LiveProgress

if TYPE_CHECKING:
    from ..farm.fleet import FarmResult
    from ..farm.inventory import FarmDevice, Inventory, Resolution
    from ..farm.results import DeviceOutcome
    from ..run.runner import Progress
    from ..spec import ProfileSpec
    from ..targets.adb_server import AdbServer

# farm/inventory/report pull in pandas and adbutils: imported where used, so that
# `droidoom --help` stays fast.

farm_app = typer.Typer(
    help="Profile many phones behind several adb servers: one command, one dataset.",
    no_args_is_help=True,
)
app.add_typer(farm_app, name="farm")

InventoryPath = Annotated[
    Path,
    typer.Option(
        "--inventory", "-i", help="farm.toml: adb servers, device selectors, per-device overrides."
    ),
]
Jobs = Annotated[
    int | None,
    typer.Option("--jobs", "-j", help="Devices profiled at once (default: inventory, else 8)."),
]
Retries = Annotated[
    int | None, typer.Option(help="Retries per device after a transient adb error (default 2).")
]
Backoff = Annotated[
    float | None, typer.Option(help="Seconds before the first retry; doubles each time (1).")
]


class _Rows:
    """farm.FarmObserver drawn by the CLI's LiveProgress: one row per device."""

    def __init__(self, devices: tuple[FarmDevice, ...]):
        self.live = LiveProgress(d.label for d in devices)

    def progress(self, dev: FarmDevice) -> Progress:
        callbacks: Progress = self.live.callbacks(dev.label)
        return callbacks

    def status(self, dev: FarmDevice, text: str) -> None:
        self.live.state(dev.label, text)

    def notice(self, text: str) -> None:
        self.live.notice(text)


def farm_spec(inv: Inventory, options: SpecOptions) -> specs.ProfileSpec:
    """--quick or the default, then the inventory's [profile], then explicit CLI options;
    a replay:TRACE sized from its trace, as `profile` does (droidoom/traces/replay.py)."""
    from ..traces.replay import spec_for_replay

    base = replace(specs.QUICK if options.quick else specs.DEFAULT, **dict(inv.profile))
    given = set(inv.profile) | {k for k in ("population", "kinds") if getattr(options, k)}
    return spec_for_replay(options.spec(base=base), kinds_given="kinds" in given,
                           population_given=bool({"population", "populations"} & given))


def _resolve(inv: Inventory) -> Resolution:
    from ..farm.inventory import resolve

    with err_console.status(f"asking {len(inv.servers)} adb server(s) for their devices"):
        return resolve(inv)


def run_and_print(
    res: Resolution,
    spec: ProfileSpec,
    out: Path,
    jobs: int | None = None,
    retries: int | None = None,
    backoff: float | None = None,
) -> int:
    """Run the farm with live per-device progress, print the table; return the exit code."""
    if jobs is not None and jobs < 1:
        raise UsageError("--jobs must be at least 1")
    from ..farm.fleet import FarmInterrupted, run_farm

    bars = _Rows(res.devices)
    interrupted = 0
    with bars.live:
        try:
            result = run_farm(
                res, spec, out, concurrency=jobs, retries=retries, backoff=backoff, observer=bars
            )
        except FarmInterrupted as e:
            result, interrupted = e.result, signals.exit_code(e)
    print_farm(result)
    if interrupted:
        return interrupted
    return 0 if result.ok else 1


def _medians(summary: dict[str, Any], kind: str) -> str:
    by_pop = (summary.get("medians_ns") or {}).get(kind)
    if not by_pop:
        return "-"
    pops = sorted(by_pop, key=int)
    first, last = by_pop[pops[0]], by_pop[pops[-1]]
    return units.us(first) if len(pops) == 1 else f"{units.us(first)} → {units.us(last)}"


#: Column headers for the per-kind medians (short: the table must fit 80 columns).
_KIND_HEAD = {"single": "single µs", "threaded": "threaded µs", "multiprocess": "multi µs"}


def _writes(o: DeviceOutcome) -> str:
    from ..farm.fleet import on_device

    kept = len(o.result.samples) if o.result is not None else 0
    held = on_device(o.result)
    return str(kept) if held <= kept else f"{kept}+{held - kept}*"


def print_farm(result: FarmResult) -> None:
    """Final per-device table: status, verdict, key medians; errors below it.

    Laid out for an 80-column terminal: no vertical rules, labels never wrapped, model
    and the single-process control only when there is room, long texts as notes below.
    """
    from rich import box

    outcomes = result.outcomes
    measured = {k for o in outcomes for k in o.summary.get("medians_ns") or {}}
    wide = console.width >= 110
    kinds = [k for k in KINDS if k in measured and (wide or k != "single")]
    done = sum(o.status == "complete" for o in outcomes)
    servers = len({o.device.server.name for o in outcomes}) > 1
    t = Table(
        title=f"farm {result.farm_id}: {done}/{len(outcomes)} devices complete",
        caption="medians: lowest → highest population; * required device",
        title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
    )  # fmt: skip
    t.add_column("device", no_wrap=True)
    if servers:
        t.add_column("server", no_wrap=True)
    if wide:
        t.add_column("model", max_width=16)
    t.add_column("status", no_wrap=True)
    t.add_column("verdict", no_wrap=True)
    for k in kinds:
        t.add_column(_KIND_HEAD[k], justify="right", no_wrap=True)
    t.add_column("writes", justify="right", no_wrap=True)
    colour = {"complete": "green", "partial": "yellow", "cancelled": "yellow", "failed": "red"}
    vcolour = {"fixed": "green", "regressed": "red", "inconclusive": "yellow"}
    notes = []
    for o in outcomes:
        d = o.device
        verdict = o.summary.get("verdict", "-")
        status = f"[{colour.get(o.status, 'white')}]{o.status}[/]"
        if o.error:
            notes.append((d.label, o.error))
            status += f" [{len(notes)}]"
        t.add_row(
            _e(d.label) + ("*" if d.required else ""),
            *([_e(d.server.name)] if servers else []),
            *([_e(d.seen.model or "-")] if wide else []),
            status,
            f"[{vcolour.get(verdict, 'white')}]{verdict}[/]",
            *(_medians(o.summary, k).replace(" → ", "→") for k in kinds),
            _writes(o),
        )
    console.print(t)
    for i, (label, note) in enumerate(notes, 1):
        console.print(f"[{i}] {_e(label)}: {_e(note)}")
    if any(_writes(o).endswith("*") for o in outcomes):
        console.print("* writes still on the device: `droidoom recover` brings them home")
    for name, error in result.server_errors:
        console.print(f"[yellow]server {_e(name)} was not reachable:[/] {_e(error)}")
    style = {"complete": "green", "partial": "yellow"}.get(result.status, "bold yellow")
    console.print(f"farm [{style}]{result.status}[/]: {_e(str(result.path))}", soft_wrap=True)
    console.print(f"[dim]`droidoom report {_e(str(result.path))}` compares the devices[/]",
                  soft_wrap=True)  # fmt: skip


def show_inventory(path: Path) -> int:
    """Print what an inventory resolves to (servers, devices, selection); 1 if a required
    device is missing."""
    from ..farm.inventory import load_inventory

    res = _resolve(load_inventory(path))
    for s in res.servers:
        down = f"[red]unreachable[/]: {_e(s.error or '')}"
        status = "[green]reachable[/]" if s.reachable else down
        n = sum(d.server == s.entry for d in res.seen)
        console.print(
            f"server [bold]{_e(s.entry.name)}[/] ({s.entry.server}): {status}, {n} device(s)"
        )
    chosen = {(d.server.name, d.serial): d for d in res.devices}
    t = Table(title=f"inventory {_e(res.inventory.name)}", title_justify="left")
    for head in ("server", "serial", "state", "model", "selected as", "required", "overrides"):
        t.add_column(head, overflow="fold")
    for seen in res.seen:
        d = chosen.get((seen.server.name, seen.serial))
        overrides = []
        if d is not None and d.workdir:
            overrides.append(f"workdir={d.workdir}")
        if d is not None:
            overrides += [f"{k}={v}" for k, v in d.profile.items()]
        state = _e(seen.state if seen.error is None else seen.error)
        t.add_row(
            _e(seen.server.name),
            _e(seen.serial),
            state if seen.usable else f"[red]{state}[/]",
            _e(seen.model or "-"),
            f"[green]{_e(d.label)}[/]" if d is not None else "[dim]not selected[/]",
            "yes" if d is not None and d.required else "",
            _e(", ".join(overrides)),
        )
    console.print(t)
    usable = sum(d.seen.usable for d in res.devices)
    console.print(f"{len(res.devices)} device(s) selected, {usable} usable")
    for m in res.missing:
        console.print(f"[red]missing:[/] {_e(m)}")
    return 1 if res.missing else 0


@farm_app.command("run")
@spec_options
def farm_run(
    inventory: InventoryPath,
    spec: SpecOptions = SPEC_OPTIONS,
    jobs: Jobs = None,
    retries: Retries = None,
    backoff: Backoff = None,
    out: Out = DEFAULT_OUT,
) -> None:
    """Profile every device the inventory selects, in parallel, into one farm directory.

    Live progress per device; a failed or vanished device is recorded with its error
    while the others finish. Writes <out>/<farm-id>/ (farm.json + one run per device),
    which `droidoom.load()` reads as one DataFrame and `droidoom report` compares.
    Exit 0 when every required device (and at least one device) completed, 1 otherwise,
    130 on Ctrl-C.
    """
    from ..farm.inventory import load_inventory

    inv = load_inventory(inventory)
    profile_spec = farm_spec(inv, spec)
    raise typer.Exit(run_and_print(_resolve(inv), profile_spec, out, jobs, retries, backoff))


@farm_app.command("devices")
def farm_devices(inventory: InventoryPath) -> None:
    """Show what an inventory resolves to: each server, its devices, which are selected."""
    raise typer.Exit(show_inventory(inventory))


def profile_all(server: AdbServer, spec: ProfileSpec, out: Path, capture: str = "clock") -> int:
    """`droidoom profile --all`: every device on one adb server, as a one-server farm."""
    if any(c.strip() not in ("", "clock") for c in capture.split(",")):
        raise UsageError("--capture ftrace/perf is per device: use --serial for captures")
    server.require_up(UsageError)
    from ..farm.inventory import Inventory

    return run_and_print(_resolve(Inventory.single_server(server)), spec, out)
