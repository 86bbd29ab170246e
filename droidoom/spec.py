"""What a profile measures: a frozen, validated spec that is recorded in run.json."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import UsageError
from .vocab import KINDS, MODES

ADJ_MIN, ADJ_MAX = -1000, 1000
SCENARIOS = ("lmkd", "alternate")
ORDERS = ("updown", "ascending")
#: What a profile times: oom_score_adj writes, or lmkd's kill path (pidfd_send_signal +
#: process_mrelease) on a fresh victim per kill.
MEASURES = ("adj", "kill")
MAX_VICTIM_RSS_KB = 1 << 20  # the helper's own ceiling (1 GiB)

# Hard ceilings that keep a typo from fork-bombing a phone; the helper also checks the
# live limits (pid_max, threads-max, RLIMIT_NPROC) before it spawns anything.
MAX_POPULATION = 20000
MAX_THREADS = 64
MAX_WRITES = 1_000_000
#: Longest run --rate may plan (timed writes / rate): a slip like `--rate 1e-9` would
#: otherwise hold the device for decades; a day is far beyond any real profile.
MAX_PLANNED_S = 24 * 3600


def duration_text(s: float) -> str:
    """Seconds as the largest unit that reads well: 45 s, 12 min, 26.7 h, 3.2 days, 31 years."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if s >= 2 * size if unit != "h" else s >= size:
            return f"{s / size:,.3g} {unit}" if s / size < 1000 else f"{s / size:,.0f} {unit}"
    return f"{s:.0f} s"


@dataclass(frozen=True)
class ProfileSpec:
    """One profile: the sweep, the target kinds and the write schedule."""

    populations: tuple[int, ...] = (0, 200, 400, 800, 1600)  # extra processes per point
    kinds: tuple[str, ...] = KINDS  # target kinds written at every point
    writes: int = 2000  # timed writes per kind per point
    threads: int = 8  # threads in each population process (apps are multi-threaded)
    target_threads: int = 8  # threads in the `threaded` target
    scenario: str = "lmkd"  # lmkd role model, alternate between two levels, or replay:TRACE
    levels: tuple[int, int] = (0, 900)  # the two adj values of `alternate`
    seed: int = 1  # scenario RNG seed: same seed, same schedule
    rate: float = 0.0  # updates per second; 0 = back to back
    modes: tuple[str, ...] = ("reopen",)  # reopen = lmkd's open+write+close; persistent fd
    warmup: int = 20  # untimed writes per target before each point's timed ones
    # Kinds take turns in blocks of `block` consecutive writes (1 = write by write): a
    # multiprocess write walks every process and evicts caches and TLB entries, so a control
    # write right after it pays for that. The first `settle` writes after a switch are
    # flagged as warm-up: kept in the samples, left out of medians and fits.
    block: int = 50
    settle: int = 2
    order: str = "updown"  # sweep order: up and back down (drift shows), or ascending
    cpu: int = -2  # pin the writer: a CPU number, -2 = the core it starts on, -1 = unpinned
    fifo: bool = True  # writer at SCHED_FIFO like lmkd, where permitted (root)
    compress: float = 1.0  # replay:TRACE: the trace's gaps divided by this; 0 = back to back
    repeat: int = 1  # replay:TRACE: plays per population visit, each after a sweep point
    measure: str = "adj"  # adj: time oom_score_adj writes; kill: lmkd's kill path
    victim_rss: int = 64  # measure kill: KiB of anonymous memory each victim touches

    def validate(self) -> ProfileSpec:
        """Raise UsageError with a one-line, actionable message on bad input."""
        if not self.populations:
            raise UsageError("give at least one population (e.g. --population 0,400,800)")
        for p in self.populations:
            if p < 0 or p > MAX_POPULATION:
                raise UsageError(
                    f"population {p} is out of range: use 0..{MAX_POPULATION} extra processes"
                )
        if len(set(self.populations)) != len(self.populations):
            raise UsageError(
                f"--population repeats a value ({','.join(map(str, self.populations))}): "
                "give each population once, e.g. 0,400,800"
            )
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise UsageError(
                f"unknown kind {bad[0] if bad else '(none)'!r}: use {', '.join(KINDS)}"
            )
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise UsageError(
                f"unknown mode {bad[0] if bad else '(none)'!r}: use {', '.join(MODES)}"
            )
        if self.scenario.startswith("replay:"):  # droidoom/traces/replay.py
            if not self.scenario[len("replay:") :]:
                raise UsageError("--scenario replay:TRACE needs a file, e.g. replay:t.pftrace")
            if not math.isfinite(self.compress) or self.compress < 0:
                raise UsageError(f"--compress must be a finite factor >= 0 (got {self.compress})")
            if not 1 <= self.repeat <= 100:
                raise UsageError(f"--repeat must be 1..100 plays (got {self.repeat})")
        elif self.scenario not in SCENARIOS:
            raise UsageError(
                f"unknown scenario {self.scenario!r}: use {', '.join(SCENARIOS)} or replay:TRACE"
            )
        if not 1 <= self.writes <= MAX_WRITES:
            raise UsageError(f"--writes must be 1..{MAX_WRITES} (got {self.writes})")
        if not 1 <= self.threads <= MAX_THREADS:
            raise UsageError(f"--threads must be 1..{MAX_THREADS} (got {self.threads})")
        if not 2 <= self.target_threads <= 256:
            raise UsageError(f"--target-threads must be 2..256 (got {self.target_threads})")
        for a in self.levels:
            if not ADJ_MIN <= a <= ADJ_MAX:
                raise UsageError(f"adj {a} is out of range: oom_score_adj takes -1000..1000")
        if len(self.levels) != 2:
            raise UsageError("--adj takes exactly two levels, e.g. --adj 0,900")
        if not math.isfinite(self.rate):
            raise UsageError(f"--rate must be a finite number of updates/s (got {self.rate})")
        if self.rate < 0:
            raise UsageError(f"--rate must be >= 0 updates/s (got {self.rate:g})")
        self._check_planned_duration()
        if self.order not in ORDERS:
            raise UsageError(f"unknown order {self.order!r}: use {', '.join(ORDERS)}")
        if self.measure not in MEASURES:
            raise UsageError(f"unknown measure {self.measure!r}: use {', '.join(MEASURES)}")
        if self.measure == "kill" and self.scenario.startswith("replay:"):
            raise UsageError("--measure kill times kills, not a trace: drop --scenario replay:")
        if not 0 <= self.victim_rss <= MAX_VICTIM_RSS_KB:
            raise UsageError(
                f"--victim-rss must be 0..{MAX_VICTIM_RSS_KB} KiB (got {self.victim_rss})"
            )
        if self.cpu < -2:
            raise UsageError(f"--cpu must be a CPU number >= 0 (got {self.cpu})")
        if not 0 <= self.warmup <= 10000:
            raise UsageError(f"--warmup must be 0..10000 (got {self.warmup})")
        if not 1 <= self.block <= MAX_WRITES:
            raise UsageError(f"--block must be 1..{MAX_WRITES} writes (got {self.block})")
        if not 0 <= self.settle <= 1000 or 1 < self.block <= self.settle:
            raise UsageError(
                f"--settle must be 0..1000 and fewer than --block's {self.block} writes "
                f"(got {self.settle})"
            )
        return self

    def timed_writes(self) -> int:
        """Timed writes the sweep plans (role-change scenarios): each population gets
        `writes` per kind and mode, whether in one visit or split over up and down."""
        return self.writes * len(self.populations) * len(self.kinds) * len(self.modes)

    def _check_planned_duration(self) -> None:
        """UsageError when --rate would stretch the run beyond MAX_PLANNED_S (the helper
        paces each point's writes at `rate`; a replay follows its trace's gaps instead)."""
        if self.rate <= 0 or self.scenario.startswith("replay:"):
            return
        planned = self.timed_writes() / self.rate
        if planned > MAX_PLANNED_S:
            floor = self.timed_writes() / MAX_PLANNED_S
            raise UsageError(
                f"--rate {self.rate:g} updates/s paces {self.timed_writes():,} timed writes "
                f"over {duration_text(planned)} (planned duration); a run may plan at most "
                f"{duration_text(MAX_PLANNED_S)}: give --rate {floor:.3g} or more, or fewer "
                "--writes"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProfileSpec:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "order" not in d:  # recorded before these existed: what that run did
            known.update(order="ascending", cpu=-1, fifo=False)
        if "block" not in d:  # before blocks: kinds took turns write by write
            known.update(block=1, settle=0)
        for k in ("populations", "kinds", "levels", "modes"):
            if k in known:
                known[k] = tuple(known[k])
        return cls(**known)


#: Default sweep: answers "is it O(N)?" with five points in well under a minute.
DEFAULT = ProfileSpec()

#: --quick: three points, fewer writes; answers in seconds.
QUICK = replace(DEFAULT, populations=(0, 400, 800), writes=400, warmup=10)

#: --measure kill: each kill forks, kills and reaps a victim (~0.5 ms), so fewer of them;
#: blocks of 10 kills per kind.
KILL = replace(DEFAULT, measure="kill", writes=200, block=10, settle=1, warmup=0)
KILL_QUICK = replace(QUICK, measure="kill", writes=100, block=10, settle=1, warmup=0)
