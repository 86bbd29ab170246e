#!/usr/bin/env python3
"""`dumpsys` stand-in for the loopback adbd peer (a test fixture, never product code).

`dumpsys power` prints the PowerManagerService lines droidoom reads, in their real format
(frameworks/base PowerManagerService.dumpInternal), for the state named by
$DROIDOOM_PEER_POWER: `usb` (default: awake, USB-powered), `battery` (awake, on battery,
30 s screen timeout), `asleep` (screen off, on battery), `stayon` (svc power stayon true).
Any other service: "Can't find service" like dumpsys, exit 0.
"""

import os
import sys

STATES = {
    "usb": ("Awake", "true", 2, "false", 0),
    "battery": ("Awake", "false", 0, "false", 0),
    "asleep": ("Asleep", "false", 0, "false", 0),
    "stayon": ("Awake", "true", 2, "true", 7),
}


def main(argv: list[str]) -> int:
    if argv[:1] != ["power"]:
        print(f"Can't find service: {argv[0] if argv else ''}")
        return 0
    wake, powered, plug, stay, setting = STATES[os.environ.get("DROIDOOM_PEER_POWER", "usb")]
    print("POWER MANAGER (dumpsys power)\n\nPower Manager State:")
    print(f"  mDirty=0x0\n  mWakefulness={wake}\n  mWakefulnessChanging=false")
    print(f"  mIsPowered={powered}\n  mPlugType={plug}\n  mBatteryLevel=80")
    print(f"  mStayOn={stay}\n  mProximityPositive=false\n\nSettings and Configuration:")
    print(f"  mScreenOffTimeoutSetting=30000\n  mStayOnWhilePluggedInSetting={setting}\n")
    print("Attentive timeout: -1 ms\nSleep timeout: -1 ms\nScreen off timeout: 30000 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
