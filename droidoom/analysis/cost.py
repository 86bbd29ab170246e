"""What a trace's oom_score_adj churn costs: CPU time per hour in the kernel's writes.

Model: one write of kind k with x processes alive costs `a_k + b_k * x` on average
(CPU time is a sum, so the model is of a MEAN latency, not the median the verdict fits).
A write's latency is wall-clock time, which also holds time the writer was not running
(preempted, an interrupt, a vCPU descheduled: on a loaded host or under QEMU TCG the
slowest 1% of writes can outweigh all others); so the mean is taken over all but the
slowest `trim` share of each point's writes (default `TRIM` = 5%; 0 = the plain mean,
i.e. wall time). A whole point can be slowed the same way (another job's burst on the
other core): with one population and at least `MIN_PLAYS` points (`--repeat`'s sweep
points) the line's base is the median of the points' means, so one disturbed point does
not move the estimate, and its CI is still the points' spread. `mean_fits` fits the line
per device x kind x mode of a run by least
squares on its per-point (trimmed) means, with the coefficients' covariance; a run's x is
its population plus the helper's own target processes (`helper_processes`), the
machine's own processes stay in the base. A trace with W writes
seeing x_i processes (the trace's alive count) then costs sum(a + b x_i) = W (a + b
mean(x)), with a 95% CI
from the fit's covariance (Student t on the fit's degrees of freedom); per hour it is
scaled by 3600 s / the trace's duration.

`measured` is the total of one play of the trace per population (the mean over the
plays; CI: Student t over the plays' totals, so it holds what varies between plays, or
time blocks with fewer than `MIN_PLAYS` plays), so an estimate can be checked against a
real replay of the same trace. `droidoom profile --scenario replay:T --repeat N` measures
both in one run, alternately (a sweep point, a play, a sweep point, ...), so the estimate
and the plays see the same drift and load. `transitions`
and `bursts` say where a trace's cost concentrates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats  # type: ignore[import-untyped, unused-ignore]  # no stubs installed

from .. import schema
from ..errors import DataError, UsageError
from ..traces import replay
from ..traces.replay import ReplayTrace, role_of

HOUR_NS = 3600e9
#: Covariance matrix of (intercept, slope).
Cov = tuple[tuple[float, float], tuple[float, float]]
#: Share of each point's slowest writes left out of its mean (preemption, not the write).
TRIM = 0.05
#: Plays of a population from which their spread gives the measured total's CI (and
#: sweep points from which their median is a one-population line's base).
MIN_PLAYS = 3
#: Time blocks of a replay's writes for the measured total's CI (fewer than MIN_PLAYS).
BLOCKS = 10


def trimmed(lat: np.ndarray, trim: float = TRIM) -> np.ndarray:
    """`lat` without its slowest `trim` share (sorted; at least one value kept)."""
    v = np.sort(np.asarray(lat, dtype=float))
    return v[: max(1, int(np.ceil(len(v) * (1 - trim))))] if len(v) else v
#: Updates closer than this belong to one burst (an app launch moves many processes).
BURST_GAP_NS = 1_000_000_000


@dataclass(frozen=True)
class MeanFit:
    """Mean write latency = intercept + slope x processes, for one device x kind x mode."""

    device: str
    kind: str
    mode: str
    intercept_ns: float
    slope_ns: float
    cov: Cov  # of (intercept, slope)
    dof: int  # of the CI: points - 2; with one population points - 1 (one point: writes - 1)
    n_points: int
    pop_min: int
    pop_max: int

    def predict(self, x: float) -> tuple[float, float]:
        """(mean ns per write, its standard error) at x processes."""
        v = np.array([1.0, x])
        se = float(np.sqrt(max(v @ np.array(self.cov) @ v, 0.0)))
        return self.intercept_ns + self.slope_ns * x, se


def helper_processes(meta: dict[str, Any]) -> int:
    """Processes a run's helper kept alive besides the population: its targets and each
    multiprocess target's CLONE_VM child (a replay has dozens; the walk visits them too)."""
    ok = [t for t in meta.get("targets", []) if t.get("status") == "ok"]
    return len(ok) + sum(int(t.get("kind") == "multiprocess") for t in ok)


def _line(x: np.ndarray, y: np.ndarray, lat: np.ndarray) -> tuple[float, float, Cov, int]:
    """(intercept, slope, their covariance, dof) of per-point means `y` at `x`; `lat`
    (the trimmed writes) when there is a single point."""
    if len(np.unique(x)) < 2 and len(y) > 1:  # no slope: the points' centre, their SE
        var = float(y.var(ddof=1)) / len(y)
        icpt = float(np.median(y) if len(y) >= MIN_PLAYS else y.mean())
        return icpt, 0.0, ((var, 0.0), (0.0, 0.0)), len(y) - 1
    if len(np.unique(x)) < 2:  # one point: its writes' mean, their SE
        var = float(lat.var(ddof=1)) / len(lat) if len(lat) > 1 else float("inf")
        return float(lat.mean()), 0.0, ((var, 0.0), (0.0, 0.0)), len(lat) - 1
    X = np.column_stack([np.ones_like(x), x])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    dof = len(x) - 2
    s2 = float(np.sum((y - X @ beta) ** 2)) / dof if dof > 0 else float("inf")
    c = s2 * np.linalg.inv(X.T @ X)
    cov = ((float(c[0, 0]), float(c[0, 1])), (float(c[1, 0]), float(c[1, 1])))
    return float(beta[0]), float(beta[1]), cov, dof


def mean_fits(df: pd.DataFrame, trim: float = TRIM, offset: int = 0) -> list[MeanFit]:
    """`MeanFit` per device x kind x mode of a samples frame (successful writes), against
    x = population + `offset` (the run's `helper_processes`): processes the writes saw
    beyond the machine's own, which stay in the line's base."""
    ok = df[df["err"] == 0]
    out = []
    for (device, kind, mode), g in ok.groupby(["device", "kind", "mode"], observed=True,
                                              sort=True):  # fmt: skip
        pts = g.groupby("point", observed=True).agg(
            pop=("population", "first"),
            mean=("latency_ns", lambda v: trimmed(v.to_numpy(), trim).mean()),
        )  # fmt: skip
        x, y = pts["pop"].to_numpy(float) + offset, pts["mean"].to_numpy(float)
        lat = trimmed(g["latency_ns"].to_numpy(float), trim)
        icpt, slope, cov, dof = _line(x, y, lat)
        out.append(MeanFit(str(device), str(kind), str(mode), icpt, slope, cov, max(dof, 0),
                           len(pts), int(x.min()), int(x.max())))  # fmt: skip
    return out


@dataclass(frozen=True)
class Estimate:
    """CPU time the writes of a trace cost under one fit."""

    fit: MeanFit
    writes: int
    x_mean: float  # mean processes alive at the writes
    per_write_ns: float
    total_ns: float
    total_lo: float
    total_hi: float
    duration_ns: int

    def per_hour(self, v: float) -> float:
        """Scale a total over the trace to one hour (ns per hour)."""
        return v * HOUR_NS / self.duration_ns if self.duration_ns > 0 else float("nan")


def estimate(fit: MeanFit, x: np.ndarray, duration_ns: int) -> Estimate:
    """Cost of writes seeing `x` processes (one value per write) under `fit`."""
    w = len(x)
    xbar = float(np.mean(x)) if w else 0.0
    mean, se = fit.predict(xbar)
    t = float(stats.t.ppf(0.975, fit.dof)) if fit.dof > 0 else float("inf")
    half = w * t * se
    lo = max(w * mean - half, 0.0)  # CPU time is never negative
    return Estimate(fit, w, xbar, mean, w * mean, lo, w * mean + half, duration_ns)


@dataclass(frozen=True)
class Measured:
    """Replays' own total for one kind x mode x population: one play of the trace."""

    kind: str
    mode: str
    population: int
    writes: int  # of one play
    total_ns: float  # mean over the plays
    total_lo: float
    total_hi: float
    plays: int = 1
    ci: str = "blocks"  # "plays": t interval over the plays; "blocks": within the plays




def _t_half(values: np.ndarray, alongside: np.ndarray | None = None) -> float:
    """Half width of the 95% Student t interval of the mean of `values`; with `alongside`
    (measurements of the same quantity taken in turn with them), the variance is pooled
    from both groups' spreads about their own means (len(values) + len(alongside) - 2 dof)."""
    groups = [values] + ([alongside] if alongside is not None and len(alongside) > 1 else [])
    dof = sum(len(g) - 1 for g in groups)
    if len(values) < 2 or dof < 1:
        return float("inf")
    var = sum(float(((g - g.mean()) ** 2).sum()) for g in groups) / dof
    return float(stats.t.ppf(0.975, dof)) * float(np.sqrt(var / len(values)))


def _point_means(g: pd.DataFrame, trim: float) -> np.ndarray:
    """Each point's mean latency without its slowest `trim` share."""
    return np.array([trimmed(p.to_numpy(float), trim).mean()
                     for _, p in g.groupby("point", observed=True)["latency_ns"]])  # fmt: skip


def measured(df: pd.DataFrame, blocks: int = BLOCKS, trim: float = TRIM,
             sweeps: pd.DataFrame | None = None) -> list[Measured]:  # fmt: skip
    """The total of one play of the trace per kind x mode x population (the mean over the
    plays: the points of `df`, successful writes; each play's mean leaves out its slowest
    `trim` share, as `mean_fits` does), with a 95% CI.

    With at least `MIN_PLAYS` plays (`--repeat`, several replay runs pooled) the CI is the
    Student t interval over the plays' totals: their spread holds everything that varies
    between plays (drift, the machine's load, another run's conditions). The `sweeps`
    points measured in turn with the plays (`--repeat`: the same targets, order and count
    of writes) vary the same way: their spread is pooled in, so a few plays that happened
    to agree do not make the interval narrower than the machine is steady. With fewer
    plays, the CI comes from `blocks` consecutive time blocks of the writes (within-run
    noise only).
    """
    ok = df[df["err"] == 0].sort_values("t_ns", kind="stable")
    sw = sweeps[sweeps["err"] == 0] if sweeps is not None else ok.iloc[:0]
    out = []
    for (kind, mode, _), g in ok.groupby(["kind", "mode", "population"], observed=True):
        pop = int(g["population"].iloc[0])
        k = int(g["point"].nunique())
        n = int(round(len(g) / k))  # writes of one play
        if k >= MIN_PLAYS:
            tots = _point_means(g, trim) * n
            mates = sw[(sw["kind"] == kind) & (sw["mode"] == mode) & (sw["population"] == pop)]
            along = _point_means(mates, trim) * n if len(mates) else None
            tot, half, ci = float(tots.mean()), _t_half(tots, along), "plays"
        else:  # per-write block means, scaled to one play's n writes
            lat = g["latency_ns"].to_numpy(float)
            means = np.array([trimmed(b, trim).mean()
                              for b in np.array_split(lat, min(blocks, len(lat)))])  # fmt: skip
            tot, half, ci = float(means.mean()) * n, _t_half(means) * n, "blocks"
        out.append(Measured(str(kind), str(mode), pop, n, tot, tot - half, tot + half, k, ci))
    return out


def split_sweep(df: pd.DataFrame, meta: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the points a run's fit comes from, its plays of the trace). A `--repeat` replay
    run's sweep points (run.json `replay.sweep_points`) price, its plays are checked; any
    other run's points do both (a plain replay is priced by its own line)."""
    sweep = (meta.get("replay") or {}).get("sweep_points") or []
    if not sweep:
        return df, df
    mask = df["point"].isin(sweep)
    return df[mask], df[~mask]


def per_write_cost(fit: MeanFit, x: np.ndarray) -> np.ndarray:
    """Modelled ns of each write (for where the cost goes)."""
    return fit.intercept_ns + fit.slope_ns * x.astype(float)


def transitions(rt: ReplayTrace, cost_ns: np.ndarray, top: int = 8) -> pd.DataFrame:
    """Cost by role transition (previous role of the process -> new role), largest first.

    Columns: transition, writes, cost_ns, share."""
    ev = rt.events
    prev = ev.groupby("pid", sort=False)["adj"].shift(1)
    frm = [role_of(int(a)) if pd.notna(a) else "(first)" for a in prev]
    to = [role_of(int(a)) for a in ev["adj"]]
    t = pd.DataFrame({"transition": [f"{a} -> {b}" for a, b in zip(frm, to, strict=True)],
                      "cost_ns": cost_ns})  # fmt: skip
    g = t.groupby("transition").agg(writes=("cost_ns", "size"), cost_ns=("cost_ns", "sum"))
    g["share"] = g["cost_ns"] / max(float(cost_ns.sum()), 1e-9)
    return g.sort_values("cost_ns", ascending=False).head(top).reset_index()


def bursts(rt: ReplayTrace, cost_ns: np.ndarray, gap_ns: int = BURST_GAP_NS) -> pd.DataFrame:
    """Updates grouped into bursts (gaps < `gap_ns`), costliest first.

    Columns: start_s (into the trace), writes, span_ms, cost_ns, share."""
    ts = rt.events["ts_ns"].to_numpy(np.int64)
    if not len(ts):
        raise DataError("the trace has no updates to group")
    burst = np.concatenate([[0], np.cumsum(np.diff(ts) >= gap_ns)])
    d = pd.DataFrame({"burst": burst, "ts": ts, "cost_ns": cost_ns})
    g = d.groupby("burst").agg(t0=("ts", "min"), t1=("ts", "max"), writes=("ts", "size"),
                               cost_ns=("cost_ns", "sum"))  # fmt: skip
    g["start_s"] = (g["t0"] - ts[0]) / 1e9
    g["span_ms"] = (g["t1"] - g["t0"]) / 1e6
    g["share"] = g["cost_ns"] / max(float(cost_ns.sum()), 1e-9)
    cols = ["start_s", "writes", "span_ms", "cost_ns", "share"]
    return g.sort_values("cost_ns", ascending=False)[cols].reset_index(drop=True)


# --------------------------------------------------------------------------- a trace x runs


def _label(meta: dict[str, Any]) -> str:
    t = meta.get("target", {})
    vm = meta.get("vm") or {}
    image = Path(str(vm.get("kernel") or vm.get("image") or "")).name
    return f"{meta.get('device')} {t.get('kernel_release', '?')}" + (f" ({image})" if image else "")


@dataclass(frozen=True)
class _Run:
    path: Path
    meta: dict[str, Any]
    df: pd.DataFrame
    is_replay: bool  # a replay of this trace

    @property
    def device(self) -> str:
        """Replays pool by device and kernel (a lab's fixed and regressed VMs apart)."""
        return _label(self.meta)


@dataclass(frozen=True)
class _Plays:
    """Every play of the trace on one device, pooled over its replay runs."""

    runs: tuple[Path, ...]
    offset: int  # the replays' helper processes (same trace and kinds: same targets)
    measured: tuple[Measured, ...]


def _pool(runs: list[_Run], trim: float) -> dict[str, _Plays]:
    """Per device: its replay runs' plays as one sample (each run's points kept apart)."""
    by_device: dict[str, list[_Run]] = {}
    for r in runs:
        if r.is_replay:
            by_device.setdefault(r.device, []).append(r)
    out = {}
    for device, rs in by_device.items():
        frames: tuple[list[pd.DataFrame], list[pd.DataFrame]] = ([], [])
        for i, r in enumerate(rs):
            has_sweeps = bool((r.meta.get("replay") or {}).get("sweep_points"))
            for part, frame in zip(split_sweep(r.df, r.meta), frames, strict=True):
                if has_sweeps or frame is frames[1]:
                    part = part.assign(point=part["point"].astype("int64") + i * 1_000_000)
                    frame.append(part)
        sweeps = pd.concat(frames[0]) if frames[0] else None
        out[device] = _Plays(tuple(r.path for r in rs), helper_processes(rs[0].meta),
                             tuple(measured(pd.concat(frames[1]), trim=trim,
                                              sweeps=sweeps)))  # fmt: skip
    return out


def _checks(f: MeanFit, plays: _Plays | None, path: Path,
            duration_ns: int) -> list[dict[str, Any]]:  # fmt: skip
    """The estimate of each pooled replay total (same kind, mode and population) by `f`."""
    out: list[dict[str, Any]] = []
    for m in plays.measured if plays is not None else ():
        assert plays is not None
        if (m.kind, m.mode) != (f.kind, f.mode):
            continue
        est = estimate(f, np.full(m.writes, m.population + plays.offset), duration_ns)
        out.append({
            "replay_runs": [str(p) for p in plays.runs], "same_run": path in plays.runs,
            "population": m.population, "writes": m.writes, "plays": m.plays, "ci": m.ci,
            "measured_ns": m.total_ns, "measured_ci_ns": [m.total_lo, m.total_hi],
            "estimate_ns": est.total_ns, "estimate_ci_ns": [est.total_lo, est.total_hi],
            # the estimate inside the replay's CI, the replay inside the estimate's
            "estimate_in_measured_ci": bool(m.total_lo <= est.total_ns <= m.total_hi),
            "measured_in_estimate_ci": bool(est.total_lo <= m.total_ns <= est.total_hi),
        })  # fmt: skip
    return out


def _report_run(r: _Run, rt: replay.ReplayTrace, plays: _Plays | None, kind: str | None,
                trim: float) -> dict[str, Any]:  # fmt: skip
    """One run's estimates (and their checks against the replays), and where it goes."""
    priced = split_sweep(r.df, r.meta)[0]
    fits = [f for f in mean_fits(priced, trim, helper_processes(r.meta))
            if kind is None or f.kind == kind]  # fmt: skip
    if not fits:
        raise UsageError(f"{r.path}: no {kind} writes in this run; pick --kind from "
                         f"{', '.join(sorted(set(r.df['kind'].astype(str))))}")  # fmt: skip
    alive = rt.events["alive"].to_numpy(np.int64)  # the phone's processes at each write
    rows = []
    hourly = rt.duration_ns > 0  # else no interval: no rate, no cost per hour (say so)
    for f in fits:
        e = estimate(f, alive, rt.duration_ns)
        rows.append({
            "kind": f.kind, "mode": f.mode, "intercept_ns": f.intercept_ns,
            "slope_ns": f.slope_ns, "per_write_ns": e.per_write_ns,
            "alive_mean": e.x_mean, "total_ns": e.total_ns,
            "cpu_ms_per_hour": e.per_hour(e.total_ns) / 1e6 if hourly else None,
            "ci_ms_per_hour": [e.per_hour(e.total_lo) / 1e6, e.per_hour(e.total_hi) / 1e6]
            if hourly else None,
            "total_ci_ns": [e.total_lo, e.total_hi],
            "replays": _checks(f, plays, r.path, rt.duration_ns),
            "lower_bound": rt.lost > 0,  # the trace lost updates: it cost at least this
        })  # fmt: skip
    first = fits[0] if kind else next((f for f in fits if f.kind == "threaded"), fits[0])
    w = per_write_cost(first, alive)
    return {
        "run": str(r.path), "label": _label(r.meta), "replay_of_this_trace": r.is_replay,
        "sweep_points": len((r.meta.get("replay") or {}).get("sweep_points") or []),
        "estimates": rows, "where": {"kind": first.kind, "mode": first.mode,
        "transitions": transitions(rt, w).to_dict("records"),
        "bursts": bursts(rt, w).head(5).to_dict("records")},
    }  # fmt: skip


def no_rate(rt: replay.ReplayTrace) -> str | None:
    """Why the trace gives no rate (writes or CPU time per hour), None when it does."""
    if rt.duration_ns > 0:
        return None
    n = len(rt.events)
    what = ("the trace has a single update" if n == 1 else
            f"the trace's {n} updates all have the same timestamp")  # fmt: skip
    return (f"{what}: with no interval between updates, neither writes per hour nor CPU "
            "time per hour can be estimated; only the cost of these writes can (per write "
            "and in total); record a longer trace for a rate")  # fmt: skip


def analyse(trace: Path, runs: list[Path], kind: str | None = None,
            trim: float = TRIM) -> dict[str, Any]:  # fmt: skip
    """The whole cost report as a dict (what `--json` writes)."""
    from .. import store

    rt = replay.load(trace)
    hours = rt.duration_ns / HOUR_NS
    out: dict[str, Any] = {"trace": rt.summary(), "notes": rt.notes(), "trim": trim}
    out["trace"]["writes_per_hour"] = len(rt.events) / hours if hours > 0 else None
    out["trace"]["no_rate"] = no_rate(rt)
    if out["trace"]["no_rate"]:
        out["notes"].append(out["trace"]["no_rate"])
    loaded: list[_Run] = []
    kill_runs: list[_Run] = []
    for path in runs:
        info, df = store.read_run(path), store.load(path)
        if df.empty:
            raise DataError(f"{path}: the run holds no samples")
        is_replay = (info.meta.get("replay") or {}).get("sha256") == rt.sha256
        run = _Run(path, info.meta, df, is_replay)
        (kill_runs if schema.is_kill(df) else loaded).append(run)  # --measure kill prices kills
    pooled = _pool(loaded, trim)  # every estimate of a device is checked against these
    out["runs"] = [_report_run(r, rt, pooled.get(r.device), kind, trim) for r in loaded]
    out["kills"] = kill_cost(trace, rt, [(r.path, r.meta, r.df) for r in kill_runs], kind, trim)
    if out["kills"]["count"] and not kill_runs:
        out["notes"].append(
            f"the trace shows {out['kills']['count']} lmkd kills: price them with a "
            "`droidoom profile --measure kill` run among the --run's")
    return out


def kill_fits(df: pd.DataFrame, trim: float = TRIM) -> list[MeanFit]:
    """Mean cost of lmkd's calls per kill (pidfd_open + pidfd_send_signal +
    process_mrelease; the reap is the dying process's own exit) against population, per
    device x kind of a `--measure kill` run, like `mean_fits` for writes."""
    ok = df[df["stage"].astype(str) == "ok"]
    calls = ok.assign(latency_ns=ok["open_ns"].astype("int64") + ok["kill_ns"].astype("int64")
                      + ok["latency_ns"].astype("int64"), err=0)  # fmt: skip
    return mean_fits(calls, trim)


def kill_cost(trace: Path, rt: ReplayTrace, runs: list[tuple[Path, dict[str, Any], pd.DataFrame]],
              kind: str | None, trim: float = TRIM) -> dict[str, Any]:  # fmt: skip
    """lmkd's kills in the trace (`droidoom.traces.kills`), per hour, and what they cost
    under each kill run's per-kind line at the processes alive at each kill."""
    from ..traces.kills import alive_at, read_kills

    tk = read_kills(trace)
    alive = alive_at(tk.kills, rt.events)
    hours = rt.duration_ns / HOUR_NS
    out: dict[str, Any] = {
        "count": len(tk.kills), "source": tk.source,
        "per_hour": len(tk.kills) / hours if hours > 0 else None,
        "alive_mean": float(alive.mean()) if len(alive) else None, "runs": [],
    }  # fmt: skip
    for path, meta, df in runs:
        rows = []
        for f in kill_fits(df, trim):
            if kind is not None and f.kind != kind:
                continue
            e = estimate(f, alive, rt.duration_ns)
            hourly = rt.duration_ns > 0
            rows.append({
                "kind": f.kind, "per_kill_ns": e.per_write_ns, "total_ns": e.total_ns,
                "intercept_ns": f.intercept_ns, "slope_ns": f.slope_ns,
                "cpu_ms_per_hour": e.per_hour(e.total_ns) / 1e6 if hourly else None,
                "ci_ms_per_hour": [e.per_hour(e.total_lo) / 1e6, e.per_hour(e.total_hi) / 1e6]
                if hourly else None,
            })  # fmt: skip
        out["runs"].append({"run": str(path), "label": _label(meta), "estimates": rows})
    return out
