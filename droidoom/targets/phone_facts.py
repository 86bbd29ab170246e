"""Facts only phones have (read by AdbTarget's facts script, see adb_facts.py).

`TargetFacts.phone` holds them typed; run.json keeps them flat in `target.extra`
(`TargetFacts.to_json`), under the same keys as the fields here, so stored runs and the
notebooks read them unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

#: How the shell user becomes root: AOSP `su 0 CMD`, Magisk/KernelSU `su -c CMD`.
SuKind = Literal["aosp", "magisk"]


@dataclass(frozen=True)
class PowerState:
    """PowerManagerService's `dumpsys power` state; None: not reported (e.g. no dumpsys)."""

    wakefulness: str | None = None  # Awake, Asleep, Dozing, Dreaming
    powered: bool | None = None  # on a charger
    plug_type: int | None = None  # BatteryManager plug type (0 none, 1 AC, 2 USB, 4 wireless)
    stay_on: bool | None = None  # the screen is being kept on
    stay_on_while_plugged: int | None = None  # bitmask: 1 AC, 2 USB, 4 wireless
    screen_off_timeout_ms: int | None = None  # screen-off timeout


@dataclass(frozen=True)
class PhoneFacts:
    """What an adb device says about itself beyond TargetFacts; "" / None: not visible
    to this user (a locked-down phone hides some of it)."""

    device_name: str = ""  # ro.product.device
    brand: str = ""  # ro.product.brand
    manufacturer: str = ""  # ro.product.manufacturer
    android_release: str = ""  # ro.build.version.release ("14")
    build_type: str = ""  # ro.build.type: user, userdebug, eng
    debuggable: bool = False  # ro.debuggable=1: `adb root` is possible
    abilist: str = ""  # ro.product.cpu.abilist
    machine: str = ""  # uname -m
    cpus_online: str = ""  # /sys/devices/system/cpu/online ("0-7")
    cpus_possible: str = ""  # /sys/devices/system/cpu/possible
    cpu_governors: tuple[str, ...] = ()  # distinct cpufreq scaling governors
    battery_temp_c: float | None = None  # battery temperature
    thermal_c: Mapping[str, float] = field(default_factory=dict)  # thermal zone -> °C
    uid: int | None = None  # uid of the adb shell (0: adbd runs as root)
    shell_oom_score_adj: int | None = None  # the adb shell's own oom_score_adj
    su: SuKind | None = None  # a working su, and its flavour
    su_denied: bool = False  # an su binary exists but refused us
    adb_root: str = ""  # one phrase: is `adb root` active, available or refused
    selinux: str = ""  # getenforce: Enforcing, Permissive ("" when hidden)
    tracefs: str = ""  # the tracefs mount point visible to the shell
    tracefs_supported: bool = False  # the kernel has tracefs
    tracefs_rw: bool = False  # the shell can read `trace` and flip `tracing_on`
    oom_event: bool = False  # the oom/oom_score_adj_update tracepoint exists
    simpleperf: str = ""  # path of simpleperf on the device
    perf: str = ""  # path of perf on the device
    perf_event_paranoid: int | None = None  # /proc/sys/kernel/perf_event_paranoid
    perf_harden: str = ""  # security.perf_harden
    power: PowerState = field(default_factory=PowerState)  # may it suspend mid-run?
    adb_server: str = ""  # the adb server the device was reached through
    adb_features: tuple[str, ...] = ()  # what the device's adbd advertises
