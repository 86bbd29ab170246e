"""`droidoom lab ...`: reference kernels and the 2020 regression on this machine (QEMU).

`lab build` builds Debian 6.1 "fixed" and "regressed" (one-line revert of 67197a4f28d2),
`lab demo` profiles both and shows the verdicts side by side, `lab config` prints the kernel
config any image given to `droidoom profile --kernel` needs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from .. import units
from ..errors import UsageError
from .app import app, console, err_console
from .options import DEFAULT_OUT, build_spec
from .vm import profile_kernels, vm_spec_defaults

if TYPE_CHECKING:  # the lab modules load only when a lab command runs
    from ..lab.build import Kernel
    from ..run.runner import RunResult

lab = typer.Typer(
    help=(
        "The kernel lab: build reference kernels with and without the 2020 oom_score_adj "
        "fix and profile them in QEMU, no phone needed. Start with `droidoom lab demo`."
    ),
    no_args_is_help=True,
)
app.add_typer(lab, name="lab")

Accel = Annotated[
    str, typer.Option("--accel", help="auto (KVM when a boot probe works, else TCG), kvm, tcg.")
]
KernelImage = Annotated[
    Path | None,
    typer.Option("--kernel", help="Boot this kernel image in QEMU and profile it: an x86_64 "
                 "bzImage or an arm64 Image[.gz|.lz4] (needs: `droidoom lab config [--arch "
                 "arm64]`; check one with `droidoom doctor --kernel`)."),
]  # fmt: skip
ArchOpt = Annotated[str, typer.Option("--arch", help="Kernel architecture: x86_64 or arm64.")]
VmCpus = Annotated[int, typer.Option(help="--kernel: vCPUs of the guest.")]
VmMemory = Annotated[int, typer.Option(help="--kernel: guest RAM in MiB.")]


@lab.command("config")
def config(arch: ArchOpt = "x86_64") -> None:
    """Print the kernel config an image for `profile --kernel` needs (merge onto tinyconfig)."""
    from ..lab.arch import by_name

    # As is, never through rich: its wrap at 80 columns cut comments onto lines without
    # their "#", and `lab config > frag.config` broke the fragment.
    sys.stdout.write(by_name(arch).fragment.read_text())


def _stepper(prog: Progress, task: TaskID) -> Callable[[int], None]:
    return lambda n: prog.update(task, completed=n)


def build_kernels(variants: list[str], jobs: int | None = None,
                  arch_name: str = "x86_64") -> dict[str, Kernel]:  # fmt: skip
    """Build (or reuse) the reference kernels with a progress bar; {variant: Kernel}."""
    from ..lab import build as b
    from ..lab import cache_dir
    from ..lab.arch import X86_64, by_name

    arch = by_name(arch_name)
    est = b.estimate_seconds(variants, arch)
    cold = b.COLD_SECONDS_2CPU if arch is X86_64 else b.COLD_SECONDS_2CPU_ARM64
    if est:
        err_console.print(
            f"building {arch.name} {', '.join(variants)} from Debian {b.PACKAGE} {b.version()} "
            f"in {cache_dir()}: ~{est / 60:.1f} min here ({cold / 60:.0f} min "
            "cold on 2 busy cores: download, extract, one tinyconfig build; ~20 s per further "
            "variant); cached afterwards"
        )
    out: dict[str, Kernel] = {}
    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed} steps"), TimeElapsedColumn(),
                    console=err_console, transient=True)  # fmt: skip
    with prog:
        for v in variants:
            task = prog.add_task(f"kernel {v}", total=b.COLD_STEPS)
            out[v] = b.build(v, jobs=jobs, step=_stepper(prog, task), arch=arch)
    for v, k in out.items():
        how = "cached" if k.cached else f"built in {k.seconds:.0f} s"
        console.print(f"{v:9} ({how}):")
        console.print(f"  {k.image}", soft_wrap=True, highlight=False)  # a path, whole
    return out


Variants = Annotated[
    str,
    typer.Option("--variant", help="Which reference kernels, comma-separated: fixed, "
                 "regressed, gated (an experiment: process_mrelease's walk gated)."),
]  # fmt: skip


@lab.command("build")
def build(
    variant: Variants = "fixed,regressed,gated",
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="make -j (default: CPUs).")
    ] = None,
    arch: ArchOpt = "x86_64",
) -> None:
    """Build the reference kernels from Debian's linux-source-6.1 (pinned version).

    "fixed" is the source as released (it carries 67197a4f28d2, MMF_MULTIPROCESS);
    "regressed" reverts its one condition in fs/proc/base.c __set_oom_adj to
    `atomic_read(&mm->mm_users) > 1`, so every multi-threaded process walks all processes
    again. "gated" (`--variant gated`, an experiment, not a proposed fix) makes
    process_mrelease skip its walk over every process unless the mm is MMF_MULTIPROCESS
    (for `lab demo --measure kill`). Config: `make tinyconfig` + `droidoom lab config`.
    Needs apt packages
    qemu-system-x86 build-essential flex bison bc cpio libelf-dev libssl-dev busybox-static;
    `--arch arm64` cross-builds an arm64 Image (`lab config --arch arm64`) and needs
    gcc-aarch64-linux-gnu and qemu-system-arm too.
    """
    from ..lab.build import VARIANTS

    names = [v.strip() for v in variant.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise UsageError(f"--variant takes {', '.join(VARIANTS)} (got {variant!r})")
    build_kernels(names, jobs, arch)


#: Runs per kernel in `lab demo` while the verdict says the host disturbed the sweep.
DEMO_ATTEMPTS = 3


@lab.command("demo")
def demo(
    quick: Annotated[
        bool, typer.Option("--quick/--full", help="Small sweep (seconds per kernel) or default.")
    ] = True,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for run dirs.")] = DEFAULT_OUT,
    html: Annotated[Path | None, typer.Option("--html", help="Comparison report path.")] = None,
    accel: Accel = "auto",
    measure: Annotated[
        str, typer.Option("--measure", help="adj: the 2020 write regression (fixed vs "
                          "regressed). kill: lmkd's kill path (stock vs gated).")
    ] = "adj",
    arch: ArchOpt = "x86_64",
) -> None:
    """The 2020 regression on this machine: profile both reference kernels, side by side.

    Builds them first if needed (`droidoom lab build`), boots each in QEMU, runs
    `profile --quick` against it, prints both verdicts with the ns/process of each target
    kind and writes one HTML report comparing them. A kernel whose run the host disturbed
    (the verdict says "busy": TCG slows with the host's load) is measured again, up to
    three runs. Then try `droidoom compare FIXED-RUN REGRESSED-RUN` (exit 1: threaded
    writes regressed).

    With --measure kill: `profile --measure kill --quick` on "fixed" (the stock source) and
    "gated" (process_mrelease's walk gated on MMF_MULTIPROCESS, an experiment): threaded
    victims walk every process on stock and not on gated.
    """
    if measure == "kill":
        from .lab_kill import demo_kill

        demo_kill(out, html, accel, build_kernels(["fixed", "gated"], arch_name=arch))
        return
    if measure != "adj":
        raise UsageError(f"--measure {measure!r}: use adj or kill")
    from .. import analysis, store
    from ..report import terminal as report

    def busy(r: RunResult) -> str | None:
        (vd,) = analysis.verdict(store.load(r.path), r.meta)
        if vd.disturbed:
            return "the host was busy during the sweep (an emulated guest slows with it)"
        return None

    kernels = build_kernels(["fixed", "regressed"], arch_name=arch)
    spec = vm_spec_defaults(build_spec(quick), False, False)
    results = profile_kernels(kernels, spec, out, accel, busy, DEMO_ATTEMPTS)
    df = store.load([r.path for r in results.values()])
    metas = [r.meta for r in results.values()]
    verdicts = {vd.device: vd for vd in analysis.verdict(df, metas)}
    fits = analysis.fits(df)
    console.print("[bold]kernel    verdict       single  threaded  multiprocess (ns/process)")
    for v, r in results.items():
        vd = verdicts[r.meta["device"]]
        slope = {f.kind: f.slope_ns for f in fits if f.device == r.meta["device"]
                 and f.mode == vd.mode}  # fmt: skip
        cells = [f"{units.slope(slope.get(kind)):>9}" for kind in
                 ("single", "threaded", "multiprocess")]  # fmt: skip
        console.print(f"{v:9} {vd.status:12} {'  '.join(cells)}   {r.path}", soft_wrap=True)
    for v, r in results.items():
        console.print(f"[bold]{v}:[/] {verdicts[r.meta['device']].sentence}")
    path = report.render_html(df, metas, html or Path(out) / "lab-demo.html")
    console.print(f"html report: {path}", soft_wrap=True)
    f, g = (results[v].path for v in ("fixed", "regressed"))
    console.print("next:")
    console.print(f"  droidoom compare {f} {g}", soft_wrap=True, highlight=False)
