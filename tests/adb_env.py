"""Isolated adb servers and loopback adbd peers for tests.

``AdbServer`` runs a real adb server (``adb -P PORT nodaemon server``, so this process owns
its pid) on a free private port with a temporary HOME and an environment that keeps it off
the real network and USB (ADB_MDNS=0, ADB_LIBUSB=0, ADB_EMU=0).  ``PeerProcess`` runs
``tests/adbd_peer.py`` in a child process.  Both get PR_SET_PDEATHSIG=SIGKILL, so they die
with the test process even if it is killed (strictly: with the thread that started them, so
start them from a long-lived thread such as pytest's main thread).

    with AdbServer() as server, PeerProcess({"ro.product.model": "Pixel"}) as peer:
        device = server.connect(peer)          # adbutils.AdbDevice, state "device"
        device.shell("echo hi")

``server.client()`` never starts a default server: plain ``adbutils.AdbClient`` runs
``adb start-server`` (port 5037, mDNS on) when it cannot reach its server.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import adbutils
from adbd_peer import PeerSubprocess, pdeathsig_preexec
from adbutils.errors import AdbError, AdbTimeout

from droidoom.targets.adbutils_seam import NoSpawnConnection

DEBIAN_ADB = "/usr/bin/adb"
BUNDLED_ADB = os.path.join(os.path.dirname(adbutils.__file__), "binaries", "adb")
_RESERVED_PORTS = {5037, *range(5554, 5586)}  # default server, emulator console/adb ports
_SCRUBBED_ENV = (
    "ANDROID_SERIAL",
    "ANDROID_ADB_SERVER_ADDRESS",
    "ANDROID_ADB_SERVER_HOST",
    "ADB_SERVER_SOCKET",
    "ADB_VENDOR_KEYS",
    "ADB_TRACE",
    "ANDROID_SDK_HOME",
    "ANDROID_USER_HOME",
    "ANDROID_PREFS_ROOT",
    "ADBUTILS_ADB_PATH",
)


def available_adb_binaries() -> list[str]:
    """The adb binaries present here: Debian's (v29) and the one bundled with adbutils (v36)."""
    found = []
    for path in (DEBIAN_ADB, BUNDLED_ADB):
        if os.path.isfile(path) and os.access(path, os.X_OK):
            real = os.path.realpath(path)
            if real not in (os.path.realpath(p) for p in found):
                found.append(path)
    return found


def adb_binary_id(path: str) -> str:
    """Short pytest id for an adb binary path."""
    return "adb-debian" if path == DEBIAN_ADB else "adb-bundled" if path == BUNDLED_ADB else path


def default_adb_binary() -> str:
    """``$DROIDOOM_TEST_ADB`` if set, else Debian's adb, else the bundled one."""
    env = os.environ.get("DROIDOOM_TEST_ADB")
    if env:
        return env
    found = available_adb_binaries()
    if not found:
        raise RuntimeError("no adb binary found")
    return found[0]


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port, never 5037 or an emulator port (5554-5585)."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _RESERVED_PORTS:
            return port


class IsolatedAdbClient(adbutils.AdbClient):
    """``adbutils.AdbClient`` that fails instead of starting a default adb server."""

    def __init__(self, host: str, port: int, socket_timeout: float | None = None):
        super().__init__(host=host, port=port, socket_timeout=socket_timeout)
        self._timeout = socket_timeout

    def make_connection(self, timeout: float | None = None) -> adbutils.AdbConnection:
        timeout = timeout or self._timeout
        try:
            conn = NoSpawnConnection(self.host, self.port)  # no `adb start-server`
        except TimeoutError as e:
            raise AdbTimeout("connect to adb server timeout") from e
        if timeout:
            conn.conn.settimeout(timeout)
        return conn


class AdbServer:
    """A private adb server: ``.port``, ``.env``, ``.adb``, ``.home``, ``.client()``."""

    def __init__(self, adb: str | None = None, *, port: int | None = None):
        self.adb = adb or default_adb_binary()
        self.port = port
        self.home: str | None = None
        self.env: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None
        self.log_path: str | None = None

    # lifecycle
    def start(self, timeout: float = 15.0) -> AdbServer:
        self.home = tempfile.mkdtemp(prefix="adb-home-")
        self.log_path = os.path.join(self.home, "adb-server.log")
        attempts = 1 if self.port else 3  # a random port may be taken meanwhile: retry
        for _ in range(attempts):
            port = self.port or free_port()
            self.env = self._make_env(port)
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen(
                    self._server_argv(port),
                    env=self.env,
                    cwd=self.home,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=logf,
                    start_new_session=True,
                    preexec_fn=pdeathsig_preexec,
                )
            if self._wait_ready(port, timeout) and self.proc.poll() is None:
                self.port = port
                return self
            self._stop_proc(graceful=False)  # never host:kill a server that may not be ours
        log = self.log()
        self.kill()
        raise RuntimeError(f"adb server {self.adb} did not start ({attempts} attempts):\n{log}")

    #: where the server is reached; a subclass in a network namespace uses its address
    address = "127.0.0.1"

    def _server_argv(self, port: int) -> list[str]:
        return [self.adb, "-P", str(port), "nodaemon", "server"]

    def _make_env(self, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update(
            ANDROID_ADB_SERVER_PORT=str(port),
            HOME=self.home,
            TMPDIR=self.home,
            ADB_MDNS="0",
            ADB_LIBUSB="0",
            ADB_EMU="0",
        )
        return env

    def _wait_ready(self, port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:  # host:version by hand: adbutils leaks the socket when connect fails
                with socket.create_connection((self.address, port), timeout=2) as s:
                    s.sendall(b"000chost:version")
                    if s.recv(4) == b"OKAY":
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def _stop_proc(self, graceful: bool = True) -> None:
        if self.proc is None:
            return
        if graceful and self.proc.poll() is None and self.port:
            try:
                IsolatedAdbClient("127.0.0.1", self.port, socket_timeout=2).server_kill()
            except (AdbError, OSError):
                pass
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def kill(self) -> None:
        """``host:kill`` (adb kill-server), SIGKILL if still alive, remove the temp HOME."""
        self._stop_proc()
        if self.home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> AdbServer:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    # use
    def client(self, socket_timeout: float | None = None) -> IsolatedAdbClient:
        return IsolatedAdbClient("127.0.0.1", self.port, socket_timeout=socket_timeout)

    def run(self, *args: str, timeout: float = 60, check: bool = False, **kwargs):
        """Run the adb client binary against this server (``adb -P PORT *args``)."""
        if not self.alive:  # the client would silently start a daemon server on our port
            raise RuntimeError("adb server is not running")
        kwargs.setdefault("capture_output", True)
        return subprocess.run(
            [self.adb, "-P", str(self.port), *args],
            env=self.env,
            timeout=timeout,
            check=check,
            stdin=kwargs.pop("stdin", None if "input" in kwargs else subprocess.DEVNULL),
            **kwargs,
        )

    def devices(self) -> dict[str, str]:
        """``{serial: state}`` as ``adb devices`` lists them."""
        return {info.serial: info.state for info in self.client().list()}

    def wait_for_state(self, serial: str, states, timeout: float = 10.0) -> str | None:
        """Poll until ``serial``'s state is in ``states`` (None = absent); return the state."""
        states = {states} if isinstance(states, str) or states is None else set(states)
        deadline = time.monotonic() + timeout
        state = "?"
        while True:
            state = self.devices().get(serial)
            if state in states or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if state not in states:
            raise TimeoutError(f"{serial} is {state!r}, wanted {states} after {timeout}s")
        return state

    def connect(self, target, timeout: float = 10.0) -> adbutils.AdbDevice:
        """``adb connect`` a peer (or ``"host:port"``), wait for state ``device``."""
        serial = target if isinstance(target, str) else target.serial
        deadline = time.monotonic() + timeout
        while True:
            answer = self.client().connect(serial, timeout=timeout)
            if "connected" in answer and "unable" not in answer and "failed" not in answer:
                break
            if time.monotonic() > deadline:
                raise AdbError(f"adb connect {serial}: {answer}")
            time.sleep(0.1)
        self.wait_for_state(serial, "device", max(0.5, deadline - time.monotonic()))
        return self.client().device(serial)

    def disconnect(self, target) -> None:
        serial = target if isinstance(target, str) else target.serial
        if self.alive:
            self.client().disconnect(serial)


class PeerProcess(PeerSubprocess):
    """``tests/adbd_peer.py`` in a child process; ``.serial`` is ``"127.0.0.1:PORT"``.

    ``PeerProcess(props, serial=, host=, port=0, features=, kill_grace=, verbose=)``;
    ``start()`` returns once the peer listens (also done by ``with``); ``kill()`` SIGKILLs it
    (unplug: its commands die through PR_SET_PDEATHSIG); ``stop()`` shuts it down cleanly
    (SIGTERM: running commands are killed) and removes its temp dir; ``log()`` is its stderr.
    """


#: uid/gid of Android's `shell` user (what `adb shell` runs as on a production phone).
SHELL_UID = 2000
#: adbd's supplementary groups for shell (packages/modules/adb daemon/main.cpp
#: drop_privileges): adb, log, input, inet, net_bt, net_bt_admin, sdcard_r, sdcard_rw,
#: net_bw_stats, readproc, uhid, ext_data_rw, ext_obb_rw, readtracefs (Android 14+).
SHELL_GROUPS = (1011, 1007, 1004, 3003, 3002, 3001, 1028, 1015, 3006, 3009, 3011, 1078, 1079,
                3012)  # fmt: skip
#: Files a user build's SELinux policy keeps from shell (generic `proc` label), masked in
#: the peer's mount namespace by a root-only file so reads fail with EACCES.
SELINUX_DENIED = ("/proc/sys/kernel/threads-max",)
#: This host's own su, which a user build does not have (masked like the above).
HOST_ONLY = ("/usr/bin/su", "/bin/su")


def system_python() -> str | None:
    """A python3 an unprivileged user may execute (the peer needs the stdlib only)."""
    for path in ("/usr/bin/python3", shutil.which("python3") or ""):
        if path and os.access(path, os.X_OK) and not path.startswith("/root/"):
            return path
    return None


#: The root daemon behind the peer's `su` stand-in (ShellUidPeer(grant_su=True)).
SUD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_tools", "_sud.py")

#: Runs as root in the peer's private mount namespace, then execs setpriv: masks what
#: SELinux denies shell, and (where this host's root has CAP_SYS_RESOURCE) does what init
#: does on a phone, `echo -1000 > oom_score_adj`, so every command inherits
#: oom_score_adj_min -1000 while adbd's children raise themselves to -950.
_SHELL_SETUP = r"""
mask=$1; py=$2; sud=$3; shift 3
for f in %(denied)s; do [ -e "$f" ] && mount --bind "$mask" "$f"; done
echo -1000 > /proc/self/oom_score_adj 2>/dev/null
if [ -n "$py" ]; then  # su grants: a root daemon that dies with the peer (this pid)
  DROIDOOM_PEER_SU_SOCKET="$(dirname "$mask")/su.sock"; export DROIDOOM_PEER_SU_SOCKET
  "$py" "$sud" "$DROIDOOM_PEER_SU_SOCKET" </dev/null &
  while [ ! -S "$DROIDOOM_PEER_SU_SOCKET" ]; do sleep 0.02; done
fi
exec "$@"
"""


class ShellUidPeer(PeerProcess):
    """A peer whose commands run like `adb shell` on a production phone: uid/gid 2000 with
    adbd's supplementary groups (``setpriv``, with ``--pdeathsig KILL`` since a uid change
    clears the death signal), in a private mount namespace where the reads a user build's
    SELinux denies shell fail (``SELINUX_DENIED``), and with init's oom_score_adj -1000
    above it where this host's root may set it (see ``phone_adj``). ``grant_su``: the
    peer's `su` stand-in grants root (a root daemon started before the uid drop serves
    it, as magiskd does), so `su 0 sh -c` / `su -c` really run commands as root.

    Runs the system python (the peer is stdlib-only; /root may be unreadable to ``uid``).
    """

    def __init__(self, props=None, *, uid: int = SHELL_UID, grant_su: bool = False, **kw):
        super().__init__(props, **kw)
        python = system_python()
        setpriv, unshare = shutil.which("setpriv"), shutil.which("unshare")
        if python is None or setpriv is None:
            raise RuntimeError("ShellUidPeer needs setpriv and a system python3")
        self.uid = uid
        # The checkout may live where `uid` cannot read (a fresh clone under a 0700 temp
        # dir): run a copy of the peer and its tool stand-ins from our own workdir.
        script = self.argv[1]
        code = os.path.join(self.workdir, "code")
        shutil.copytree(os.path.join(os.path.dirname(script), "peer_tools"),
                        os.path.join(code, "peer_tools"), dirs_exist_ok=True)  # fmt: skip
        shutil.copy(script, code)
        for root, dirs, files in os.walk(code):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o755)
        os.chmod(code, 0o755)

        #: whether SELINUX_DENIED reads fail (needs a private mount namespace)
        self.masked = private_mounts()
        ns = [unshare, "--mount", "--propagation", "private", "--"] if self.masked else []
        denied = (*SELINUX_DENIED, *HOST_ONLY) if self.masked else ()
        mask = os.path.join(self.workdir, "selinux-denied")
        with open(mask, "w", encoding="utf-8"):
            pass
        os.chmod(mask, 0o600)  # root-only: what shell gets from a denied read is EACCES
        groups = ",".join(str(g) for g in SHELL_GROUPS)
        self.argv = [
            *ns, "/bin/sh", "-c", _SHELL_SETUP % {"denied": " ".join(map(shlex.quote, denied))},
            "shell-setup", mask, python if grant_su else "", SUD,
            setpriv, f"--reuid={uid}", f"--regid={uid}", f"--groups={groups}",
            "--pdeathsig", "KILL", python, os.path.join(code, os.path.basename(script)),
            *self.argv[2:],
        ]  # fmt: skip
        for path in (self.workdir, os.path.join(self.workdir, "props.json")):
            os.chown(path, uid, uid)  # the peer reads its props, writes its getprop shim


def private_mounts() -> bool:
    """Whether this host lets root make a private mount namespace (CAP_SYS_ADMIN)."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        return False
    cmd = [unshare, "--mount", "--propagation", "private", "true"]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def phone_adj() -> bool:
    """Whether this host's root may do what init does on a phone (write -1000, which needs
    CAP_SYS_RESOURCE); only then does a ShellUidPeer reproduce a phone's adj values."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            caps = next(int(ln.split()[1], 16) for ln in f if ln.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return False
    return os.geteuid() == 0 and bool(caps >> 24 & 1)


#: Where the peer's "device" keeps droidoom's files (it serves this host's filesystem).
DEVICE_TMP = "/data/local/tmp"


def make_device_dir(uid: int | None = None) -> str:
    """A fresh directory under /data/local/tmp for one test's device-side files, so tests
    (and concurrent sessions) never share a helper, plan or records file."""
    os.makedirs(DEVICE_TMP, exist_ok=True)
    path = tempfile.mkdtemp(prefix="droidoom-test-", dir=DEVICE_TMP)
    if uid is not None:
        os.chown(path, uid, uid)
    os.chmod(path, 0o755)
    return path


def cli_env(server: AdbServer, device_dir: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for running `droidoom` against ``server`` only (private port, temp HOME,
    no mDNS); ``device_dir`` becomes DROIDOOM_DEVICE_WORKDIR. Wide console for tables."""
    env = dict(server.env, COLUMNS="200", **extra)
    if device_dir:
        env["DROIDOOM_DEVICE_WORKDIR"] = device_dir
    return env
