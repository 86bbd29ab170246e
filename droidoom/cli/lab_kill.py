"""`droidoom lab demo --measure kill`: lmkd's kill path on the stock and the gated kernel.

"fixed" is Debian's 6.1 as released (process_mrelease walks every process for a
multi-threaded victim), "gated" skips that walk unless the mm is MMF_MULTIPROCESS: an
experiment that shows what gating the walk buys, not a proposed fix (README, "The kill path").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import units
from .app import console
from .options import build_spec

if TYPE_CHECKING:
    from ..lab.build import Kernel
    from ..run.runner import RunResult

#: Runs per kernel while the kill verdict is inconclusive (TCG slows with the host's load).
ATTEMPTS = 3
KINDS = ("single", "threaded", "multiprocess")


def demo_kill(out: Path, html: Path | None, accel: str, kernels: dict[str, Kernel]) -> None:
    """Profile the kill path on each kernel (`profile --measure kill --quick`), print the
    kill verdicts with each kind's ns/process side by side and write one HTML report."""
    from .. import store
    from ..analysis import kill
    from ..report import terminal as report
    from .vm import profile_kernels, vm_spec_defaults

    def inconclusive(r: RunResult) -> str | None:
        (vd,) = kill.verdicts(store.load(r.path), r.meta)
        return f"inconclusive ({vd.sentence})" if vd.status == kill.INCONCLUSIVE else None

    spec = vm_spec_defaults(build_spec(True, measure="kill"), False, False)
    results = profile_kernels(kernels, spec, out, accel, inconclusive, ATTEMPTS)
    df = store.load([r.path for r in results.values()])
    metas = [r.meta for r in results.values()]
    verdicts = {vd.device: vd for vd in kill.verdicts(df, metas)}
    fits = kill.kill_fits(df)
    console.print("[bold]kernel    kill verdict   single  threaded  multiprocess "
                  "(process_mrelease ns/process)")  # fmt: skip
    for v, r in results.items():
        device = r.meta["device"]
        slope = {f.kind: f.slope_ns for f in fits if f.device == device}
        cells = [f"{units.slope(slope.get(kind)):>9}" for kind in KINDS]
        console.print(f"{v:9} {verdicts[device].status:12} {'  '.join(cells)}   {r.path}",
                      soft_wrap=True)  # fmt: skip
    for v, r in results.items():
        console.print(f"[bold]{v}:[/] {verdicts[r.meta['device']].sentence}", soft_wrap=True)
    path = report.render_html(df, metas, html or Path(out) / "lab-demo-kill.html")
    console.print(f"html report: {path}", soft_wrap=True)
    stock, gated = (results[v].path for v in ("fixed", "gated"))
    console.print("next (process_mrelease per kind, gated against stock):")
    console.print(f"  droidoom compare {stock} {gated}", soft_wrap=True, highlight=False)
