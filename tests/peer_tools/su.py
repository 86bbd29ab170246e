#!/usr/bin/env python3
"""`su` stand-in for the loopback adbd peer (a test fixture, never product code).

Flavour from $DROIDOOM_PEER_SU: `aosp` (system/extras/su: `su [WHO [COMMAND...]]`, no
options; `-v` is an unknown user) or `magisk` (`su -v` prints a version, `su -c CMD`;
`su USER ARGS...` also asks for root, then passes ARGS to the shell).
Every request for root (the grant prompt a phone shows) is appended to
$DROIDOOM_PEER_SU_LOG, argv as one JSON line. A caller that is root runs the command;
otherwise, with $DROIDOOM_PEER_SU_SOCKET (a ShellUidPeer with grant_su: a root daemon,
tests/peer_tools/_sud.py) the user "taps grant" and the command runs as root on this
process's stdio, else "deny" (exit 1).
"""

#: install-if-env DROIDOOM_PEER_SU
# (user builds have no su: only a test that picks a flavour gets one)

import array
import json
import os
import signal
import socket
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
            f.write(json.dumps(argv) + "\n")  # one line per request
    if os.geteuid() == 0:
        os.execvp(command[0], command)
    sock = os.environ.get("DROIDOOM_PEER_SU_SOCKET")
    if not sock:
        sys.stderr.write("Permission denied\n")
        return 1
    return granted(sock, command)


def granted(path: str, command: list[str]) -> int:
    """Run `command` as root through the peer's su daemon (_sud.py) on our stdio; relay
    SIGHUP/SIGINT/SIGTERM to it; exit with its code."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendmsg([json.dumps({"argv": command}).encode() + b"\n"],
              [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])  # fmt: skip
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda n, _f: s.sendall(f"signal {n}\n".encode()))
    for line in s.makefile("r"):
        word, _, num = line.partition(" ")
        if word == "exit":
            return int(num)
        sys.stderr.write(line)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
