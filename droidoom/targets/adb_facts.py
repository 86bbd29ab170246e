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


def parse_power(kv: dict[str, list[str]]) -> dict:
    """PowerManagerService's `dumpsys power` state (None values: not reported, e.g. no
    dumpsys): wakefulness (Awake, Asleep, Dozing, Dreaming), powered, plug type, stay_on
    (the screen is being kept on), the stay-awake-while-plugged bitmask (1 AC, 2 USB, 4
    wireless) and the screen-off timeout."""

    def one(key: str) -> str | None:
        v = kv.get(f"power.{key}")
        return v[-1] if v else None

    def flag(key: str) -> bool | None:
        v = one(key)
        return None if v is None else v == "true"

    return {
        "wakefulness": one("mWakefulness"),
        "powered": flag("mIsPowered"),
        "plug_type": _int(one("mPlugType")),
        "stay_on": flag("mStayOn"),
        "stay_on_while_plugged": _int(one("mStayOnWhilePluggedInSetting")),
        "screen_off_timeout_ms": _int(one("screen_off_ms")),
    }


def parse_facts(stdout: str, serial: str) -> tuple[TargetFacts, dict[str, str]]:
    """(facts, {workdir: sha256 of the helper already there}) from the script output."""
    props: dict[str, str] = {}
    kv: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith("[") and "]: [" in line:
            k, _, v = line.partition("]: [")
            props[k[1:]] = v.rstrip().removesuffix("]")
        elif "=" in line:
            k, _, v = line.partition("=")
            kv.setdefault(k, []).append(v.strip())

    def one(key: str) -> str:
        return kv.get(key, [""])[-1]

    abis = [props.get("ro.product.cpu.abi", "")]
    abis += props.get("ro.product.cpu.abilist", "").split(",")
    abi = next((a for a in abis if a in ABIS), None)
    if abi is None:
        raise PermanentTargetError(
            f"{serial}: ABI {abis[0]!r} has no droidoom helper (have {', '.join(ABIS)})"
        )
    uid = _int(one("uid"))
    su = one("su") or None
    debuggable = props.get("ro.debuggable") == "1"
    batt = _int(one("battery_temp"))
    thermal = {}
    for entry in kv.get("thermal", []):
        name, _, milli = entry.rpartition(":")
        if _int(milli) is not None:
            thermal[name or f"zone{len(thermal)}"] = _int(milli) / 1000
    hashes = {}
    for entry in kv.get("helper", []):
        d, _, sha = entry.rpartition(":")
        if len(sha) == 64:
            hashes[d] = sha
    sdk = _int(props.get("ro.build.version.sdk"))
    extra = {
        "device_name": props.get("ro.product.device", ""),
        "brand": props.get("ro.product.brand", ""),
        "manufacturer": props.get("ro.product.manufacturer", ""),
        "android_release": props.get("ro.build.version.release", ""),
        "build_type": props.get("ro.build.type", ""),
        "debuggable": debuggable,
        "abilist": props.get("ro.product.cpu.abilist", ""),
        "machine": one("machine"),
        "cpus_online": one("cpus_online"),
        "cpus_possible": one("cpus_possible"),
        "cpu_governors": sorted(set(kv.get("governor", [])) - {""}),
        "battery_temp_c": batt / 10 if batt is not None else None,
        "thermal_c": thermal,
        "uid": uid,
        "shell_oom_score_adj": _int(one("shell_oom_score_adj")),
        "su": su,
        "su_denied": one("su_tried") == "1" and su is None,
        "adb_root": _adb_root(uid, debuggable),
        "selinux": one("selinux"),
        "tracefs": one("tracefs"),
        "tracefs_supported": one("tracefs_fs") == "1" or bool(one("tracefs")),
        "tracefs_rw": one("tracefs_rw") == "1",
        "oom_event": one("oom_event") == "1",
        "simpleperf": one("simpleperf"),
        "perf": one("perf"),
        "perf_event_paranoid": _int(one("perf_event_paranoid")),
        "perf_harden": props.get("security.perf_harden", ""),
        "power": parse_power(kv),
    }
    facts = TargetFacts(
        device=serial,
        transport="adb",
        model=props.get("ro.product.model", ""),
        abi=abi,
        kernel_release=one("kernel"),
        cpus=count_cpus(one("cpus_online")),
        root=uid == 0 or su is not None,
        pid_max=_int(one("pid_max")) or 0,
        threads_max=_int(one("threads_max")) or 0,
        fingerprint=props.get("ro.build.fingerprint", ""),
        sdk=sdk,
        extra=extra,
    )
    return facts, hashes
