#!/usr/bin/env python3
"""Root side of the peer's `su` stand-in (a test fixture; the way magiskd serves `su`).

Started as root by a ShellUidPeer's setup before it drops to the shell uid:
`_sud.py SOCKET`. Each client (tests/peer_tools/su.py, running as the shell user) connects,
sends one JSON line {"argv": [...]} with its stdin/stdout/stderr attached (SCM_RIGHTS); the
command runs as root on exactly those fds, in its own session. The client may then send
"signal N" lines (it relays SIGHUP/SIGINT/SIGTERM); the daemon answers "exit N" when the
command ends. The daemon exits when its parent (the peer) does, and its commands die with
it (PR_SET_PDEATHSIG).
"""

import array
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(137)


def _watch_parent(parent: int) -> None:
    """Exit once the peer is gone. Its death signal alone is not enough: the peer drops
    to the shell uid, and the kernel's permission check on that signal then stops it
    reaching this root daemon. (Our commands die with us: root to root.)"""
    while os.getppid() == parent:
        time.sleep(0.1)
    os._exit(137)


def serve(conn: socket.socket) -> None:
    fds = array.array("i")
    msg, anc, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    try:
        argv = json.loads(msg.split(b"\n", 1)[0])["argv"]
        me = os.getpid()
        proc = subprocess.Popen(argv, stdin=fds[0], stdout=fds[1], stderr=fds[2],
                                start_new_session=True,
                                preexec_fn=lambda: _die_with_parent(me))  # fmt: skip
    except Exception as e:  # noqa: BLE001 - tell the client, whatever it was
        conn.sendall(f"error {e}\nexit 127\n".encode())
        return
    finally:
        for fd in fds:
            os.close(fd)

    def relay() -> None:
        for line in conn.makefile("r"):
            word, _, num = line.partition(" ")
            if word == "signal" and num.strip().isdigit() and proc.returncode is None:
                proc.send_signal(int(num))  # our own unreaped child: the pid is still ours

    threading.Thread(target=relay, daemon=True).start()
    rc = proc.wait()
    try:
        conn.sendall(f"exit {128 - rc if rc < 0 else rc}\n".encode())
    except OSError:
        pass
    conn.close()


def main(path: str) -> int:
    parent = int(os.environ.get("SUD_PARENT", os.getppid()))
    _die_with_parent(parent)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o666)  # the shell user connects; whether to grant is the test's choice
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
