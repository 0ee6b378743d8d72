"""File locks for what only one process may do at a time: download and extract a dataset, build the CPU
fast path, write a run folder.

The locks are `fcntl.flock` locks, which the kernel drops when the process that holds one ends, however
it ends: a killed process never leaves a stale lock. The lock file itself stays (removing it would let
a third process lock a file that a second one is still waiting on); it only records who holds it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

from pix2pix.errors import Pix2PixError

POLL_SECONDS = 0.2


class FileLock:
    """An exclusive lock on `path` (created if missing), held until `release()` or the process ends."""

    def __init__(self, path: Path, on_wait: Callable[[str], None] | None = None):
        """on_wait(holder): called once when the lock is taken and `with` has to wait for it."""
        self.path = path
        self.on_wait = on_wait
        self.fd: int | None = None

    def _open(self) -> int:
        """The lock file's descriptor, never through a link (a received run folder could hold one pointing at
        a file of yours) and only ever a plain file."""
        nofollow = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | nofollow, 0o666)
            except PermissionError:  # another user's lock file in a shared folder: a read-only one locks too
                fd = os.open(self.path, os.O_RDONLY | nofollow)
        except OSError as err:
            raise Pix2PixError(
                f"{self.path}: cannot open the lock file ({err.strerror}); it must be a plain file in a folder you "
                f"may write: check {self.path.parent}"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise Pix2PixError(f"{self.path}: the lock file is not a plain file; remove it")
        return fd

    def acquire(self, wait: bool = True, on_wait: Callable[[str], None] | None = None) -> bool:
        """Take the lock; with `wait`, block until it is free (calling `on_wait(holder)` once first),
        else return False at once when another process holds it."""
        fd = self._open()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    os.close(fd)
                    return False
                if on_wait and not told:
                    on_wait(self.holder())
                    told = True
                time.sleep(POLL_SECONDS)
        self.fd = fd
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and info.st_nlink == 1:  # who holds it, for the processes that find it taken
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            except OSError:
                pass
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None

    def __enter__(self) -> FileLock:
        self.acquire(on_wait=self.on_wait)
        return self

    def __exit__(self, *exc) -> None:
        self.release()
