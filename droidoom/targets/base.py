"""The Target interface: where the helper runs (this Linux host, a phone over adb).

The runner only ever talks to a `Target`; everything platform-specific (how to run a
shell script, move files, stream output, what facts to gather) lives behind it.
"""

from __future__ import annotations

import queue
import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from ..errors import TransientTargetError
from .phone_facts import PhoneFacts

#: What a find_files() pattern may hold: a file name glob, no path, nothing the shell
#: would expand beyond the glob itself.
_FILE_GLOB = re.compile(r"[A-Za-z0-9._*?\-]+")


@dataclass(frozen=True)
class CommandResult:
    """Outcome of a finished shell script on the target."""

    exit_code: int
    stdout: str
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class TargetFacts:
    """What we know about a target; recorded verbatim in run.json["target"]."""

    device: str  # stable id: adb serial, or "local:<hostname>"
    transport: str  # "local" | "adb" | "qemu": recorded, never branched on (see Target)
    model: str  # ro.product.model, or the host's DMI product / "Linux host"
    abi: str  # Android ABI name of the helper to run (arm64-v8a, x86_64, ...)
    kernel_release: str  # uname -r
    cpus: int  # CPUs online
    root: bool  # can the helper run as root (uid 0 or a working su)
    pid_max: int  # /proc/sys/kernel/pid_max
    threads_max: int  # /proc/sys/kernel/threads-max
    fingerprint: str = ""  # ro.build.fingerprint (phones) or /etc/os-release PRETTY_NAME
    sdk: int | None = None  # ro.build.version.sdk
    extra: dict[str, Any] = field(default_factory=dict)  # everything else worth keeping
    phone: PhoneFacts | None = None  # what only phones (adb devices) report

    def to_json(self) -> dict[str, Any]:
        """run.json["target"]: the fields, with the phone facts flat in "extra" (first,
        under their field names) as run.json has always had them."""
        out = asdict(self)
        phone = out.pop("phone")
        if phone is not None:
            out["extra"] = {**phone, **out["extra"]}
        return out


class Process(ABC):
    """A long-running script on the target whose stdout is read line by line.

    Its stdin stays open while the process lives: the helper treats stdin EOF as
    "the host is gone" and tears down, so `close()` is the polite stop.
    """

    def __init__(self) -> None:
        #: the last lines the script wrote to stderr (what a failing wrapper said), where
        #: the transport keeps stderr apart; empty where it cannot
        self.stderr_tail: list[str] = []

    @abstractmethod
    def lines(self, timeout: float) -> Iterator[str]:
        """Yield stdout lines as they arrive; raise TransientTargetError if no line
        arrives within `timeout` seconds or the connection drops."""

    @abstractmethod
    def close(self, grace: float = 5.0) -> int | None:
        """Stop the process (stdin EOF, then a signal after `grace` s); return its exit
        code if known."""

    @property
    @abstractmethod
    def returncode(self) -> int | None:
        """Exit code once finished, else None."""


class QueuedProcess(Process):
    """A Process whose stdout a reader thread puts on `self._q`: str lines, an exception
    (the connection broke) or None (end of output). Subclasses say what a stall and a
    break mean on their transport."""

    def __init__(self) -> None:
        super().__init__()
        self._q: queue.Queue[str | BaseException | None] = queue.Queue()

    def _stalled(self, timeout: float) -> str:
        return f"the helper printed nothing for {timeout:.0f} s; it may be stuck"

    def _broken(self, exc: BaseException) -> str:
        return f"output stream broke ({exc or type(exc).__name__})"

    def _ended(self) -> None:
        """Called once the output has ended (e.g. to reap the process)."""

    def lines(self, timeout: float) -> Iterator[str]:
        while True:
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                raise TransientTargetError(self._stalled(timeout)) from None
            if item is None:
                self._ended()
                return
            if isinstance(item, BaseException):
                raise TransientTargetError(self._broken(item))
            yield item


class Target(ABC):
    """Somewhere the helper can run. Subclasses: LocalTarget, AdbTarget, VmTarget.

    What differs between them is asked through the capabilities below (`is_remote`,
    `lock_home`, `keep_workdir`, `reach_again`, ...), never by testing a transport
    name: code outside `droidoom.targets` does not know which transports exist.
    """

    #: short human name used in messages ("local:vm", "emulator-5554")
    name: str

    #: The target's files are not on this host's filesystem (a phone, a VM): reaching
    #: them takes a link that can drop, so a stream that ends without its last line
    #: means the link went, and leftovers there are not this user's private files.
    is_remote: bool = True

    #: The target lives only as long as this run's link to it (a VM guest): nobody else's
    #: run shares it, and its lock and files end with it (nothing stays stale there).
    ephemeral: bool = False

    @abstractmethod
    def facts(self) -> TargetFacts:
        """Gather (and cache) facts about the target, in as few round trips as possible."""

    @abstractmethod
    def sh(self, script: str, *, timeout: float = 60.0, root: bool = False) -> CommandResult:
        """Run a /bin/sh script, wait for it, return exit code and output. Values put
        into `script` must already be quoted with shlex.quote."""

    @abstractmethod
    def spawn(self, script: str, *, root: bool = False) -> Process:
        """Start a /bin/sh script whose stdout the caller streams."""

    @abstractmethod
    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        """Copy a host file to the target."""

    @abstractmethod
    def pull(self, remote: str, local: Path) -> None:
        """Copy a target file to the host."""

    @abstractmethod
    def workdir(self) -> str:
        """A writable, executable directory on the target for droidoom's files."""

    @abstractmethod
    def find_files(self, pattern: str) -> list[str]:
        """Sorted paths of the files matching `pattern` (a file name glob such as
        "records-*.bin", checked by `file_glob`) in the directories droidoom uses on the
        target; `droidoom recover` looks for what a cut-short run left with it."""

    def read_bytes(self, remote: str) -> bytes | None:
        """A target file's bytes if the host can read it where it is, else None (then
        `pull` copies it)."""
        return None

    def claim_run(self, run_id: str) -> None:  # noqa: B027 - optional hook
        """Record that run `run_id` may create files in the workdir (so `clean` can
        remove exactly those); a no-op where nothing is cleaned."""

    #: True where the records file dies with the target (a VM's RAM): the runner then
    #: keeps a copy on the host as it grows (`stream_records`).
    streams_records: bool = False

    def stream_records(self, remote: str, sink: Callable[[int, bytes], None]) -> None:  # noqa: B027
        """Have the next spawned process stream file `remote` to `sink(offset, bytes)` as
        it grows; a no-op where the file outlives the target's end."""

    def expect_run(self, seconds: float) -> None:  # noqa: B027 - optional hook
        """The next run may take `seconds`: a target with a life limit (a VM's watchdog)
        allows that much from now; others have none."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""

    # --- capabilities ---------------------------------------------------------------

    def lock_home(self) -> str:
        """The directory the device lock (devlock) lives in: the workdir on the device,
        so that every host reaching it meets the same lock."""
        return self.workdir()

    def lock_key(self) -> str:
        """The device's own stable id (ro.serialno), the same through every host and
        transport that reach it; it names the lock. "" when it has none."""
        return self.sh("getprop ro.serialno 2>/dev/null", timeout=30).stdout.strip()

    def keep_workdir(self) -> None:  # noqa: B027 - optional hook
        """Let the workdir outlive close(): it holds records not yet saved on the host.
        A no-op where the workdir is not removed at close (a device keeps its files)."""

    def reach_again(self) -> list[str] | None:
        """The `droidoom` options that reach this target from a later command (e.g.
        `recover`), or None when it cannot be reached again (it ends with this process)."""
        return None

    def recover_hint(self, run_dir: Path) -> str | None:
        """The `droidoom recover` command (real path filled in) that fetches what a
        cut-short run left on this target; None when nothing outlives the run."""
        return recover_command(self.reach_again(), run_dir)

    def shell_hint(self, command: str) -> str:
        """`command` as the user runs it on the target from a terminal on this host."""
        return command

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        """`with target:` closes it, however the block ends."""
        self.close()

    # --- shared logic -------------------------------------------------------------

    @abstractmethod
    def install_helper(self) -> str:
        """Make sure the helper for this target's ABI is on the target, executable;
        return its path there. Sets `helper_pushed` (False when a copy with the same
        SHA-256 was already in place)."""

    helper_pushed: bool = False


def recover_command(reach: Sequence[str] | None, run_dir: Path) -> str | None:
    """`droidoom recover OPTIONS RUN_DIR` (quoted to paste), or None without `reach`."""
    if reach is None:
        return None
    return shlex.join(["droidoom", "recover", *reach, str(run_dir)])


def file_glob(pattern: str) -> str:
    """`pattern` if it is a plain file name glob, else ValueError (it goes into a shell
    command unquoted, so that the shell expands it)."""
    if not _FILE_GLOB.fullmatch(pattern):
        raise ValueError(f"not a file name glob: {pattern!r}")
    return pattern


def find_files_sh(target: Target, dirs: Iterable[str], pattern: str) -> list[str]:
    """find_files() for targets reached through a shell: one `sh` round trip."""
    globs = " ".join(f"{shlex.quote(d)}/{file_glob(pattern)}" for d in dirs)
    res = target.sh(f'for f in {globs}; do [ -f "$f" ] && echo "$f"; done; true', timeout=60)
    return sorted(set(res.stdout.split()))
