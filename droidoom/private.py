"""This user's private droidoom directory on this host: the `--local` lock and work files.

The temp directory is shared by every user (mode 1777), so a lock, records or plan file
found there may have been planted by anyone: a planted stale lock made root's next run
"finish" (rewrite) a run it named. So `--local` keeps them in a directory only the
invoking user can write: $DROIDOOM_LOCK_DIR if set, else $XDG_RUNTIME_DIR/droidoom when
XDG_RUNTIME_DIR is the user's own 0700 directory, else `<tempdir>/droidoom-<uid>`. The
directory is created 0700 and checked (lstat: no symlink, the user's own, no group or
other write) on every use; files in it are trusted only when the user (or root) owns them.
"""

from __future__ import annotations

import os
import pwd
import stat
import tempfile
from pathlib import Path

from .errors import UsageError


def user_name(uid: int) -> str:
    """`name (uid N)`, or `uid N` for a uid without a passwd entry."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"

LOCK_DIR_ENV = "DROIDOOM_LOCK_DIR"
#: Prefix of a run's work directory (records, plan, helper copy) in the private dir.
WORK_PREFIX = "work-"


def _xdg_dir() -> Path | None:
    """$XDG_RUNTIME_DIR if it is this user's own 0700 directory, else None."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if not xdg or not os.path.isabs(xdg):
        return None
    try:
        st = os.lstat(xdg)
    except OSError:
        return None
    ok = stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
    return Path(xdg) if ok and stat.S_IMODE(st.st_mode) == 0o700 else None


def check_private(path: Path, origin: str) -> Path:
    """`path` if it is a real directory (not a symlink) of this user's that no one else
    may write; UsageError naming its owner and what to do otherwise."""
    me = os.geteuid()
    try:
        st = os.lstat(path)
    except OSError as e:
        raise UsageError(f"{origin} {path}: cannot use it ({e.strerror})") from None
    why = None
    if stat.S_ISLNK(st.st_mode):
        why = f"it is a symlink (owned by {user_name(st.st_uid)})"
    elif not stat.S_ISDIR(st.st_mode):
        why = "it is not a directory"
    elif st.st_uid != me:
        why = f"it is owned by {user_name(st.st_uid)}"
    elif st.st_mode & 0o022:
        why = f"its mode {stat.S_IMODE(st.st_mode):04o} lets others write in it"
    if why:
        raise UsageError(
            f"{origin} {path}: droidoom keeps its lock and work files only in a directory "
            f"you ({user_name(me)}) own and no one else can write, and {why}. Remove it if "
            f"it is not yours (e.g. `rm -r {path}` as root), `chmod go-w` it if it is, or "
            f"point {LOCK_DIR_ENV} at a directory of your own"
        )
    return path


def private_dir() -> Path:
    """This user's private droidoom directory, created 0700 if needed and checked."""
    env = os.environ.get(LOCK_DIR_ENV)
    if env:
        return check_private(Path(env), LOCK_DIR_ENV)
    xdg = _xdg_dir()
    path = xdg / "droidoom" if xdg else Path(tempfile.gettempdir()) / f"droidoom-{os.geteuid()}"
    try:
        os.mkdir(path, 0o700)  # an existing one (anyone's, or a symlink) is checked below
    except FileExistsError:
        pass
    except OSError as e:
        why = e.strerror
        raise UsageError(f"cannot create droidoom's private directory {path}: {why}") from None
    return check_private(path, "droidoom's private directory")


def trusted(path: Path | str, what: str) -> str | None:
    """None if `path` is a regular file or directory (not a symlink) owned by this user
    or root, or does not exist; else why it is not trusted (its owner), for a refusal."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None  # nothing to trust or distrust: the caller meets its absence
    except OSError as e:
        return f"{what} {path} cannot be checked ({e.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return f"{what} {path} is a symlink (owned by {user_name(st.st_uid)}): not trusted"
    if st.st_uid not in (os.geteuid(), 0):
        return (
            f"{what} {path} belongs to {user_name(st.st_uid)}, not to you "
            f"({user_name(os.geteuid())}) or root: not trusted"
        )
    return None


def is_workdir(path: Path | str) -> bool:
    """Whether `path` is a run's work directory in this user's private directory."""
    p = Path(path)
    return p.parent == private_dir() and p.name.startswith(WORK_PREFIX)
