"""Writing files so that no reader ever sees one half-written: a temporary name in the same folder,
flushed to disk, then renamed over the target (and the folder flushed, so the rename survives a crash).

A failed write (disk full, quota, a read-only or foreign folder) removes the temporary file, leaves any
earlier file at the target as it was, and is raised as one Pix2PixError that names the folder.
"""

from __future__ import annotations

import errno
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath

from PIL import Image

from pix2pix.errors import Pix2PixError


def temporary_name(path: Path) -> Path:
    """A temporary name beside `path`, its own per process: two processes writing the same file at
    once (sweep jobs, data-parallel workers) never write into each other's temporary file."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def real(path: Path) -> Path:
    """The path with every link followed (Path.resolve raises on a link loop; this keeps the loop as is)."""
    return Path(os.path.realpath(path))


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk through a read-only descriptor (a file may be read-only for its
    owner, as MindSpore leaves its checkpoints; fsync needs no write access)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable; file systems that cannot sync a folder are left alone."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_failed(
    path: Path, err: OSError, what: str = "writing it", advice: str = "or check that you may write there"
) -> Pix2PixError:
    """The one line for a write that the file system refused."""
    kept = f"{path.name} is unchanged" if path.exists() else "nothing was left half-written"
    return Pix2PixError(
        f"{path}: {what} failed ({err.strerror or err}); {kept}; free space in {path.parent} ({advice})"
    )


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` for a temporary file beside `path`, then put it in place of `path`."""
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except OSError as err:
        raise write_failed(path, err) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_image(path: Path, image: Image.Image, **save_args) -> Path:
    """`image.save` to `path` atomically; pass `format=` (the temporary name has no image suffix)."""
    return write_atomically(path, lambda tmp: image.save(tmp, **save_args))


def result_names(relative: Sequence[PurePath]) -> list[str]:
    """A file name stem for the result of each input, unique per folder (case-insensitively): the
    input's stem, or its whole name where two inputs of one folder share a stem (`a.jpg` and `a.png`
    -> `a.jpg`, `a.png`), then `~2`, `~3` for what still collides; so results such as `<stem>.png`
    never overwrite each other. The order of `relative` decides the numbering."""
    stems = Counter((path.parent, path.stem.lower()) for path in relative)
    used: set[tuple[PurePath, str]] = set()
    names = []
    for path in relative:
        name = path.stem if stems[(path.parent, path.stem.lower())] == 1 else path.name
        candidate, n = name, 1
        while (path.parent, candidate.lower()) in used:
            n += 1
            candidate = f"{name}~{n}"
        used.add((path.parent, candidate.lower()))
        names.append(candidate)
    return names


def natural_key(path: Path) -> list:
    """Sort 2.jpg before 10.jpg."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]
