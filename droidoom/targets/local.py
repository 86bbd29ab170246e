"""LocalTarget: this Linux host. Same kernel interface as a phone, real numbers."""

from __future__ import annotations

import errno
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path

from ..errors import PermanentTargetError, TransientTargetError
from ..native import abi_for_machine
from ..private import WORK_PREFIX, private_dir
from .base import CommandResult, Process, QueuedProcess, Target, TargetFacts, file_glob


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def _copy(src: str | Path, dst: str | Path) -> None:
    """shutil.copyfile, but a full disk names the file it could not write (shutil
    names the source file in a failed sendfile, or none at all)."""
    try:
        shutil.copyfile(src, dst)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OSError(e.errno, e.strerror, str(dst)) from e
        raise


class LocalProcess(QueuedProcess):
    """A child /bin/sh in its own session, stdout pumped into a queue by a thread."""

    def __init__(self, script: str, env: dict[str, str] | None = None):
        super().__init__()
        self._popen = subprocess.Popen(
            ["/bin/sh", "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            # Own session: a Ctrl-C in the terminal reaches the host only, which then
            # stops the helper in order (stdin EOF) instead of racing it.
            start_new_session=True,
            env=env,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        assert self._popen.stdout is not None
        for line in self._popen.stdout:
            self._q.put(line)
        self._q.put(None)

    def _pump_err(self) -> None:
        assert self._popen.stderr is not None
        for line in self._popen.stderr:
            self.stderr_tail = (self.stderr_tail + [line.rstrip()])[-20:]

    def _ended(self) -> None:
        self._popen.wait()

    def close(self, grace: float = 5.0) -> int | None:
        p = self._popen
        if p.poll() is None and p.stdin and not p.stdin.closed:
            try:
                p.stdin.close()  # the helper's stdin watch: tear down and exit
            except OSError:
                pass
        try:
            return p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # p.pid is the process we started (pid > 0); signal only it.
        if p.pid > 0:
            p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()


class LocalTarget(Target):
    """Runs the helper on this host as the current user."""

    is_remote = False

    def __init__(self, workdir: str | None = None):
        self.name = f"local:{platform.node() or 'localhost'}"
        self._workdir = workdir
        #: removes the temporary workdir at close() or, failing that, when collected
        self._tmp: weakref.finalize[[str, bool], LocalTarget] | None = None
        self._facts: TargetFacts | None = None

    def facts(self) -> TargetFacts:
        if self._facts is None:
            uname = platform.uname()
            model = _read("/sys/devices/virtual/dmi/id/product_name") or "Linux host"
            os_name = ""
            for line in _read("/etc/os-release").splitlines():
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip('"')
            governors = sorted(
                {
                    _read(str(p))
                    for p in Path("/sys/devices/system/cpu").glob("cpu*/cpufreq/scaling_governor")
                }
                - {""}
            )
            self._facts = TargetFacts(
                device=self.name,
                transport="local",
                model=model,
                abi=abi_for_machine(uname.machine),
                kernel_release=uname.release,
                cpus=len(os.sched_getaffinity(0)),
                root=os.geteuid() == 0,
                pid_max=int(_read("/proc/sys/kernel/pid_max", "0")),
                threads_max=int(_read("/proc/sys/kernel/threads-max", "0")),
                fingerprint=os_name,
                extra={
                    "kernel_version": uname.version,
                    "machine": uname.machine,
                    "cpu_governors": governors,
                    "oom_score_adj": int(_read("/proc/self/oom_score_adj", "0")),
                    "perf": shutil.which("perf") is not None,
                },
            )
        return self._facts

    def sh(self, script: str, *, timeout: float = 60.0, root: bool = False) -> CommandResult:
        self._need_root(root)
        try:
            p = subprocess.run(
                ["/bin/sh", "-c", script], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as e:
            raise TransientTargetError(
                f"command timed out after {timeout:.0f} s: {script[:80]}"
            ) from e
        return CommandResult(p.returncode, p.stdout, p.stderr)

    def spawn(self, script: str, *, root: bool = False) -> Process:
        self._need_root(root)
        return LocalProcess(script)

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        if Path(local).resolve() != Path(remote).resolve():
            _copy(local, remote)
        os.chmod(remote, mode)

    def pull(self, remote: str, local: Path) -> None:
        try:
            _copy(remote, local)
        except FileNotFoundError:  # as AdbTarget says it: callers handle a missing file
            raise PermanentTargetError(f"{self.name}: {remote} does not exist") from None

    def read_bytes(self, remote: str) -> bytes:
        """The file read in place: no copy (into a TMPDIR that may be full)."""
        return Path(remote).read_bytes()

    def workdir(self) -> str:
        if self._workdir is None:
            # In the user's private directory, never the shared temp directory: records
            # and plans there are what a later run (or recover --local) trusts.
            self._workdir = tempfile.mkdtemp(prefix=WORK_PREFIX, dir=private_dir())
            self._tmp = weakref.finalize(self, shutil.rmtree, self._workdir, True)
        os.makedirs(self._workdir, exist_ok=True)
        return self._workdir

    def find_files(self, pattern: str) -> list[str]:
        """Files matching `pattern` in this target's workdir (none before it has one:
        `recover --local` finds earlier runs' leftovers through droidoom.run.leftovers)."""
        if self._workdir is None:
            return []
        return sorted(str(p) for p in Path(self._workdir).glob(file_glob(pattern)) if p.is_file())

    def lock_home(self) -> str:
        """The user's private directory (UsageError if it is not private): never the
        shared temp directory, where anyone could plant a lock."""
        return str(private_dir())

    def lock_key(self) -> str:
        """"": one host, one lock."""
        return ""

    def reach_again(self) -> list[str]:
        return ["--local"]

    def keep_workdir(self) -> None:
        """Leave the workdir in place at close(): it holds records `recover --local`
        still needs (e.g. the output disk was full)."""
        if self._tmp is not None:
            self._tmp.detach()  # else it still deletes the dir when collected
            self._tmp = None

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp()
            self._tmp = None
            self._workdir = None

    def install_helper(self) -> str:
        """Run the shipped binary in place when it is executable, else an executable
        copy in workdir() (e.g. a package installed without exec bits)."""
        from ..native import binary_path

        path = binary_path(self.facts().abi)
        self.helper_pushed = not os.access(path, os.X_OK)
        if not self.helper_pushed:
            return str(path)
        copy = f"{self.workdir()}/droidoom-helper"
        self.push(path, copy, mode=0o755)
        return copy

    def _need_root(self, root: bool) -> None:
        if root and os.geteuid() != 0:
            raise PermanentTargetError(
                "this needs root on the local host; run droidoom as root or drop the option"
            )
