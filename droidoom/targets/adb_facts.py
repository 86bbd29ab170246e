"""Device facts for AdbTarget: one shell script (one round trip) and its parser.

The script prints `key=value` lines plus the `[prop]: [value]` lines of `getprop`;
everything is optional (a locked-down phone hides some of it) and parsing never fails
on a missing key.
"""

from __future__ import annotations

import shlex

from ..errors import PermanentTargetError
from ..native import ABIS
from .base import TargetFacts
from .phone_facts import PhoneFacts, PowerState, SuKind

_PROPS = (
    r"ro\.product\.(model|device|brand|manufacturer|cpu\.abi|cpu\.abilist)|ro\.build\."
    r"(fingerprint|type|version\.sdk|version\.release)|ro\.debuggable|security\.perf_harden"
)

_SCRIPT = r"""
getprop | grep -E '^\[(%(props)s)\]'
echo "kernel=$(uname -r)"
echo "machine=$(uname -m)"
echo "cpus_online=$(cat /sys/devices/system/cpu/online 2>/dev/null)"
echo "cpus_possible=$(cat /sys/devices/system/cpu/possible 2>/dev/null)"
for g in /sys/devices/system/cpu/cpufreq/policy*/scaling_governor \
         /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do
  [ -r "$g" ] && echo "governor=$(cat "$g")"
done
echo "pid_max=$(cat /proc/sys/kernel/pid_max 2>/dev/null)"
echo "threads_max=$(cat /proc/sys/kernel/threads-max 2>/dev/null)"
echo "uid=$(id -u)"
echo "shell_oom_score_adj=$(cat /proc/$$/oom_score_adj 2>/dev/null)"
echo "battery_temp=$(cat /sys/class/power_supply/battery/temp 2>/dev/null)"
for z in /sys/class/thermal/thermal_zone*; do
  t=$(cat "$z/temp" 2>/dev/null) && [ -n "$t" ] && echo "thermal=$(cat "$z/type" 2>/dev/null):$t"
done
echo "selinux=$(getenforce 2>/dev/null)"
if [ "$(id -u)" != 0 ] && command -v su >/dev/null 2>&1; then
  # Ask for root once (Magisk may prompt or toast per request): `su -v` names the flavour
  # without asking (Magisk/KernelSU print a version; AOSP su knows no such user), then one
  # bounded request, no stdin, in that flavour's syntax.
  T=; command -v timeout >/dev/null 2>&1 && T="timeout 5"
  case "$(su -v </dev/null 2>/dev/null)" in
    *[0-9]*) [ "$($T su -c 'id -u' </dev/null 2>/dev/null)" = 0 ] && echo su=magisk ;;
    *) [ "$($T su 0 id -u </dev/null 2>/dev/null)" = 0 ] && echo su=aosp ;;
  esac
  echo su_tried=1
fi
grep -qw tracefs /proc/filesystems 2>/dev/null && echo tracefs_fs=1
for d in /sys/kernel/tracing /sys/kernel/debug/tracing; do
  if [ -e "$d/trace" ] || [ -e "$d/events" ]; then
    echo "tracefs=$d"
    [ -r "$d/trace" ] && [ -w "$d/tracing_on" ] && echo tracefs_rw=1
    [ -e "$d/events/oom/oom_score_adj_update" ] && echo oom_event=1
    break
  fi
done
dumpsys power 2>/dev/null | while read -r l; do
  case "$l" in
    mWakefulness=*|mIsPowered=*|mPlugType=*|mStayOn=*|mStayOnWhilePluggedInSetting=*)
      echo "power.$l" ;;
    "Screen off timeout:"*) l=${l#Screen off timeout: }; echo "power.screen_off_ms=${l%% ms}" ;;
  esac
done
echo "simpleperf=$(command -v simpleperf 2>/dev/null)"
echo "perf=$(command -v perf 2>/dev/null)"
echo "perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null)"
for d in %(dirs)s; do
  f="$d/%(helper)s"
  [ -x "$f" ] || continue
  echo "helper=$d:$({ sha256sum "$f" || toybox sha256sum "$f"; } 2>/dev/null | cut -d' ' -f1)"
done
true
"""


def facts_script(workdirs: tuple[str, ...], helper: str) -> str:
    """The facts script; it also reports the hash of a helper already in each workdir."""
    dirs = " ".join(shlex.quote(d) for d in workdirs)
    return _SCRIPT % {"props": _PROPS, "dirs": dirs, "helper": helper}


def count_cpus(ranges: str) -> int:
    """Number of CPUs in a sysfs list like "0-3,6,8-9" (0 if empty or malformed)."""
    n = 0
    for part in ranges.strip().split(","):
        lo, _, hi = part.partition("-")
        try:
            n += int(hi or lo) - int(lo) + 1
        except ValueError:
            return n
    return n


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except ValueError:
        return None


def _adb_root(uid: int | None, debuggable: bool) -> str:
    if uid == 0:
        return "active (adbd runs as root)"
    if debuggable:
        return "available: `adb root` (debuggable build)"
    return "refused: production build (ro.debuggable=0)"


class _Output:
    """The facts script's output: `[prop]: [value]` lines (getprop) and `key=value`
    lines (a key may repeat, e.g. one `governor=` per CPU policy)."""

    def __init__(self, stdout: str):
        self.props: dict[str, str] = {}
        self.kv: dict[str, list[str]] = {}
        for line in stdout.splitlines():
            if line.startswith("[") and "]: [" in line:
                k, _, v = line.partition("]: [")
                self.props[k[1:]] = v.rstrip().removesuffix("]")
            elif "=" in line:
                k, _, v = line.partition("=")
                self.kv.setdefault(k, []).append(v.strip())

    def one(self, key: str) -> str:
        """The last value of `key` ("" if absent)."""
        return self.kv.get(key, [""])[-1]

    def last(self, key: str) -> str | None:
        """The last value of `key`, None if absent."""
        return self.kv[key][-1] if key in self.kv else None

    def all(self, key: str) -> list[str]:
        return self.kv.get(key, [])

    def prop(self, name: str) -> str:
        return self.props.get(name, "")


def parse_power(out: _Output) -> PowerState:
    """PowerManagerService's `dumpsys power` state (see PowerState)."""

    def flag(key: str) -> bool | None:
        v = out.last(f"power.{key}")
        return None if v is None else v == "true"

    return PowerState(
        wakefulness=out.last("power.mWakefulness"),
        powered=flag("mIsPowered"),
        plug_type=_int(out.one("power.mPlugType")),
        stay_on=flag("mStayOn"),
        stay_on_while_plugged=_int(out.one("power.mStayOnWhilePluggedInSetting")),
        screen_off_timeout_ms=_int(out.one("power.screen_off_ms")),
    )


def parse_abi(out: _Output, serial: str) -> str:
    """The best ABI droidoom has a helper for, from the primary ABI and the ABI list."""
    abis = [out.prop("ro.product.cpu.abi"), *out.prop("ro.product.cpu.abilist").split(",")]
    abi = next((a for a in abis if a in ABIS), None)
    if abi is None:
        raise PermanentTargetError(
            f"{serial}: ABI {abis[0]!r} has no droidoom helper (have {', '.join(ABIS)})"
        )
    return abi


def parse_thermal(out: _Output) -> dict[str, float]:
    """{thermal zone type: °C} from `thermal=TYPE:MILLIDEGREES` lines."""
    thermal: dict[str, float] = {}
    for entry in out.all("thermal"):
        name, _, milli = entry.rpartition(":")
        value = _int(milli)
        if value is not None:
            thermal[name or f"zone{len(thermal)}"] = value / 1000
    return thermal


def parse_helper_hashes(out: _Output) -> dict[str, str]:
    """{workdir: sha256} of the helpers already on the device."""
    hashes = {}
    for entry in out.all("helper"):
        d, _, sha = entry.rpartition(":")
        if len(sha) == 64:
            hashes[d] = sha
    return hashes


def _su_kind(text: str) -> SuKind | None:
    return "aosp" if text == "aosp" else "magisk" if text == "magisk" else None


def parse_phone(out: _Output) -> PhoneFacts:
    """The facts only phones have (see PhoneFacts)."""
    uid = _int(out.one("uid"))
    su = _su_kind(out.one("su"))
    debuggable = out.prop("ro.debuggable") == "1"
    batt = _int(out.one("battery_temp"))
    return PhoneFacts(
        device_name=out.prop("ro.product.device"),
        brand=out.prop("ro.product.brand"),
        manufacturer=out.prop("ro.product.manufacturer"),
        android_release=out.prop("ro.build.version.release"),
        build_type=out.prop("ro.build.type"),
        debuggable=debuggable,
        abilist=out.prop("ro.product.cpu.abilist"),
        machine=out.one("machine"),
        cpus_online=out.one("cpus_online"),
        cpus_possible=out.one("cpus_possible"),
        cpu_governors=tuple(sorted(set(out.all("governor")) - {""})),
        battery_temp_c=batt / 10 if batt is not None else None,
        thermal_c=parse_thermal(out),
        uid=uid,
        shell_oom_score_adj=_int(out.one("shell_oom_score_adj")),
        su=su,
        su_denied=out.one("su_tried") == "1" and su is None,
        adb_root=_adb_root(uid, debuggable),
        selinux=out.one("selinux"),
        tracefs=out.one("tracefs"),
        tracefs_supported=out.one("tracefs_fs") == "1" or bool(out.one("tracefs")),
        tracefs_rw=out.one("tracefs_rw") == "1",
        oom_event=out.one("oom_event") == "1",
        simpleperf=out.one("simpleperf"),
        perf=out.one("perf"),
        perf_event_paranoid=_int(out.one("perf_event_paranoid")),
        perf_harden=out.prop("security.perf_harden"),
        power=parse_power(out),
    )


def parse_facts(stdout: str, serial: str) -> tuple[TargetFacts, dict[str, str]]:
    """(facts, {workdir: sha256 of the helper already there}) from the script output."""
    out = _Output(stdout)
    phone = parse_phone(out)
    facts = TargetFacts(
        device=serial,
        transport="adb",
        model=out.prop("ro.product.model"),
        abi=parse_abi(out, serial),
        kernel_release=out.one("kernel"),
        cpus=count_cpus(out.one("cpus_online")),
        root=phone.uid == 0 or phone.su is not None,
        pid_max=_int(out.one("pid_max")) or 0,
        threads_max=_int(out.one("threads_max")) or 0,
        fingerprint=out.prop("ro.build.fingerprint"),
        sdk=_int(out.prop("ro.build.version.sdk")),
        phone=phone,
    )
    return facts, parse_helper_hashes(out)
