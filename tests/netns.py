"""Lab hosts for farm tests: network namespaces, each with its own adb server and peers.

``LabHost`` is one "lab host": a network namespace (``ip netns``) joined to the root
namespace by a veth pair on a private /24 of 10.213.0.0/16 (traffic stays between the
namespaces created here), an adb server inside it listening on its veth address
(``adb -a nodaemon server``: all interfaces of *that* namespace), and loopback adbd
peers inside it on its own 127.0.0.1, ``adb connect``-ed by that server. The farm, in the
root namespace, reaches the server through the veth address only::

    with LabHost("a") as lab:
        peer = lab.add_peer({"ro.product.model": "Pixel"})   # serial 127.0.0.1:PORT
        lab.address, lab.port                                # what the farm connects to

Teardown (also on failure): peers stopped, server killed, then the namespace (and with
it the veth pair) deleted. ``ip netns exec`` execs its command, so every pid we hold is
the adb server's / peer's own: we kill only those.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess

from adb_env import AdbServer, IsolatedAdbClient, PeerProcess

IP = shutil.which("ip") or "/usr/sbin/ip"
SUBNETS = ipaddress.ip_network("10.213.0.0/16")


def unavailable() -> str | None:
    """Why network-namespace tests cannot run here (None = they can)."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    if not os.path.exists(IP):
        return "needs iproute2 (`ip`)"
    probe = f"ddfarm-probe-{os.getpid()}"
    r = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` fails here: {r.stderr.strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = [IP, "netns", "exec", ns, IP, *args] if ns else [IP, *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = ip("-4", "-o", "addr", "show").stdout + ip("-4", "route", "show").stdout
    nets = []
    for word in out.split():
        with contextlib.suppress(ValueError):
            if word[0].isdigit():
                nets.append(ipaddress.ip_network(word, strict=False))
    return nets


def pick_subnet(taken: set[int]) -> ipaddress.IPv4Network:
    """A /24 of 10.213.0.0/16 that no address or route on this host overlaps."""
    used = _used_networks()
    start = os.getpid() % 250
    for i in range(256):
        k = (start + i) % 256
        net = ipaddress.ip_network(f"10.213.{k}.0/24")
        if k not in taken and not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /24 in 10.213.0.0/16")


class NsAdbServer(AdbServer):
    """An adb server inside a namespace, listening on all of its addresses (`-a`)."""

    def __init__(self, ns: str, address: str, adb: str | None = None):
        super().__init__(adb)
        self.ns = ns
        self.address = address

    def _server_argv(self, port: int) -> list[str]:
        adb, *rest = super()._server_argv(port)
        return [IP, "netns", "exec", self.ns, adb, "-a", *rest]

    def client(self, socket_timeout: float | None = None) -> IsolatedAdbClient:
        return IsolatedAdbClient(self.address, self.port, socket_timeout=socket_timeout)

    def run(self, *args: str, **kwargs):
        return super().run("-H", self.address, *args, **kwargs)

    def _stop_proc(self, graceful: bool = True) -> None:
        if self.proc is None:
            return
        if graceful and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.client(socket_timeout=2).server_kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(3)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class LabHost:
    """A network namespace with a veth link, an adb server and loopback peers."""

    taken: set[int] = set()  # /24s in use by this process

    def __init__(self, tag: str, adb: str | None = None):
        pid = os.getpid()
        self.ns = f"ddfarm-{pid}-{tag}"
        self.veth_host = f"ddf{pid % 10**7}{tag}h"[:15]
        self.veth_ns = f"ddf{pid % 10**7}{tag}n"[:15]
        self.adb = adb
        self.net: ipaddress.IPv4Network | None = None
        self.server: NsAdbServer | None = None
        self.peers: list[PeerProcess] = []
        self._created = False

    @property
    def address(self) -> str:
        """The namespace's veth address, where its adb server listens."""
        return str(self.net[2])

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def server_address(self) -> str:
        return f"{self.address}:{self.port}"

    def start(self) -> LabHost:
        self.net = pick_subnet(self.taken)
        self.taken.add(self.net.network_address.packed[2])
        host_ip, ns_ip = f"{self.net[1]}/24", f"{self.net[2]}/24"
        try:
            ip("netns", "add", self.ns)
            self._created = True
            ip("link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ns)
            ip("link", "set", self.veth_ns, "netns", self.ns)
            ip("addr", "add", host_ip, "dev", self.veth_host)
            ip("link", "set", self.veth_host, "up")
            ip("addr", "add", ns_ip, "dev", self.veth_ns, ns=self.ns)
            ip("link", "set", self.veth_ns, "up", ns=self.ns)
            ip("link", "set", "lo", "up", ns=self.ns)
            self.server = NsAdbServer(self.ns, self.address, self.adb).start()
        except BaseException:
            self.close()
            raise
        return self

    def add_peer(self, props=None, *, port: int = 0, **kw) -> PeerProcess:
        """Start a peer inside the namespace on its 127.0.0.1 and connect the server to it."""
        peer = PeerProcess(props, host="127.0.0.1", port=port, **kw)
        peer.argv = [IP, "netns", "exec", self.ns, *peer.argv]
        self.peers.append(peer)
        peer.start()
        self.server.connect(peer)
        return peer

    def pids(self) -> set[int]:
        """Pids of every process running in the namespace."""
        out = ip("netns", "pids", self.ns, check=False).stdout
        return {int(p) for p in out.split() if p.isdigit()}

    def close(self) -> None:
        """Stop peers and the server, delete the namespace and the veth pair."""
        for peer in reversed(self.peers):
            with contextlib.suppress(Exception):
                peer.stop()
        if self.server is not None:
            self.server.kill()
        if self._created:
            ip("netns", "del", self.ns, check=False)
            self._created = False
        if ip("link", "show", self.veth_host, check=False).returncode == 0:
            ip("link", "del", self.veth_host, check=False)
        if self.net is not None:
            self.taken.discard(self.net.network_address.packed[2])

    def __enter__(self) -> LabHost:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
