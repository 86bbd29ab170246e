#!/usr/bin/env python3
"""`perfetto` stand-in for the loopback adbd peer (stdlib only; runs as the peer's uid).

Mimics the Android `perfetto` command line in normal mode:

    perfetto [--txt] -c CONFIG|- -o OUT [-d|--background | -D|--background-wait]
             [--no-clobber] [--add-note K=V] ...      perfetto --version | --help

The config is forwarded to the traced stand-in (tests/peer_tools/_traced.py) over the
consumer socket named by PERFETTO_CONSUMER_SOCK_NAME (default /dev/socket/traced_consumer,
as on a phone); no daemon there fails like a phone whose traced is off. The trace the
daemon returns is written to OUT by this process, so the file belongs to the caller.

Like a production phone: a caller other than root may write OUT only under
/data/misc/perfetto-traces (SELinux: the perfetto domain writes perfetto_traces_data_file
only) and, before Android 12 (ro.build.version.sdk < 31), may pass the config only on
stdin (`-c -`), since perfetto cannot read shell-owned files. SIGTERM/SIGINT stop the
session; the file is complete once the process has exited. PERFETTO_STANDIN_OLD=1
makes it a build without -D/--background-wait.
"""

import getopt
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

VERSION = "Perfetto v47.0 (droidoom peer stand-in)"
LONG = ["config=", "txt", "out=", "background", "background-wait", "no-clobber", "add-note=",
        "version", "help", "query", "time=", "buffer=", "size=", "app=", "upload",
        "dropbox=", "no-guardrails", "detach=", "attach=", "stop"]  # fmt: skip
SHORT = "c:o:dDt:b:s:a:h"
USAGE = """Usage: perfetto
  --background     -d      : Exits immediately and continues in the background.
  --background-wait -D     : Like --background, but waits (up to 30s) for all data
                             sources to be started before exiting.
  --config         -c      : /path/to/trace/config/file or - for stdin
  --out            -o      : /path/to/out/trace/file or - for stdout
  --txt                    : Parse config as pbtxt.
  --no-clobber             : Do not overwrite an existing output file.
  --add-note       KEY=VAL : Adds a note to the trace config.
  --version                : Prints the version number.
  --help           -h
"""
TRACES_DIR = "/data/misc/perfetto-traces"
CONFIGS_DIR = "/data/misc/perfetto-configs"


def err(msg: str) -> int:
    print(f"[perfetto] {msg}", file=sys.stderr)
    return 1


def sdk() -> int:
    try:
        out = subprocess.run(["getprop", "ro.build.version.sdk"], capture_output=True,
                             text=True, timeout=10).stdout  # fmt: skip
        return int(out.strip() or 0)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0


def rpc(sock: socket.socket, buf, req: dict) -> dict:
    sock.sendall(json.dumps(req).encode() + b"\n")
    line = buf.readline()
    if not line:
        raise ConnectionError("traced closed the connection")
    return json.loads(line)


def connect() -> tuple[socket.socket, object]:
    path = os.environ.get("PERFETTO_CONSUMER_SOCK_NAME", "/dev/socket/traced_consumer")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s, s.makefile("rb")


def record(config: str, out_fd: int, started=None) -> int:
    """Run one session: start, wait for SIGTERM/SIGINT or duration_ms, stop, write."""
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    try:
        sock, buf = connect()
    except OSError as e:
        msg = f"Failed to connect to the traced service ({e}); is traced running?"
        return started(msg) if started else err(msg)
    ans = rpc(sock, buf, {"op": "start", "config": config, "uid": os.getuid()})
    if not ans.get("ok"):
        return started(ans.get("error", "?")) if started else err(ans.get("error", "?"))
    if started:
        started(None)
    deadline = time.monotonic() + ans["duration_ms"] / 1000 if ans.get("duration_ms") else None
    while not stop and (deadline is None or time.monotonic() < deadline):
        readable, _, _ = select.select([sock], [], [], 0.02)
        if readable and not sock.recv(1, socket.MSG_PEEK):  # like perfetto: service gone
            return err("Service disconnected: the tracing session is lost")
    ans = rpc(sock, buf, {"op": "stop"})
    if not ans.get("ok"):
        return err(ans.get("error", "?"))
    left = ans["size"]
    while left:
        chunk = buf.read(min(left, 1 << 20))
        if not chunk:
            return err("traced closed the connection mid-trace")
        os.write(out_fd, chunk)
        left -= len(chunk)
    os.close(out_fd)
    return 0


def background(config: str, out_fd: int, wait: bool) -> int:
    """Daemonize like perfetto: the child records; the parent prints the child's pid
    (after the session started with --background-wait) and exits."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)

        def started(error):
            try:  # without --background-wait nobody reads it any more
                os.write(w, (error or "").encode() or b"\0")
            except BrokenPipeError:
                pass
            os.close(w)
            return 1 if error else 0

        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

        os._exit(record(config, out_fd, started))
    os.close(w)
    os.close(out_fd)
    if wait:
        msg = os.read(r, 4096)
        if msg != b"\0":
            os.waitpid(pid, 0)
            return err(msg.decode(errors="replace") or "the tracing session did not start")
    print(pid, flush=True)
    return 0


def main(argv: list[str]) -> int:
    short, long_opts, usage = SHORT, LONG, USAGE
    if os.environ.get("PERFETTO_STANDIN_OLD"):  # a build from before -D/--background-wait
        short, long_opts = SHORT.replace("D", ""), [o for o in LONG if o != "background-wait"]
        usage = "\n".join(ln for ln in USAGE.splitlines() if "-D" not in ln and "sources" not in ln)
    try:
        opts, rest = getopt.gnu_getopt(argv, short, long_opts)
    except getopt.GetoptError as e:
        print(f"perfetto: {e}\n{usage}", file=sys.stderr)
        return 1
    o = {}
    for k, v in opts:
        o[{"-c": "--config", "-o": "--out", "-d": "--background", "-D": "--background-wait",
           "-h": "--help", "-t": "--time", "-b": "--buffer", "-s": "--size",
           "-a": "--app"}.get(k, k)] = v  # fmt: skip
    if "--help" in o:
        print(usage)
        return 0
    if "--version" in o:
        print(VERSION)
        return 0
    if rest or any(k in o for k in ("--time", "--buffer", "--size", "--app")):
        return err("simple mode (categories, -t/-b/-s/-a) is not emulated; use -c CONFIG")
    if any(k in o for k in ("--query", "--upload", "--dropbox", "--attach", "--detach")):
        return err("this stand-in emulates recording to a file only")
    if "--config" not in o:
        return err("Missing config: pass -c CONFIG or use simple mode")
    if "--out" not in o:
        return err("Either --out or --upload is required")
    cfg_path, out = o["--config"], o["--out"]
    root = os.getuid() == 0
    if cfg_path == "-":
        config = sys.stdin.read()
    else:
        if not root and sdk() < 31 and not cfg_path.startswith(CONFIGS_DIR + "/"):
            return err(f"Could not open {cfg_path}: Permission denied (pass the config "
                       "on stdin with -c - before Android 12)")  # fmt: skip
        try:
            with open(cfg_path) as f:
                config = f.read()
        except OSError as e:
            return err(f"Could not open {cfg_path}: {e.strerror}")
    if "--txt" not in o:
        return err("The trace config is invalid: binary configs are not emulated (use --txt)")
    if out == "-":
        return err("-o - is not emulated")
    if not root and not os.path.abspath(out).startswith(TRACES_DIR + "/"):
        return err(f"Failed to open {out}: Permission denied")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if "--no-clobber" in o else os.O_TRUNC)
    try:
        out_fd = os.open(out, flags, 0o600)
    except OSError as e:
        return err(f"Failed to open {out}: {e.strerror}")
    if "--background" in o or "--background-wait" in o:
        return background(config, out_fd, "--background-wait" in o)
    return record(config, out_fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
