"""`droidoom doctor`: what a target can do, and for each missing capability why and how
to get it. Works on any Target (a phone over adb, this Linux host).

Checks are real probes, not guesses from properties: the helper is installed and its
`probe` reports the adj range this user may write (oom_score_adj_min), whether
clone(CLONE_VM) works and the live limits; the capture sources say whether ftrace and
perf/simpleperf would arm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from ..capture.ftrace import FtraceSource
from ..capture.perf import PerfSource
from ..errors import DroidoomError
from ..run.helper_io import probe
from ..run.leftovers import summary
from ..run.power import suspend_risk
from ..spec import DEFAULT, ProfileSpec
from ..targets.base import Target, TargetFacts

OK, MISSING, LIMITED = "ok", "missing", "limited"


@dataclass(frozen=True)
class Check:
    """One capability of a target."""
    area: str  # helper | writes | root | power | tracing | profiling | limits
    name: str  # what is checked, e.g. "lower adj to -1000"
    status: str  # ok | limited (works, with a restriction) | missing
    detail: str  # what was found
    fix: str = ""  # how to get it, when not ok
    path: str = ""  # a file the check is about: printed whole below the table, never folded


def _split(message: str) -> tuple[str, str]:
    """A capture source's "name: reason; fix" line as (reason, fix)."""
    body = message.split(": ", 1)[-1]
    reason, _, fix = body.partition("; ")
    return reason, fix


def max_population(
    hf: Mapping[str, str], threads: int = DEFAULT.threads, spec: ProfileSpec = DEFAULT
) -> int:
    """Largest population the helper would accept with `threads` per process (its own
    safety rules, PROTOCOL.md: tasks + need <= 0.8 x min(pid_max, threads-max) over the
    limits it could read; this uid's tasks + need <= 0.9 x RLIMIT_NPROC without
    CAP_SYS_RESOURCE; kernel memory <= half of MemAvailable). A limit the helper could
    not read (-1, e.g. threads-max under SELinux) is unknown, not zero."""

    def known(key: str) -> int | None:
        v = int(hf.get(key, -1))
        return v if v > 0 else None

    tasks = int(hf.get("tasks", 0))
    kinds = spec.kinds
    fixed = sum(spec.target_threads if k == "threaded" else 1 for k in kinds)
    fixed += 2 * kinds.count("multiprocess")
    caps = [v for v in (known("pid_max"), known("threads_max")) if v]
    budgets = [0.8 * min(caps) - tasks - fixed] if caps else []
    nproc = known("nproc_limit")
    if nproc and hf.get("cap_sys_resource") != "1":
        mine = int(hf.get("uid_tasks", -1))
        budgets.append(0.9 * nproc - (mine if mine >= 0 else tasks) - fixed)
    out = max(0, int(min(budgets) // threads)) if budgets else 32768
    mem, task_kb, proc_kb = known("mem_available_kb"), known("mem_task_kb"), known("mem_proc_kb")
    if mem and task_kb and proc_kb:  # n x (threads x task_kb + proc_kb) <= mem / 2
        out = min(out, max(0, int((mem / 2 - fixed * task_kb) // (threads * task_kb + proc_kb))))
    return out


def _helper_checks(target: Target) -> tuple[list[Check], dict[str, str]]:
    try:
        helper = target.install_helper()
        probed = probe(target, helper)
    except DroidoomError as e:
        return [Check("helper", "run the helper", MISSING, str(e), "see the message")], {}
    if target.helper_pushed:
        how = "pushed now"
    else:
        how = "already there (hash matched)" if target.is_remote else "run in place"
    hello = probed.hello.fields
    return [
        Check("helper", "run the helper", OK, f"{how}; abi={hello.get('abi')}", path=helper)
    ], dict(probed.facts.fields)


def _write_checks(hf: Mapping[str, str], facts: TargetFacts) -> list[Check]:
    adj_min = int(hf.get("adj_min", 1001))
    uid = hf.get("uid", "?")
    out = []
    if adj_min > 1000:
        out.append(Check("writes", "write oom_score_adj", MISSING,
                         f"uid {uid} cannot write its own children's oom_score_adj (SELinux?)",
                         "run as the shell user (adb shell) or root"))  # fmt: skip
        return out
    out.append(Check("writes", "write oom_score_adj", OK, f"uid {uid}, open+write+close"))
    if adj_min == -1000 and hf.get("cap_sys_resource") == "1":
        out.append(Check("writes", "lower adj to -1000", OK, "CAP_SYS_RESOURCE: full range"))
    elif adj_min == -1000:
        # A phone: init set its own adj (and so everyone's oom_score_adj_min) to -1000 with
        # CAP_SYS_RESOURCE; adbd's shell child only raised its adj to -950.
        out.append(Check("writes", "lower adj to -1000", OK,
                         f"full range without CAP_SYS_RESOURCE: this shell's adj is "
                         f"{hf.get('adj', '?')} but its oom_score_adj_min, inherited from "
                         "init, is -1000, so children may go down to -1000"))  # fmt: skip
    else:
        root_fix = (
            "run as root with CAP_SYS_RESOURCE (`adb root` on a userdebug build, or su)"
            if facts.phone is not None
            else "run as root; a container/VM may drop CAP_SYS_RESOURCE even for root"
        )
        out.append(Check(
            "writes", "lower adj to -1000", LIMITED,
            f"oom_score_adj_min (inherited from whoever last set this process tree's adj with "
            f"CAP_SYS_RESOURCE) is {adj_min} and uid {uid} lacks CAP_SYS_RESOURCE: raising "
            f"always works, moves below {adj_min} are clamped to it (the run says how many)",
            root_fix,
        ))  # fmt: skip
    if hf.get("clone_vm") == "1":
        out.append(Check("writes", "multiprocess kind (CLONE_VM)", OK, "clone(CLONE_VM) works"))
    else:
        out.append(Check(
            "writes", "multiprocess kind (CLONE_VM)", MISSING,
            "clone(CLONE_VM) without CLONE_THREAD fails here (qemu-user?): no multiprocess data",
            "profile on the real kernel; single and threaded kinds still run",
        ))  # fmt: skip
    return out


def _root_check(facts: TargetFacts) -> Check:
    phone = facts.phone
    if phone is None:  # not a phone: this host or a VM
        if facts.root:
            return Check("root", "root", OK, "running as root")
        return Check("root", "root", MISSING, "not root", "run droidoom as root (sudo)")
    if phone.uid == 0:
        return Check("root", "root", OK, phone.adb_root or "adbd runs as root")
    if phone.su:
        return Check("root", "root", OK, f"su works ({phone.su}); adb root: {phone.adb_root}")
    why = f"adb root {phone.adb_root}"
    if phone.su_denied:
        why += "; su exists but was denied"
    fix = (
        "`adb root` (this build allows it)"
        if phone.debuggable
        else "use a userdebug/eng build or a rooted phone; everything else runs without root"
    )
    return Check("root", "root", MISSING, why, fix)


def _capture_checks(target: Target) -> list[Check]:
    out = []
    for area, name, src in (
        ("tracing", "ftrace (oom_score_adj_update)", FtraceSource()),
        ("profiling", "perf/simpleperf call stacks", PerfSource()),
    ):
        try:
            why = src.unavailable(target)
        except DroidoomError as e:
            why = f"{src.name}: {e}"
        if why is None:
            out.append(Check(area, name, OK, f"--capture {src.name} will work"))
        else:
            reason, fix = _split(why)
            out.append(Check(area, name, MISSING, reason, fix))
    facts = target.facts()
    if (p := facts.phone) is not None:
        seen = p.tracefs or "not visible to this user"
        out.append(Check("tracing", "tracefs", OK if p.tracefs_rw else LIMITED,
                         f"{seen}; oom event {'present' if p.oom_event else 'not seen'}",
                         "" if p.tracefs_rw else "needs root; without root perfetto "
                         "can record oom/oom_score_adj_update"))  # fmt: skip
    return out


def _limit_checks(hf: Mapping[str, str]) -> list[Check]:
    if not hf:
        return []
    n = max_population(hf)
    want = max(DEFAULT.populations)
    def shown(key: str) -> str:
        v = str(hf.get(key, "-1"))
        return "unreadable" if v == "-1" else v

    mem = int(hf.get("mem_available_kb", -1))
    detail = (
        f"pid_max={shown('pid_max')} threads-max={shown('threads_max')} "
        f"tasks now={hf.get('tasks')} (this uid: {shown('uid_tasks')}) "
        f"RLIMIT_NPROC={hf.get('nproc_limit')} MemAvailable="
        f"{f'{mem // 1024} MB' if mem > 0 else 'unreadable'}: up to "
        f"{n} extra processes x {DEFAULT.threads} threads"
    )
    if n >= want:
        return [Check("limits", "population size", OK, detail)]
    return [Check("limits", "population size", LIMITED, detail,
                  f"use --population up to {n} (or fewer --threads)")]  # fmt: skip


def _power_check(facts: TargetFacts) -> list[Check]:
    """Whether the phone stays awake for a run (`dumpsys power`); nothing off Android."""
    if facts.phone is None:
        return []
    power = facts.phone.power
    if power.wakefulness is None:
        return []
    risk = suspend_risk(asdict(power))
    state = (f"{power.wakefulness}, {'powered' if power.powered else 'on battery'}"
             f"{', kept on' if power.stay_on else ''}")  # fmt: skip
    if risk is None:
        return [Check("power", "stays awake", OK, state)]
    reason, _, fix = risk.partition("; ")
    return [Check("power", "stays awake", LIMITED, f"{state}: {reason}", fix)]


def diagnose(target: Target) -> list[Check]:
    """Every check for `target` (a few round trips: facts, helper, probe, captures)."""
    facts = target.facts()
    checks, hf = _helper_checks(target)
    if hf:
        checks += _write_checks(hf, facts)
    checks.append(_root_check(facts))
    checks += _power_check(facts)
    checks += _capture_checks(target)
    checks += _limit_checks(hf)
    checks += _leftover_checks(target)
    return checks


def _leftover_checks(target: Target) -> list[Check]:
    found = summary(target)
    if not found:
        return [Check("runs", "cut-short runs", OK, "none left behind")]
    fix = " ".join(["droidoom", "recover", *(target.reach_again() or [])])
    return [Check("runs", "cut-short runs", LIMITED, "; ".join(found), f"run `{fix}`")]
