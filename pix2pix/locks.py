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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except PermissionError:  # another user's lock file in a shared folder: a read-only one locks too
            try:
                return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as err:
                raise Pix2PixError(
                    f"{self.path}: cannot open the lock file ({err.strerror}); check the "
                    f"permissions of {self.path.parent}"
                ) from None
        except OSError as err:
            raise Pix2PixError(
                f"{self.path}: cannot create the lock file ({err.strerror}); check the permissions of "
                f"{self.path.parent}"
            ) from None

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
        try:  # who holds it, for the messages of the processes that find it taken
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
