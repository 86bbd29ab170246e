"""Which runs measured the same thing: a run's fingerprint.

Two runs may be pooled (one table, one fit, one verdict) only when everything that changes
a write's latency is the same: the write schedule (scenario and its parameters, pacing,
modes, threads, block layout, pinning, a replayed trace), the captures that slow writes
(ftrace, perf, perfetto: `clock` costs nothing), and the target (device, kernel release
and build, a VM's image). Populations, write counts, kinds, seed and sweep order are not
in it: runs that differ only there add points to the same curves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .spec import ProfileSpec

#: Captures that cost nothing per write (the helper's own clock).
_FREE_CAPTURES = frozenset({"clock"})


def _facts(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The latency-relevant facts of one run.json, normalised (old runs get the defaults
    their spec was rebuilt with)."""
    raw = meta.get("spec") if isinstance(meta.get("spec"), Mapping) else {}
    spec = ProfileSpec.from_dict(dict(raw or {}))
    target = meta.get("target") if isinstance(meta.get("target"), Mapping) else {}
    target = target or {}
    extra = target.get("extra") if isinstance(target.get("extra"), Mapping) else {}
    vm = meta.get("vm") if isinstance(meta.get("vm"), Mapping) else {}
    replay = meta.get("replay") if isinstance(meta.get("replay"), Mapping) else {}
    captures = meta.get("captures") if isinstance(meta.get("captures"), Mapping) else {}
    replaying = spec.scenario.startswith("replay:")
    return {
        "scenario": "replay" if replaying else spec.scenario,
        "levels": list(spec.levels) if spec.scenario == "alternate" else None,
        "trace_sha256": (replay or {}).get("sha256") if replaying else None,
        "compress": spec.compress if replaying else None,
        "rate": spec.rate,
        "modes": sorted(spec.modes),
        "threads": spec.threads,
        "target_threads": spec.target_threads,
        "block": [spec.block, spec.settle if spec.block > 1 else 0],
        "pinned": spec.cpu != -1,
        "fifo": spec.fifo,
        "captures": sorted(set(captures or {}) - _FREE_CAPTURES),
        "device": str(meta.get("device", "")),
        "kernel": str(target.get("kernel_release", "")),
        "build": str((extra or {}).get("kernel_version", "")),
        "image": str((vm or {}).get("sha256") or (vm or {}).get("image_sha256") or ""),
    }


_TARGET_FACTS = ("device", "kernel", "build", "image")


def fingerprint(meta: Mapping[str, Any], *, target: bool = True) -> str:
    """A short stable id (12 hex digits) of what one run measured; equal ids pool.
    `target=False`: the schedule and captures only (devices of a farm measured alike)."""
    facts = _facts(meta)
    if not target:
        facts = {k: v for k, v in facts.items() if k not in _TARGET_FACTS}
    blob = json.dumps(facts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def report_groups(metas: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Indices of `metas` in groups a report may show together: runs of one schedule
    (devices side by side, each device's runs pooled), split further by fingerprint when a
    device ran on more than one kernel, so no fit mixes two kernels. In order of
    appearance."""
    by_schedule: dict[str, list[int]] = {}
    for i, m in enumerate(metas):
        by_schedule.setdefault(fingerprint(m, target=False), []).append(i)
    out: list[list[int]] = []
    for idx in by_schedule.values():
        kernels: dict[str, set[str]] = {}
        for i in idx:
            kernels.setdefault(str(metas[i].get("device", "")), set()).add(fingerprint(metas[i]))
        if all(len(k) == 1 for k in kernels.values()):
            out.append(idx)
            continue
        split: dict[str, list[int]] = {}
        for i in idx:
            split.setdefault(fingerprint(metas[i]), []).append(i)
        out += split.values()
    return out


def describe(meta: Mapping[str, Any], *, target: bool = True) -> str:
    """What a fingerprint stands for, in words: 'lmkd, back to back, reopen, ...'."""
    f = _facts(meta)
    what = [f["scenario"] + (f" {f['levels'][0]}/{f['levels'][1]}" if f["levels"] else "")]
    if f["trace_sha256"]:
        what[0] += f" of trace {str(f['trace_sha256'])[:8]}"
    what.append("back to back" if not f["rate"] else f"{f['rate']:g}/s")
    what.append("+".join(f["modes"]))
    what.append(f"blocks of {f['block'][0]}" if f["block"][0] > 1 else "write by write")
    if f["captures"]:
        what.append("capture " + "+".join(f["captures"]))
    if not f["pinned"]:
        what.append("unpinned")
    if target:
        what.append(f"{f['device']} {f['kernel']}")
    return ", ".join(what)
