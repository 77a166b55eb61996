"""Safety helpers re-exported by :mod:`classifiers.runtime`: one-sentence OS-error messages and
the per-folder run lock (``<folder>/.wbcgen.lock``) that keeps two processes from writing one
run or output folder at the same time."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from classifiers.runtime import UserError

_ERRNO_HINTS = {
    errno.EROFS: "the file system is read-only; choose an output folder on a writable disk",
    errno.ENOSPC: "the disk is full; free some space or choose another output folder, then run the command again",
    errno.EDQUOT: "the disk quota is exhausted; free some space or choose another output folder",
    errno.ENAMETOOLONG: "a file or folder name is too long for the file system; choose a shorter name",
    errno.ENOTDIR: "a part of that path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder where a file is expected; choose another path",
    errno.EEXIST: "something already exists there; choose another path",
    errno.EACCES: "permission denied; choose a path you may write to",
    errno.EPERM: "the operation is not permitted there; choose another path",
    errno.ENOENT: "it does not exist; check the path",
    errno.EMFILE: "too many files are open; close other programs and run the command again",
    errno.EIO: "the disk reported an input/output error; check the disk",
    errno.EXDEV: "it lies on another file system; choose a folder on the same disk",
    errno.ELOOP: "it is a symbolic-link loop; fix the link",
}


def _printable(path: Any) -> str:
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    text = os.fsencode(text).decode("utf-8", "replace")
    text = " ".join(text.split()) if "\n" in text or "\r" in text else text
    return text if len(text) <= 160 else f"{text[:90]}…{text[-60:]}"


def os_error_message(e: OSError) -> str:
    """One sentence for an OS error: what failed, on which path, and what to do about it."""
    what = e.strerror or type(e).__name__
    where = f" at {_printable(e.filename)}" if e.filename is not None else ""
    if getattr(e, "filename2", None) is not None:
        where += f" (and {_printable(e.filename2)})"
    hint = _ERRNO_HINTS.get(e.errno or -1)
    if e.errno == errno.EEXIST and e.filename is not None and os.path.isfile(e.filename):
        hint = "it is a file where a folder is expected; choose another path or move the file"
    if hint is None and not e.strerror:
        hint = " ".join(str(e).split())[:200] or "an operating-system error"
    return f"{what}{where}" + (f": {hint}" if hint else "")


# ---------------------------------------------------------------------------- locks

LOCK_NAME = ".wbcgen.lock"
_HELD: dict[Path, int] = {}  # folders this process holds a lock on (re-entrant)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_lock(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def _lock_is_stale(path: Path, info: dict | None) -> bool:
    if info is None:  # empty or garbled: a writer died between create and write (or is writing now)
        try:
            return time.time() - path.stat().st_mtime > 5
        except FileNotFoundError:
            return True
    return info.get("host") == socket.gethostname() and not _pid_alive(int(info["pid"]))


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, command: str | None = None):
    """Hold ``<folder>/.wbcgen.lock`` (created with O_CREAT|O_EXCL; holds pid, host, command) while
    the block runs, so only one wbcgen process writes a run/output folder at a time. The folder is
    created if needed. A lock held by a live process → :class:`UserError` naming it; a lock of a
    dead process on this host is taken over. Re-entrant within one process."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield folder / LOCK_NAME
        finally:
            _HELD[key] -= 1
        return
    lock = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "command": command or " ".join(["wbcgen", *sys.argv[1:]])[:300],
          "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = _read_lock(lock)
            if _lock_is_stale(lock, info):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
                continue
            if info is None:
                time.sleep(0.25)
                continue
            where = "" if info.get("host") == me["host"] else f" on host {info.get('host')}"
            raise UserError(f"{folder} is in use by process {info['pid']}{where} ({info.get('command', '?')}); "
                            f"wait for it to finish, or if that process is gone delete {lock}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(me))
        break
    else:
        raise UserError(f"could not take the lock {lock}; delete it if no wbcgen process uses {folder}")
    _HELD[key] = 1
    try:
        yield lock
    finally:
        del _HELD[key]
        held = _read_lock(lock)
        if held is not None and held.get("pid") == me["pid"] and held.get("host") == me["host"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)


