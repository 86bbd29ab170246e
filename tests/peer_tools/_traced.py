#!/usr/bin/env python3
"""`traced` + `traced_probes` stand-in: the privileged side of the peer's `perfetto`.

On a phone the `perfetto` command (running as shell) sends its TraceConfig over the
consumer socket to `traced`, and `traced_probes` (root, tracefs access) records ftrace
into traced's buffer; perfetto reads the buffer back and writes the trace file. Here
this one process plays both daemons: the test fixture starts it as root with the
project's interpreter (it needs tracefs and the `perfetto` wheel's protobuf classes),
and the peer's stdlib `perfetto` stand-in (uid 2000) talks to it over a unix socket
(`PERFETTO_CONSUMER_SOCK_NAME`, as real perfetto clients honour).

Wire protocol (ours, not perfetto's IPC): newline-terminated JSON requests and replies.
    -> {"op": "start", "config": "<pbtxt>", "uid": N}
    <- {"ok": true, "duration_ms": N}  |  {"ok": false, "error": "..."}
    -> {"op": "stop"}
    <- {"ok": true, "size": N} followed by N bytes: a serialized perfetto Trace
A connection that closes without "stop" aborts its session (like a consumer dying).

Recording: each session gets a private tracefs instance (`perfetto-standin-<pid>-<n>`),
system-wide like traced_probes (no pid filter), trace_clock `boot` (what perfetto uses),
the config's ftrace_events enabled. At stop the stopped buffer is read as text and
again with options/raw (exact ns; droidoom.traces.ftrace_text zips the two), turned
into FtraceEventBundle packets, with clock snapshots (BOOTTIME, MONOTONIC, REALTIME) at
start and stop (TRACED_STANDIN_SNAPSHOT_SKEW_NS: one, that far off), a process_tree scan
when linux.process_stats asks for one, and ftrace_stats (per-CPU overrun / dropped events)
at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import socket
import sys
import threading
import time

# This directory holds the `perfetto` stand-in (perfetto.py): keep it from shadowing the
# `perfetto` wheel when this file runs as a script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

from google.protobuf import text_format  # noqa: E402
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb  # noqa: E402

from droidoom.traces.ftrace_text import (  # noqa: E402
    parse_cpu_stats,
    parse_raw,
    parse_trace,
    with_ns_timestamps,
)

TRACEFS = "/sys/kernel/tracing"
READY = "TRACED_STANDIN_READY"
_counter = itertools.count(1)
_live: set[Session] = set()  # sessions whose tracefs instance exists (torn down on SIGTERM)
_OOM_RE = re.compile(r"pid=(\d+) comm=(.*) oom_score_adj=(-?\d+)\s*$")
SEQ = 1  # trusted_packet_sequence_id of everything we write


def _w(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _r(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def _snapshot_skew() -> int | None:
    """TRACED_STANDIN_SNAPSHOT_SKEW_NS: tests make the trace's clock snapshot wrong by this
    much (BOOTTIME read that late: traced preempted between its clock reads, which a busy
    phone does) and leave it the trace's only one."""
    v = os.environ.get("TRACED_STANDIN_SNAPSHOT_SKEW_NS")
    return int(v) if v else None


def _clock_packet(skew: int = 0) -> pb.TracePacket:
    pkt = pb.TracePacket(trusted_packet_sequence_id=SEQ)
    snap = pkt.clock_snapshot
    # Read back to back (mono before and after boot, averaged) so the pair is as close
    # as traced's C++ snapshot; protobuf work in between would skew it by microseconds.
    # Python is slower between reads than C++, so a preemption lands between them more
    # often: the tightest of a few tries stands for traced's one.
    g = time.clock_gettime_ns
    tries = []
    for _ in range(20):
        m1, boot, m2 = g(time.CLOCK_MONOTONIC), g(time.CLOCK_BOOTTIME), g(time.CLOCK_MONOTONIC)
        tries.append((m2 - m1, m1, boot, m2))
        if m2 - m1 < 2000:
            break
    _, m1, boot, m2 = min(tries)
    real = g(time.CLOCK_REALTIME)
    for cid, ts in ((6, boot + skew), (3, (m1 + m2) // 2), (1, real)):
        snap.clocks.add(clock_id=cid, timestamp=ts)
    snap.primary_trace_clock = pb.BUILTIN_CLOCK_BOOTTIME
    pkt.timestamp = snap.clocks[0].timestamp
    return pkt


def _process_tree() -> pb.TracePacket:
    pkt = pb.TracePacket(trusted_packet_sequence_id=SEQ)
    pkt.timestamp = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    tree = pkt.process_tree
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            status = _r(f"/proc/{d}/status")
            cmd = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue  # exited meanwhile
        f = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        args = [a.decode(errors="replace") for a in cmd if a]
        p = tree.processes.add(pid=int(d), ppid=int(f.get("PPid", "0")))
        p.uid = int(f.get("Uid", "0").split()[0])
        if args:
            p.cmdline.extend(args)
        else:
            p.cmdline.append(f.get("Name", "").strip())
            p.cmdline_is_comm = True
    return pkt


class Session:
    """One tracing session: a tracefs instance armed from a TraceConfig."""

    def __init__(self, cfg: pb.TraceConfig):
        self.cfg = cfg
        self.instance = f"{TRACEFS}/instances/perfetto-standin-{os.getpid()}-{next(_counter)}"
        self.packets: list[pb.TracePacket] = []
        self.events: list[str] = []
        self.unknown: list[str] = []
        self.scan = False
        for ds in cfg.data_sources:
            c = ds.config
            if c.name == "linux.ftrace":
                self.events += list(c.ftrace_config.ftrace_events)
                self.buffer_kb = c.ftrace_config.buffer_size_kb or 2048
            elif c.name == "linux.process_stats":
                self.scan = c.process_stats_config.scan_all_processes_on_start

    def start(self) -> None:
        if not os.path.isdir(f"{TRACEFS}/instances"):
            raise RuntimeError(f"no tracefs at {TRACEFS} (mount -t tracefs nodev {TRACEFS})")
        os.mkdir(self.instance)
        _live.add(self)
        i = self.instance
        _w(f"{i}/tracing_on", "0")
        _w(f"{i}/trace_clock", "boot")
        kb = min(max(self.buffer_kb, 512), 65536)
        # Tests force losses with a tiny kernel buffer (we drain only at stop).
        kb = int(os.environ.get("TRACED_STANDIN_KERNEL_BUFFER_KB") or kb)
        _w(f"{i}/buffer_size_kb", str(kb))
        _w(f"{i}/options/overwrite", "0")
        for ev in self.events:
            path = f"{i}/events/{ev}/enable"
            if "/" in ev and os.path.exists(path):
                _w(path, "1")
            else:
                self.unknown.append(ev)
        echo = pb.TracePacket(trusted_packet_sequence_id=SEQ)
        echo.trace_config.CopyFrom(self.cfg)
        self.packets += [echo, _clock_packet(_snapshot_skew() or 0)]
        if self.scan:
            self.packets.append(_process_tree())
        _w(f"{i}/tracing_on", "1")
        # Like traced: the moment every data source acked its start, in the trace clock.
        # Writes before it were not recorded (perfetto --background returns before this).
        started = pb.TracePacket(trusted_packet_sequence_id=SEQ)
        started.timestamp = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        started.service_event.all_data_sources_started = True
        self.packets.append(started)

    def stop(self) -> bytes:
        i = self.instance
        _w(f"{i}/tracing_on", "0")
        end_clock = _clock_packet()
        text = _r(f"{i}/trace")
        _w(f"{i}/options/raw", "1")
        raw = _r(f"{i}/trace")
        _w(f"{i}/options/raw", "0")
        stats = "".join(f"== {c}\n{_r(f'{i}/per_cpu/{c}/stats')}"
                        for c in sorted(os.listdir(f"{i}/per_cpu")))  # fmt: skip
        self.teardown()
        events, header = parse_trace(text)
        events, _ = with_ns_timestamps(events, parse_raw(raw))
        self._bundles(events, header.lost_by_cpu)
        if _snapshot_skew() is None:  # a skewed snapshot stays the only one
            self.packets.append(end_clock)
        st = pb.TracePacket(trusted_packet_sequence_id=SEQ)
        st.ftrace_stats.phase = pb.FtraceStats.END_OF_TRACE
        st.ftrace_stats.unknown_ftrace_events.extend(self.unknown)
        for cpu, s in sorted(parse_cpu_stats(stats).items()):
            st.ftrace_stats.cpu_stats.add(
                cpu=cpu, entries=s.get("entries", 0), overrun=s.get("overrun", 0),
                commit_overrun=s.get("commit_overrun", 0),
                dropped_events=s.get("dropped_events", 0),
            )  # fmt: skip
        self.packets.append(st)
        trace = pb.Trace()
        trace.packet.extend(self.packets)
        return trace.SerializeToString()

    def _bundles(self, events, lost_by_cpu: dict[int, int]) -> None:
        oom = events[events["event"].astype(str) == "oom_score_adj_update"]
        for cpu, g in oom.groupby("cpu", sort=True):
            for start in range(0, len(g), 2000):
                pkt = pb.TracePacket(trusted_packet_sequence_id=SEQ)
                b = pkt.ftrace_events
                b.cpu = int(cpu)
                if start == 0 and lost_by_cpu.get(int(cpu)):
                    b.lost_events = True
                chunk = g.iloc[start : start + 2000]
                for ts, tid, fields in zip(chunk["ts_ns"], chunk["pid"], chunk["fields"],
                                           strict=True):  # fmt: skip
                    m = _OOM_RE.search(str(fields))
                    if not m:
                        continue
                    ev = b.event.add(timestamp=int(ts), pid=int(tid))
                    u = ev.oom_score_adj_update
                    u.pid, u.comm, u.oom_score_adj = int(m[1]), m[2], int(m[3])
                self.packets.append(pkt)

    def teardown(self) -> None:
        _live.discard(self)
        i = self.instance
        if not os.path.isdir(i):
            return
        try:
            _w(f"{i}/tracing_on", "0")
            _w(f"{i}/events/enable", "0")
        except OSError:
            pass
        for _ in range(20):
            try:
                os.rmdir(i)
                return
            except OSError:
                time.sleep(0.05)


def _reply(conn: socket.socket, obj: dict, payload: bytes = b"") -> None:
    conn.sendall(json.dumps(obj).encode() + b"\n" + payload)


def serve_client(conn: socket.socket) -> None:
    session: Session | None = None
    f = conn.makefile("rb")
    try:
        for line in f:
            req = json.loads(line)
            if req.get("op") == "start" and session is None:
                try:
                    cfg = text_format.Parse(req.get("config", ""), pb.TraceConfig())
                except text_format.ParseError as e:
                    _reply(conn, {"ok": False, "error": f"The trace config is invalid: {e}"})
                    return
                if not cfg.buffers:
                    _reply(conn, {"ok": False, "error": "Invalid config: no buffers"})
                    return
                session = Session(cfg)
                try:
                    session.start()
                except OSError as e:
                    session.teardown()
                    session = None
                    _reply(conn, {"ok": False, "error": f"traced_probes: {e}"})
                    return
                _reply(conn, {"ok": True, "duration_ms": cfg.duration_ms})
            elif req.get("op") == "stop" and session is not None:
                data = session.stop()
                session = None
                _reply(conn, {"ok": True, "size": len(data)}, data)
                return
            else:
                _reply(conn, {"ok": False, "error": f"unexpected request {req.get('op')!r}"})
                return
    except (OSError, ValueError):
        pass
    finally:
        if session is not None:
            session.teardown()
        conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--socket", required=True, help="consumer socket path to listen on")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("traced stand-in: needs root (tracefs)", file=sys.stderr)
        return 1

    def stop(*_):  # restore tracefs: no instance of ours may outlive the daemon
        for session in list(_live):
            session.teardown()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(args.socket)
    os.chmod(args.socket, 0o666)  # like /dev/socket/traced_consumer
    srv.listen(16)
    print(f"{READY} {args.socket}", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve_client, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
