"""Booting a kernel image for a command (`profile --kernel`, `lab demo`): the VM and the
spec defaults a guest under QEMU needs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..spec import ProfileSpec
from .app import err_console

if TYPE_CHECKING:  # the lab modules load only when a VM is booted
    from ..lab.build import Kernel
    from ..run.runner import RunResult
    from ..targets.vm import VmTarget

#: Defaults for kernels under QEMU: 2-thread population processes (spawning 8-thread ones
#: is the slowest part under TCG and adds nothing: any mm_users > 1 triggers the walk) ...
VM_THREADS = 2
#: ... and at least 2000 writes per kind and point, also with --quick: a 400-write block of
#: 10 us writes lasts 4 ms, short enough for one burst of host load to move its median;
#: writes are cheap next to booting and spawning under TCG (+1-2 s).
VM_MIN_WRITES = 2000


def open_vm(image: Path, accel: str = "auto", cpus: int = 2, memory: int = 1024,
            label: str | None = None) -> VmTarget:  # fmt: skip
    """Boot `image` and return its VmTarget (the caller closes it)."""
    from ..lab.qemu import VmSpec
    from ..targets.vm import VmTarget

    if accel not in ("auto", "kvm", "tcg"):
        raise UsageError(f"--accel {accel!r}: use auto, kvm or tcg")
    if not 1 <= cpus <= 8 or not 256 <= memory <= 16384:
        raise UsageError("--vm-cpus takes 1..8 and --vm-memory 256..16384 (MiB)")
    spec = VmSpec(Path(image), cpus=cpus, memory_mb=memory, accel=accel)
    with err_console.status(f"booting {image} in QEMU ..."):
        target = VmTarget(spec, label=label)
    info = target.vm_info()
    err_console.print(
        f"[dim]booted {target.facts().kernel_release} ({info['arch']}) in {info['boot_s']:.1f} s "
        f"({info['accel']}{'; ' + target.kvm_note if target.kvm_note else ''}; agent over "
        f"{info['channel']})[/]"
    )
    return target


def vm_spec_defaults(spec: ProfileSpec, threads_given: bool, writes_given: bool) -> ProfileSpec:
    """The profile spec for a VM: `VM_THREADS` and (writes only) `VM_MIN_WRITES` unless given.

    Kills keep their count: each forks and reaps a victim (~2-5 ms under TCG), and a
    threaded victim's walk (hundreds of us at 800 processes) stands far above one burst
    of host load; 2000 kills per kind and point took ~110 s on a stock lab kernel."""
    if not threads_given:
        # a kill's walk visits processes (process_shares_mm stops at the first thread with
        # an mm): single-threaded population processes spawn twice as fast under TCG
        spec = replace(spec, threads=1 if spec.measure == "kill" else VM_THREADS)
    if not writes_given and spec.measure != "kill" and spec.writes < VM_MIN_WRITES:
        spec = replace(spec, writes=VM_MIN_WRITES)
    return spec


def profile_kernels(kernels: Mapping[str, Kernel], spec: ProfileSpec, out: Path, accel: str,
                    again: Callable[[RunResult], str | None], attempts: int = 3,
                    ) -> dict[str, RunResult]:  # fmt: skip
    """Profile `spec` on each lab kernel in turn (one boot each), measuring a kernel again
    while `again(result)` gives a reason, up to `attempts` runs (TCG slows with the host's
    load); every run directory is kept. Returns the last run per variant."""
    from ..run.runner import profile as run_profile
    from .app import console

    results: dict[str, RunResult] = {}
    for v, k in kernels.items():
        with open_vm(k.image, accel, label=v) as target:
            meta = {"vm": target.vm_info(), "lab_variant": v}
            for attempt in range(1, attempts + 1):
                results[v] = run_profile(target, spec, out, extra_meta=meta)
                why = again(results[v])
                if why is None or attempt == attempts:
                    break
                console.print(f"{v}: {why}; measuring again ({attempt + 1}/{attempts}), "
                              f"{results[v].path} is kept", soft_wrap=True)  # fmt: skip
    return results
