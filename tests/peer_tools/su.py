#!/usr/bin/env python3
"""`su` stand-in for the loopback adbd peer (a test fixture, never product code).

Flavour from $DROIDOOM_PEER_SU: `aosp` (system/extras/su: `su [WHO [COMMAND...]]`, no
options; `-v` is an unknown user) or `magisk` (`su -v` prints a version, `su -c CMD`;
`su USER ARGS...` also asks for root, then passes ARGS to the shell).
Every request for root is appended to $DROIDOOM_PEER_SU_LOG (the grant prompt a phone
shows), then answered like a user who taps "deny" (exit 1) unless the caller already is
root, in which case the command runs.
"""

import os
import sys


def main(argv: list[str]) -> int:
    flavour = os.environ.get("DROIDOOM_PEER_SU", "aosp")
    if flavour == "magisk" and argv[:1] == ["-v"]:
        print("27.0:MAGISKSU")
        return 0
    if flavour == "magisk" and argv[:1] == ["-c"] and len(argv) >= 2:
        command = ["/bin/sh", "-c", argv[1]]
    elif flavour == "magisk" and argv[:1] in (["0"], ["root"]):  # su [user [shell args]]
        command = ["/bin/sh", *argv[1:]]
    elif flavour == "aosp" and argv[:1] in (["0"], ["root"]):
        command = argv[1:] or ["/bin/sh"]
    else:
        who = argv[0] if argv else ""
        sys.stderr.write(f"su: unknown user {who}\n" if flavour == "aosp" else "su: usage\n")
        return 1
    log = os.environ.get("DROIDOOM_PEER_SU_LOG")
    if log:
        with open(log, "a") as f:
            f.write(" ".join(argv) + "\n")
    if os.geteuid() != 0:
        sys.stderr.write("Permission denied\n")
        return 1
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
