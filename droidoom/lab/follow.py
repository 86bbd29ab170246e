"""A guest's records file, streamed to the host while the helper writes it.

A QEMU guest's files live in its RAM: when QEMU dies (a crash, a panic, the watchdog,
droidoom SIGKILLed) the records file dies with it, and pulling it at the end brought
home nothing. So a run's spawned script is wrapped: beside the helper a busybox loop
reads the records file's new bytes every POLL_S seconds and prints them on the same
stdout as the helper's event lines:

    __DD_REC <spawn id> <offset> <base64 of the bytes from offset>

Chunks are CHUNK bytes at CHUNK-aligned offsets; a chunk still growing is sent again
as it grows (the host writes it at its offset: idempotent). Each line leaves the guest
in one write(2) (busybox echo; a virtio port takes up to 32 KiB per write), so it never
interleaves with the helper's lines, which are one write(2) each too. The loop reads
the file one last time after the helper ends and exits before the spawn does, so no
line of it follows the spawn's end mark.

What it costs the guest: one poll (a subshell, dd, base64) takes ~65 ms of a vCPU under
TCG on a loaded 2-core host (far less under KVM), so it polls once a second and sends at
most MAX_CHUNKS chunks per poll (<= ~20% of a vCPU under TCG, ~1,900 records/s); a faster
run's stream lags behind it (the pull at the end still brings everything while the guest
lives). A stream is a safety net, not the records' way home.
"""

from __future__ import annotations

import base64
import binascii
import shlex
from collections.abc import Callable

#: Bytes per streamed chunk, a multiple of 3 (a full chunk is told by its base64 length)
#: and of the record sizes; its base64 line (26 KiB) stays under a port write (32 KiB).
CHUNK = 19968
#: Seconds between polls, and chunks sent per poll at most.
POLL_S = 1
MAX_CHUNKS = 3
_B64_FULL = CHUNK // 3 * 4
MARK = "__DD_REC"

#: Write `data` at `offset` of the host's copy.
Sink = Callable[[int, bytes], None]

_FOLLOW = r"""__dd_follow() {
  k=0; sent=0
  while :; do
    alive=1; kill -0 "$2" 2>/dev/null || alive=0
    c=0
    while [ $c -lt @MAX@ ]; do
      c=$((c + 1))
      d=$(dd if="$1" bs=@CHUNK@ skip=$k count=1 2>/dev/null | base64 -w 0)
      if [ "${#d}" -gt "$sent" ]; then echo "@MARK@ @RID@ $((k * @CHUNK@)) $d"; fi
      if [ "${#d}" -ge @FULL@ ]; then k=$((k + 1)); sent=0; else sent=${#d}; break; fi
    done
    [ "$alive" = 0 ] && return 0
    sleep @POLL@
  done
}
exec 3<&0
(
@SCRIPT@
) <&3 3<&- &
__dd_hp=$!
exec 3<&-
trap 'kill -TERM "$__dd_hp" 2>/dev/null' TERM
__dd_follow @RECORDS@ "$__dd_hp" </dev/null &
__dd_fp=$!
while :; do
  wait "$__dd_hp"; __dd_rc=$?
  kill -0 "$__dd_hp" 2>/dev/null || break
done
wait "$__dd_fp"
exit "$__dd_rc"
"""


def follow_script(script: str, records: str, rid: int) -> str:
    """`script` run with `records` streamed beside it as MARK lines of spawn `rid`.

    The script runs in a subshell with the spawn's stdin (the helper's "host gone"
    signal), its exit code is the wrapper's, and SIGTERM to the wrapper (the agent's
    KILL) is passed on to it."""
    fill = {"@CHUNK@": str(CHUNK), "@FULL@": str(_B64_FULL), "@MARK@": MARK,
            "@MAX@": str(MAX_CHUNKS), "@POLL@": str(POLL_S),
            "@RID@": str(int(rid)), "@RECORDS@": shlex.quote(records)}
    text = _FOLLOW
    for key, value in fill.items():
        text = text.replace(key, value)
    return text.replace("@SCRIPT@", script)  # last: the script's own text is not filled


def take(line: str, rid: int, sink: Sink) -> bool:
    """True if `line` is a MARK line (of any spawn; only `rid`'s go to `sink`). A
    damaged one (cut by a dying guest) is dropped: its bytes are sent again or lost
    with the guest, never written wrong."""
    if not line.startswith(MARK + " "):
        return False
    parts = line.split(" ")
    if len(parts) != 4 or parts[1] != str(rid) or not parts[2].isdigit():
        return True
    try:
        data = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        return True
    if data:
        sink(int(parts[2]), data)
    return True
