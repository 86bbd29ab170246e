"""Option types the commands share, and the one profile option set (`profile`, `farm run`).

`spec_options` puts the sweep options (--quick, --population, ... --seed) into a command's
signature in one place and hands the command one `SpecOptions`, which builds the spec.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from .. import spec as specs
from ..errors import UsageError

DEFAULT_OUT = Path("droidoom-runs")
_R = TypeVar("_R")


def ints(text: str | None, what: str) -> tuple[int, ...] | None:
    """Comma-separated integers ("0,400,800"), None for None; UsageError names `what`."""
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(
            f"{what} takes comma-separated integers, e.g. 0,400,800 (got {text!r})"
        ) from None


def words(text: str | None) -> tuple[str, ...] | None:
    """Comma-separated words, blanks dropped; None for None."""
    return None if text is None else tuple(w.strip() for w in text.split(",") if w.strip())


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
ReplayKinds = Annotated[
    str | None,
    typer.Option(help="replay:TRACE: target kinds each traced process is replayed on "
                 "(default threaded, like an app)."),
]  # fmt: skip
Compress = Annotated[
    float | None,
    typer.Option(help="replay:TRACE: play the trace N times faster (default 1: its own "
                 "pace; 0: back to back)."),
]  # fmt: skip
Repeat = Annotated[
    int | None,
    typer.Option(help="Other scenarios: N runs of the same spec back to back, each a "
                 "complete run directory of its own (pool them per side: `droidoom compare "
                 "--base DIR --new DIR`). replay:TRACE: play the trace N times at each "
                 "population, each play right after a sweep point of the lmkd role model on "
                 "the same targets, so `droidoom cost` prices it and checks the estimate "
                 "against the plays' spread (default 1: one play, no sweep points)."),
]  # fmt: skip
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
Block = Annotated[
    int | None,
    typer.Option(help="Kinds take turns in blocks of N writes (default 50; 1: write by write). "
                 "A multiprocess write walks every process and evicts caches: in blocks, the "
                 "controls are not measured right after it."),
]  # fmt: skip
Settle = Annotated[
    int | None,
    typer.Option(help="First writes after a switch of kind kept as warm-up, out of medians "
                 "and fits (default 2)."),
]  # fmt: skip
Out = Annotated[Path, typer.Option("--out", "-o", help="Directory that receives run directories.")]
Measure = Annotated[
    str | None,
    typer.Option(help="adj (default): time oom_score_adj writes. kill: time lmkd's kill path "
                 "(pidfd_send_signal + process_mrelease) on a fresh victim per kill; "
                 "--writes then counts kills per kind per point (default 200, --quick 100)."),
]  # fmt: skip
VictimRss = Annotated[
    int | None,
    typer.Option(help="--measure kill: KiB of memory each victim touches (default 64)."),
]
TargetThreads = Annotated[int | None, typer.Option(help="Threads in the `threaded` target.")]
Serial = Annotated[
    str | None, typer.Option("--serial", "-s", help="Device serial (default: ANDROID_SERIAL).")
]
AdbHost = Annotated[
    str | None,
    typer.Option(help="adb server host (default: from the variables ADB_SERVER_SOCKET or "
                 "ANDROID_ADB_SERVER_ADDRESS)"),  # no word wider than the help column
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
    quick: bool = False, population: str | None = None, kinds: str | None = None,
    writes: int | None = None, threads: int | None = None, target_threads: int | None = None,
    scenario: str | None = None, adj: str | None = None, rate: float | None = None,
    mode: str | None = None, seed: int | None = None, base: specs.ProfileSpec | None = None,
    block: int | None = None, settle: int | None = None, *,
    cpu: int | None = None, fifo: bool | None = None, order: str | None = None,
    measure: str | None = None, victim_rss: int | None = None,
) -> specs.ProfileSpec:  # fmt: skip
    """Spec from CLI options: `base` (else --quick or the default, or their kill variants
    with --measure kill), explicit options on top."""
    if base is None and measure == "kill":
        base = specs.KILL_QUICK if quick else specs.KILL
    base = base or (specs.QUICK if quick else specs.DEFAULT)
    changes: dict[str, Any] = {  # field -> value given (None: not given); replace() checks
        "populations": ints(population, "--population"),
        "kinds": words(kinds),
        "writes": writes,
        "threads": threads,
        "target_threads": target_threads,
        "scenario": scenario,
        "levels": ints(adj, "--adj"),
        "rate": rate,
        "modes": words(mode),
        "seed": seed,
        "block": block,
        "settle": settle,
        "cpu": cpu,
        "fifo": fifo,
        "order": order,
        "measure": measure,
        "victim_rss": victim_rss,
    }
    spec: specs.ProfileSpec = replace(base, **{k: v for k, v in changes.items() if v is not None})
    return spec.validate()


@dataclass(frozen=True)
class SpecOptions:
    """The sweep options `profile` and `farm run` share, as given on the command line."""

    quick: Quick = False
    population: Population = None
    kinds: Kinds = None
    writes: Writes = None
    threads: Threads = None
    target_threads: TargetThreads = None
    scenario: Scenario = None
    adj: Adj = None
    rate: Rate = None
    mode: Mode = None
    seed: Seed = None
    block: Block = None
    settle: Settle = None
    measure: Measure = None
    victim_rss: VictimRss = None

    def spec(self, base: specs.ProfileSpec | None = None, **more: Any) -> specs.ProfileSpec:
        """The spec: `base` (else --quick or the default), these options on top, then `more`."""
        given = {f.name: getattr(self, f.name) for f in fields(self)}
        return build_spec(base=base, **given, **more)


#: The default of a command's `spec` parameter (so it may follow options with defaults);
#: `spec_options` replaces it by the options given.
SPEC_OPTIONS = SpecOptions()


def spec_options(command: Callable[..., _R]) -> Callable[..., _R]:
    """Decorator: replace `command`'s `spec: SpecOptions` parameter by the SpecOptions
    fields as options (same names, help and order), and pass them back as one SpecOptions."""
    sig = inspect.signature(command, eval_str=True)
    hints = get_type_hints(SpecOptions, include_extras=True)  # the Annotated option types
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(SPEC_OPTIONS, name),
                          annotation=hints[name])
        for name in (f.name for f in fields(SpecOptions))
    ]  # fmt: skip
    params = []
    for p in sig.parameters.values():
        params += shared if p.name == "spec" else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)]

    @functools.wraps(command)
    def wrapper(**kw: Any) -> _R:
        spec = SpecOptions(**{f.name: kw.pop(f.name) for f in fields(SpecOptions)})
        return command(spec=spec, **kw)

    # functools' wrapper type does not declare __signature__, which inspect (typer) reads
    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer must read the new signature, not the command's
    return wrapper
