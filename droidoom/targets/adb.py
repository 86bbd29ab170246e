"""AdbTarget: a phone (or anything speaking adbd) through an adb server, via adbutils.

Round trips are the cost here, so facts (and the hashes of helpers already on the
device) come from one script, the helper push is skipped when its hash matches, and
every command runs over shell protocol v2, whose exit packet cannot be lost silently
(plain `shell:` returns whatever arrived when a device drops). Devices without shell
v2 (Android < 7) get a sentinel line carrying the exit code instead. The plumbing
(no-spawn client, errors, streamed process) is in adb_conn.py, and what it relies on
inside adbutils in adbutils_seam.py.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import replace
from pathlib import Path

from adbutils.errors import AdbTimeout

from .. import native
from ..errors import PermanentTargetError, TargetError, TransientTargetError
from .adb_conn import SENTINEL, AdbClient, AdbProcess, client, list_devices, translate, v1_command
from .adb_facts import facts_script, parse_facts
from .adb_server import AdbServer, reach_adb
from .adbutils_seam import WIRE_ERRORS, device_state, pull_missing, push_refused
from .base import CommandResult, Process, Target, TargetFacts, find_files_sh
from .phone_facts import PhoneFacts

__all__ = ["AdbClient", "AdbTarget", "client", "list_devices"]

#: `clean` for one directory: remove each plain file name its manifest lists (names with
#: a slash or a leading dot are skipped), keep `keep` matches listed, drop the manifest
#: once nothing listed is left.
_CLEAN_DIR = r"""
if [ -f %(m)s ]; then
  : > %(m)s.new
  while IFS= read -r n; do
    case "$n" in ""|*/*|.*) continue;; esac
    f=%(d)s/"$n"; [ -f "$f" ] || continue
    case "$n" in %(keep)s) echo "kept $f"; echo "$n" >> %(m)s.new; continue;; esac
    rm -f "$f" && echo "rm $f"
  done < %(m)s
  if [ -s %(m)s.new ]; then mv %(m)s.new %(m)s; else rm -f %(m)s.new %(m)s; fi
fi"""

#: Candidate working directories, best first: /data/local/tmp is writable and exec for
#: the shell user on every Android release; our own subdirectory keeps it tidy.
WORKDIRS = ("/data/local/tmp/droidoom", "/data/local/tmp")
#: Environment variable naming one device directory to use instead of WORKDIRS.
WORKDIR_ENV = "DROIDOOM_DEVICE_WORKDIR"
HELPER = "droidoom-helper"
#: The names one run may leave in its workdir (plan, records, capture files); claim_run()
#: lists them in MANIFEST before the run, and `clean` removes only what MANIFEST lists, so
#: a shared /data/local/tmp keeps everything else (another tool's perf-*.data included).
RUN_FILES = (
    "plan-{id}.txt", "records-{id}.bin", "ftrace-{id}.txt", "perf-{id}.data",
    "perf-{id}.data.old", "perf-{id}.txt", "perf-{id}.csv",
)  # fmt: skip
MANIFEST = ".droidoom-manifest"


class AdbTarget(Target):
    """A device behind an adb server, addressed by serial."""

    def __init__(
        self,
        serial: str,
        server: AdbServer | None = None,
        workdir: str | None = None,
        *,
        workdirs: tuple[str, ...] | None = None,
    ):
        self.serial = serial
        self.name = serial
        self.server = server or AdbServer.from_env()
        self._client = client(self.server)
        self._device = self._client.device(serial)
        # Most specific first: one workdir, the caller's list, the environment, defaults.
        env = os.environ.get(WORKDIR_ENV)
        self.workdirs = (
            (workdir,) if workdir else tuple(workdirs) if workdirs else (env,) if env else WORKDIRS
        )
        self._workdir: str | None = None
        self._facts: TargetFacts | None = None
        self._helper_hashes: dict[str, str] = {}
        try:  # one round trip that also proves the serial is attached and online
            self.features = set(self._device.get_features().split(","))
        except WIRE_ERRORS as e:
            raise self._error(e) from e
        self.shell_v2 = "shell_v2" in self.features

    # --- plumbing -----------------------------------------------------------------

    def _error(self, e: BaseException) -> TargetError:
        return translate(e, self.name, self.server)

    def why_ended(self, silent: bool = False) -> str:
        """One phrase on why a stream ended (or, `silent`, went quiet): server gone,
        device gone, or neither. (`droidoom doctor`'s checks are doctor.diagnose.)"""
        if not self.server.listening():
            return f"the adb server at {self.server} stopped (killed or restarting)"
        try:
            state = AdbClient(self.server, timeout=3).device(self.serial).get_state()
        except WIRE_ERRORS as e:
            gone = device_state(e)
            if gone not in ("offline", "gone"):
                return f"the adb server does not answer ({e})"
            state = gone
        if state in ("offline", "gone"):
            return f"the device disconnected (unplugged, or its link dropped; now {state})"
        if state != "device":
            return f"the device is {state}"
        if silent:
            return "the device is attached but silent (stalled, or the helper hung)"
        return "the shell stream was closed (adbd restarted?)"

    def _wrap_root(self, script: str, root: bool) -> str:
        if not root:
            return script
        phone = self.phone()
        if phone.uid == 0:
            return script
        if phone.su == "aosp":
            return f"su 0 sh -c {shlex.quote(script)}"
        if phone.su == "magisk":
            return f"su -c {shlex.quote(script)}"
        raise PermanentTargetError(
            f"{self.name}: this needs root and the device has none ({phone.adb_root}; "
            "no working su); use a userdebug/eng build (`adb root`) or drop the root-only option"
        )

    def sh(self, script: str, *, timeout: float = 60.0, root: bool = False) -> CommandResult:
        script = self._wrap_root(script, root)
        try:
            if self.shell_v2:
                r = self._device.shell2(script, timeout=timeout, v2=True)
                return CommandResult(r.returncode, r.stdout, r.stderr)
            out = self._device.shell(v1_command(script), timeout=timeout, encoding=None)
        except AdbTimeout as e:
            raise TransientTargetError(
                f"{self.name}: command timed out after {timeout:.0f} s: {script[:80]}"
            ) from e
        except WIRE_ERRORS as e:
            raise self._error(e) from e
        # v1 (Android < 7): stdout and stderr arrive merged; a missing sentinel means the
        # stream was cut (adbutils' own v1 fallback loses the code of scripts that `exit`).
        text = out.decode(errors="replace")
        head, sep, code = text.rpartition("\n" + SENTINEL)
        if not sep or not code.strip().isdigit():
            raise TransientTargetError(f"{self.name}: output cut short: {self.why_ended()}")
        return CommandResult(int(code.strip()), head)

    def spawn(self, script: str, *, root: bool = False) -> Process:
        script = self._wrap_root(script, root)
        if self.shell_v2:
            service = f"shell,v2,raw:{script}"
        else:  # v1: the exit code travels on a sentinel line of its own
            service = f"shell:{v1_command(script)}"
        try:
            conn = self._device.open_transport(timeout=None)
            conn.send_command(service)
            conn.check_okay()
            # The reader blocks for as long as the command runs; liveness is checked by
            # Process.lines(timeout) and close() wakes it with shutdown().
            conn.conn.settimeout(None)
        except WIRE_ERRORS as e:
            raise self._error(e) from e
        return AdbProcess(conn, self.name, self.shell_v2, self.why_ended)

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        try:
            self._device.sync.push(Path(local), remote, mode=mode)
        except WIRE_ERRORS as e:
            if push_refused(e):  # adbutils drops the device's reason; say what it means
                raise PermanentTargetError(
                    f"{self.name}: the device refused to write {remote} (permissions or full)"
                ) from e
            raise self._error(e) from e

    def pull(self, remote: str, local: Path) -> None:
        try:
            self._device.sync.pull_file(remote, Path(local))
        except WIRE_ERRORS as e:
            if pull_missing(e):
                raise PermanentTargetError(f"{self.name}: {remote} is not on the device") from e
            raise self._error(e) from e

    # --- helper and working directory ----------------------------------------------

    def install_helper(self) -> str:
        """Push the helper for this ABI unless a copy with the same SHA-256 is already in
        one of the candidate directories; verify it runs; fall back to the next candidate
        when a directory refuses the file or is mounted noexec."""
        local = native.binary_path(self.facts().abi)
        digest = native.sha256_file(local)
        for d in self.workdirs:
            if self._helper_hashes.get(d) == digest:
                self._workdir, self.helper_pushed = d, False
                return f"{d}/{HELPER}"
        why = []
        for d in self.workdirs:
            remote = f"{d}/{HELPER}"
            try:
                self.push(local, remote, mode=0o755)
            except PermanentTargetError as e:
                why.append(f"{d}: {str(e).split(': ', 1)[-1]}")
                continue
            problem = self._verify_helper(remote, digest)
            if problem is None:
                self._workdir, self.helper_pushed = d, True
                self._helper_hashes[d] = digest
                return remote
            why.append(f"{d}: {problem}")
            self.sh(f"rm -f {shlex.quote(remote)}", timeout=30)
        raise PermanentTargetError(
            f"{self.name}: cannot install the helper ({'; '.join(why)}); free space on /data "
            "or check the directory with `adb shell ls -ld DIR` (it must be writable and exec)"
        )

    def _verify_helper(self, remote: str, digest: str) -> str | None:
        """None if `remote` is the right file and executes, else why not. Lists the
        helper in its directory's manifest (what `clean` may remove)."""
        q = shlex.quote(remote)
        m = shlex.quote(f"{os.path.dirname(remote)}/{MANIFEST}")
        res = self.sh(
            f"chmod 755 {q} && {{ sha256sum {q} 2>/dev/null || toybox sha256sum {q}; }} "
            f"| cut -d' ' -f1; {q} version 2>&1 && "
            f"{{ grep -qx {HELPER} {m} 2>/dev/null || echo {HELPER} >> {m}; }}",
            timeout=30,
        )
        out = res.stdout.split()
        if out and len(out[0]) == 64 and out[0] != digest:
            return "the pushed file is corrupt (hash mismatch)"
        if not res.ok or "droidoom-helper" not in res.stdout:
            return f"it does not execute (noexec mount?): {res.stdout.strip()[-120:]}"
        return None

    def workdir(self) -> str:
        if self._workdir is None:
            self.facts()
            have = [d for d in self.workdirs if d in self._helper_hashes]
            for d in have or self.workdirs:
                q = shlex.quote(d)
                if self.sh(f"mkdir -p {q} && [ -w {q} ] && [ -x {q} ]", timeout=30).ok:
                    self._workdir = d
                    break
            else:
                raise PermanentTargetError(
                    f"{self.name}: none of {', '.join(self.workdirs)} is writable"
                )
        return self._workdir

    def find_files(self, pattern: str) -> list[str]:
        """Paths matching `pattern` (a glob like "records-*.bin") in every candidate dir."""
        return find_files_sh(self, self.workdirs, pattern)

    def claim_run(self, run_id: str) -> None:
        """List the files run `run_id` may create in the workdir in its manifest, before
        creating any: `clean` removes exactly what manifests list."""
        m = shlex.quote(f"{self.workdir()}/{MANIFEST}")
        names = " ".join(shlex.quote(n.format(id=run_id)) for n in RUN_FILES)
        self.sh(f"printf '%s\\n' {names} >> {m}", timeout=30)

    def clean(self, keep_records: bool = False) -> tuple[list[str], list[str]]:
        """Remove what droidoom put on the device (in every candidate directory).

        Returns (removed, kept): `kept` lists records files left for `droidoom recover`
        when keep_records is set. Only files a droidoom manifest lists are removed (kept
        ones stay listed), and our subdirectory only if it ends up empty.
        """
        keep = "records-*" if keep_records else "/"  # "/" never matches a plain name
        lines = []
        for d in self.workdirs:
            qd, m = shlex.quote(d), shlex.quote(f"{d}/{MANIFEST}")
            lines.append(_CLEAN_DIR % {"d": qd, "m": m, "keep": keep})
            if Path(d).name == "droidoom":
                lines.append(f"rmdir {shlex.quote(d)} 2>/dev/null && echo rmdir {shlex.quote(d)}")
        res = self.sh("\n".join(lines) + "\ntrue", timeout=60)
        out = [line.split(" ", 1) for line in res.stdout.splitlines() if " " in line]
        self._helper_hashes.clear()
        self._workdir = None
        return [p for k, p in out if k == "rm"], [p for k, p in out if k == "kept"]

    # --- facts --------------------------------------------------------------------

    def facts(self) -> TargetFacts:
        if self._facts is None:
            res = self.sh(facts_script(self.workdirs, HELPER), timeout=60)
            if not res.ok:
                raise TransientTargetError(
                    f"{self.name}: reading device facts failed (exit {res.exit_code}): "
                    f"{res.stderr.strip()[:200]}"
                )
            facts, self._helper_hashes = parse_facts(res.stdout, self.serial)
            phone = replace(
                facts.phone or PhoneFacts(),
                adb_server=str(self.server),
                adb_features=tuple(sorted(self.features - {""})),
            )
            self._facts = replace(facts, phone=phone)
        return self._facts

    # --- capabilities -----------------------------------------------------------------

    def reach_again(self) -> list[str]:
        """--serial, and the server unless it is the default one a later command finds
        by itself (a farm's servers, one named by an option or the environment)."""
        named = self.server.explicit or self.server != AdbServer()
        return reach_adb(self.serial, str(self.server) if named else "")

    def shell_hint(self, command: str) -> str:
        return shlex.join(["adb", "-s", self.serial, "shell"]) + " " + command

    def phone(self) -> PhoneFacts:
        """The facts only phones have (read with facts())."""
        return self.facts().phone or PhoneFacts()
