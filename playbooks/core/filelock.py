"""A lock between processes that the operating system keeps: flock on POSIX, msvcrt on Windows.

Whether a lock is taken is the kernel's answer, never the lock file's
existence or content: a second process cannot slip into the gap between a
file's creation and its first write, nor take a lock for stale because it read
a half-written pid, and a process that dies releases its lock with it. The
file only carries a note for whoever finds the lock taken. It is removed by
its owner alone, while still holding it; a process that locked a file its
owner had just removed sees that the path names another file, and tries again.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Iterator

if sys.platform == "win32":
    import msvcrt

    _WIN_LOCK_OFFSET = 1 << 30  # lock a byte far past the note, so others can still read the note

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class LockBusy(Exception):
    """Another process holds the lock; `note` is what it wrote there ('' when unreadable)."""

    def __init__(self, path: Path, note: str):
        self.path = path
        self.note = note
        super().__init__(f"{path} is locked by another process" + (f": {note}" if note else ""))


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def read_note(path: Path, settle: float = 0.5) -> str:
    """The holder's note; a lock taken a moment ago may not have it yet, so look again briefly."""
    deadline = time.monotonic() + settle
    while True:
        try:
            note = path.read_text(errors="replace").strip()
        except OSError:
            note = ""
        if note or time.monotonic() >= deadline:
            return note
        time.sleep(0.02)


@contextlib.contextmanager
def locked(path: Path, note: str = "", *, wait: float = 0.0) -> Iterator[None]:
    """Hold the lock at `path` for the block; raise LockBusy if another process holds it
    for longer than `wait` seconds (0: do not wait)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if _try_lock(fd):
            if _same_file(fd, path):
                break
            _unlock(fd)  # its owner removed that file after we opened it: it is no lock any more
        os.close(fd)
        if time.monotonic() >= deadline:
            raise LockBusy(path, read_note(path))
        time.sleep(0.01)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, note.encode())
        yield
    finally:
        if sys.platform == "win32":  # an open file cannot be removed there; whoever opened it next owns it
            _unlock(fd)
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
        else:  # removed while still held, so it can only be this run's lock that goes
            path.unlink(missing_ok=True)
            os.close(fd)  # closing releases the lock


__all__ = ["LockBusy", "locked", "read_note"]
