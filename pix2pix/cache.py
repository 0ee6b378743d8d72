"""The per-user cache folder (~/.cache/pix2pix-ms, or $PIX2PIX_CACHE_DIR): what is built or converted
once and reused (the CPU fast path's library, the FID network's weights).

Whatever is loaded from it must be the user's own: a folder or file of another user, or one that
others may write, is refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

CACHE_ENV = "PIX2PIX_CACHE_DIR"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get(CACHE_ENV) or Path(base) / "pix2pix-ms")


class CacheProblem(Exception):
    """The cache cannot be used; the message says why and what to do."""


def untrusted(path: Path) -> str | None:
    """Why `path` must not be loaded into this process: another user's, or writable by others."""
    info = path.stat()
    if info.st_uid != os.geteuid():
        return f"{path} belongs to another user (uid {info.st_uid}); set {CACHE_ENV} to a folder of yours"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by others (mode {stat.filemode(info.st_mode)}); run chmod go-w {path}"
    return None


def trusted_cache() -> Path:
    """The cache folder, created owner-only if missing; CacheProblem if it cannot be used safely."""
    folder = cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        problem = untrusted(folder)
    except OSError as err:
        raise CacheProblem(
            f"cannot use its cache folder {folder} ({err.strerror}); set {CACHE_ENV} to a folder you may write"
        ) from None
    if problem:
        raise CacheProblem(problem)
    return folder
