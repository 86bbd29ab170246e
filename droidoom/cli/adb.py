"""CLI commands for phones over adb: devices, doctor, clean, recover (on droidoom.cli.app)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ..errors import DataError, DroidoomError, UsageError

if TYPE_CHECKING:
    from ..targets.adb import AdbTarget
    from ..targets.adb_server import AdbServer
    from ..targets.base import TargetFacts
    from .doctor import Check
from .app import app, console, err_console
from .options import DEFAULT_OUT, AdbHost, AdbPort, Serial


def _server(host: str | None, port: int | None, *, required: bool = True) -> AdbServer:
    """The adb server from options/environment; with `required`, it must be up (we never
    start one: a fresh server scans USB and multicasts mDNS)."""
    from ..targets.adb_server import AdbServer

    server: AdbServer = AdbServer.from_env(host, port)
    return server.require_up(UsageError) if required else server


def _adb_target(serial: str | None, host: str | None, port: int | None) -> AdbTarget:
    """The phone named by --serial/ANDROID_SERIAL, or the single attached one."""
    from ..targets.select import select_device

    return select_device(serial, _server(host, port, required=serial is None))


def _root_label(facts: TargetFacts) -> str:
    from ..targets.phone_facts import PhoneFacts

    p = facts.phone or PhoneFacts()
    if p.uid == 0:
        return "adbd"
    if p.su:
        return "su"
    return "adb root" if p.debuggable else "no"  # `doctor` says how


def _release(facts: TargetFacts) -> str:
    return facts.phone.android_release if facts.phone else ""


@app.command()
def devices(
    adb_host: AdbHost = None,
    adb_port: AdbPort = None,
    inventory: Annotated[
        Path | None,
        typer.Option("--inventory", "-i", help="Show what a farm.toml resolves to instead."),
    ] = None,
) -> None:
    """List the devices on the adb server: serial, model, Android, kernel, ABI, root."""
    if inventory is not None:  # farm inventory (droidoom/cli/farm.py)
        from .farm import show_inventory

        raise typer.Exit(show_inventory(inventory))
    from ..targets.adb import AdbTarget, list_devices

    server = _server(adb_host, adb_port)
    found = list_devices(server)

    def row(item: tuple[str, str]) -> list[str]:
        serial, state = item
        if state != "device":
            return [serial, state, "", "", "", "", ""]
        try:
            with AdbTarget(serial, server=server) as t:
                f = t.facts()
        except DroidoomError as e:
            return [serial, "error", str(e), "", "", "", ""]
        android = f"{_release(f)} (SDK {f.sdk})" if f.sdk else ""
        return [serial, state, f.model, android, f.kernel_release, f.abi, _root_label(f)]

    with ThreadPoolExecutor(max_workers=8) as pool:  # one facts round trip per device
        rows = list(pool.map(row, found))
    from rich import box
    from rich.markup import escape

    # 80 columns: no vertical rules, serial never wrapped, errors below.
    table = Table(title=f"devices on the adb server at {server}", box=box.SIMPLE_HEAD,
                  title_justify="left", pad_edge=False, collapse_padding=True)  # fmt: skip
    cols = ["serial", "state", "model", "android", "kernel", "abi", "root"]
    show_state = any(r[1] != "device" for r in rows)  # the column only when it says something
    for col in cols:
        if col != "state" or show_state:
            table.add_column(col, no_wrap=col in ("serial", "state", "abi"), overflow="fold")
    errors = []
    for r in rows:
        if r[1] == "error":
            errors.append(f"{r[0]}: {r[2]}")
            r = [r[0], "error", "see below", "", "", "", ""]
        table.add_row(*map(escape, r if show_state else [r[0], *r[2:]]))
    console.print(table)
    for e in errors:
        console.print(f"[red]error:[/] {escape(e)}")
    if not rows:
        console.print("no devices: plug one in (USB debugging on) or `adb connect HOST:PORT`")


@app.command()
def doctor(
    serial: Serial = None,
    local: Annotated[bool, typer.Option("--local", help="Check this Linux host.")] = False,
    adb_host: AdbHost = None,
    adb_port: AdbPort = None,
    kernel: Annotated[
        Path | None,
        typer.Option("--kernel", help="Check a kernel image for `profile --kernel` (read "
                     "from the file, nothing booted)."),
    ] = None,
) -> None:
    """What this target can do: writes, root, tracing, perf/simpleperf, limits.

    Each missing capability comes with the reason and the fix. Pushes the helper (as
    `profile` would) to probe what this user may write. With --kernel IMAGE: what that
    kernel image can do in the lab (architecture, compression, agent channel, and the
    config options it embeds with CONFIG_IKCONFIG).
    """
    from ..targets.select import select_target
    from .doctor import MISSING, OK, diagnose

    if kernel is not None:
        if local or serial:
            raise UsageError("--kernel checks an image file: drop --local/--serial")
        from .doctor_kernel import checks as kernel_checks

        if not kernel.is_file():
            raise UsageError(f"--kernel {kernel}: no such file")
        console.print(f"[bold]{kernel}[/]", soft_wrap=True, highlight=False)
        _doctor_table(kernel_checks(kernel), OK, MISSING)
        return

    target, notice = select_target(
        local=local, serial=serial, server=_server(adb_host, adb_port, required=False)
    )
    if notice:
        err_console.print(f"[dim]{notice}[/]")
    with target:
        f = target.facts()
        checks = diagnose(target)
    console.print(
        f"[bold]{target.name}[/]: {f.model}, kernel {f.kernel_release}, {f.abi}, {f.cpus} CPUs"
        + (f", Android {_release(f)} (SDK {f.sdk})" if f.sdk else "")
    )
    _doctor_table(checks, OK, MISSING)


def _doctor_table(checks: list[Check], ok: str, missing: str) -> None:
    """Checks as a table that reads in 80 columns: no vertical rules, each area named
    once, fixes numbered below the table instead of squeezed into a cell."""
    from rich import box
    from rich.markup import escape

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("area", no_wrap=True, style="bold")
    table.add_column("capability", max_width=24)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", ratio=1, overflow="fold")
    style = {ok: "green", missing: "red"}
    fixes, last = [], None
    for c in checks:
        text = escape(c.detail)
        if c.fix:
            fixes.append(c.fix)
            text += f" [cyan]→ fix \\[{len(fixes)}][/]"
        area = "" if c.area == last else c.area
        last = c.area
        table.add_row(area, escape(c.name), f"[{style.get(c.status, 'yellow')}]{c.status}[/]", text)
    console.print(table)
    for c in checks:
        if c.path:  # copyable: a line of its own, never folded
            console.print(f"{c.area}: {escape(c.path)}", soft_wrap=True, highlight=False)
    for i, fix in enumerate(fixes, 1):
        console.print(f"[cyan][{i}] fix:[/] {escape(fix)}")


@app.command()
def clean(
    serial: Serial = None,
    adb_host: AdbHost = None,
    adb_port: AdbPort = None,
    keep_records: Annotated[
        bool, typer.Option(help="Keep records files of cut-short runs for `droidoom recover`.")
    ] = False,
) -> None:
    """Remove everything droidoom pushed to the device (helper, plans, records)."""
    target = _adb_target(serial, adb_host, adb_port)
    removed, kept = target.clean(keep_records=keep_records)
    for p in removed:
        console.print(f"removed {p}")
    for p in kept:
        console.print(f"kept {p} (`droidoom recover` pulls it)")
    if not removed:
        console.print(f"{target.name}: nothing of droidoom's on the device")


@app.command()
def recover(
    run_dir: Annotated[
        Path | None, typer.Argument(help="The partial run to complete (default: all under --out).")
    ] = None,
    serial: Serial = None,
    adb_host: AdbHost = None,
    adb_port: AdbPort = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where to look for run directories.")
    ] = DEFAULT_OUT,
    keep: Annotated[bool, typer.Option(help="Leave the records on the device.")] = False,
    local: Annotated[
        bool,
        typer.Option("--local", help="Finish this host's cut-short runs (SIGKILL, full disk)."),
    ] = False,
) -> None:
    """Pull the records a device still holds after a cut-short run into its run dir.

    With --local: finish this host's runs that were killed (stale lock, tracefs instance,
    records left in this user's private droidoom directory) or could not save every
    write (disk full).
    """
    from ..farm.fleet import note_recovered
    from ..run import recover as rec

    if run_dir is not None and not (local or serial or adb_host or adb_port):
        if _recover_vm(run_dir):
            return
        local = _recover_where(run_dir)  # run.json says where the run was made
    if local:
        _recover_local(out, run_dir)
        return
    if run_dir is not None:
        serial, adb_host, adb_port = _recorded_on(run_dir, serial, adb_host, adb_port)
    target = _adb_target(serial, adb_host, adb_port)

    done = 0
    for path, remote in _to_recover(target, run_dir, out).values():
        if remote == "?":
            try:
                r = rec.recover_run(target, path, None, keep=keep)
            except DroidoomError:
                continue  # the device holds nothing for this run
        else:
            try:
                r = rec.recover_run(target, path, remote, keep=keep)
            except DataError as e:
                if run_dir is not None:
                    raise  # the run the user named: its refusal is the answer (exit 2)
                err_console.print(f"[yellow]note:[/] {e}")  # found by a scan: go on
                continue
        note_recovered(r.run_dir, r.writes)
        done += 1
        if r.writes == r.previous:
            console.print(f"{r.run_dir}: already has all {r.writes} writes the device holds")
        else:
            console.print(f"recovered {r.writes} writes into {r.run_dir} (had {r.previous})"
                          + ("" if r.removed else f"; {r.remote} kept"))  # fmt: skip
    if not done:
        console.print(f"{target.name} holds no records of cut-short runs")


def _recover_where(run_dir: Path) -> bool:
    """True for a run made on this host (`--local`), False for a phone's; a QEMU guest's
    records died with it: say so (exit 2) rather than look for an adb server."""
    from .. import store
    from ..targets.select import recover_hint

    meta = store.read_run(run_dir).meta
    hint = recover_hint(meta, run_dir)
    if hint is None:
        raise UsageError(f"{run_dir} was not made on this host or a phone: nothing of it is "
                         "left anywhere to recover")  # fmt: skip
    return "--local" in hint


def _recover_vm(run_dir: Path) -> bool:
    """`recover RUN` of a `profile --kernel` run: its records streamed to the host as they
    were made (the guest's copy died with it); a run whose droidoom was killed is marked
    partial with them. False if RUN is not a VM run."""
    from .. import store
    from ..run.streamed import is_vm_run, settle

    info = store.read_run(run_dir)
    if not is_vm_run(info.meta):
        return False
    done = settle(info)
    if done is not None:
        console.print(done[1])
    elif info.meta.get("status") == "running":
        raise UsageError(f"{run_dir} is still running (its droidoom process holds it): "
                         "let it finish or stop it, then recover")  # fmt: skip
    else:  # nothing more anywhere: said as the answer to a request that cannot be met
        raise UsageError(f"{run_dir} was made in a QEMU guest (`profile --kernel`): it holds "
                         f"the {info.meta.get('writes_recorded') or 0} writes that reached "
                         "the host as they were made; the guest's own records ended with it, "
                         "so nothing more is left to recover")  # fmt: skip
    return True


def _recover_local(out: Path, run_dir: Path | None) -> None:
    """`recover --local`: finish this host's cut-short runs, a line for each."""
    from ..run.leftovers import finish_local

    lines = finish_local(out, run_dir)
    for line in lines:
        console.print(line)
    if not lines:
        console.print("this host holds nothing of a cut-short run")


def _recorded_on(
    run_dir: Path, serial: str | None, host: str | None, port: int | None
) -> tuple[str | None, str | None, int | None]:
    """(serial, adb host, adb port) of the device and server `run_dir` was recorded on,
    where the user named none: a farm run keeps its serial and server apart from its
    label."""
    from .. import store

    meta = store.read_run(run_dir).meta
    farm = meta.get("farm") or {}
    serial = serial or farm.get("serial") or meta.get("device") or None
    if host is None and port is None and farm.get("server_address"):
        host, _, p = farm["server_address"].rpartition(":")
        port = int(p)
    return serial, host, port


def _to_recover(
    target: AdbTarget, run_dir: Path | None, out: Path
) -> dict[str, tuple[Path, str | None]]:
    """{run id: (run dir, records path on the device)}: RUN_DIR alone (path None: the
    run's own), else every run the device holds records of with its dir under `out`,
    plus this device's partial runs under `out` (path "?": the device may hold nothing)."""
    from .. import store
    from ..run import recover as rec

    if run_dir is not None:
        return {store.read_run(run_dir).run_id: (Path(run_dir), None)}
    held = rec.pending(target)
    dirs = rec.find_run_dirs(out, held)
    for run_id in sorted(set(held) - set(dirs)):
        err_console.print(f"[yellow]note:[/] {held[run_id]} has no run dir under {out}; "
                          "pass its RUN_DIR")  # fmt: skip
    todo: dict[str, tuple[Path, str | None]] = {r: (dirs[r], held[r]) for r in dirs}
    # Farm runs may have used an inventory workdir: try this device's partial runs.
    for run_id, path in rec.partial_runs_of(out, target.serial).items():
        todo.setdefault(run_id, (path, "?"))
    return todo
