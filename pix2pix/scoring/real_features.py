"""FID/KID against one split's real images, their Inception features computed once and cached.

The cache file lives beside the split's folder (<split>/../.fid/<split>-<settings>.npz), or in the
user's cache when that folder may not be written or what is there is not the user's own. It holds
the features (float32, one row per image) and the key they were made for: a SHA-256 of every file's
name and bytes, the settings that turn the files into images (dataset, direction, preprocessing,
image count) and the feature extractor. Any change gives another key, and the features are computed
again. A cache file is read as arrays only (np.load without pickles, its size checked first); one
that does not match is replaced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from pix2pix.cache import CacheProblem, trusted_cache, untrusted
from pix2pix.errors import Pix2PixError
from pix2pix.models.inception import FEATURES
from pix2pix.scoring.distances import Stats, fid_kid
from pix2pix.scoring.features import INPUT_RANGE, RESAMPLE
from pix2pix.track.files import write_atomically
from pix2pix.weights.fid_weights import ARCHIVE_SHA256

log = logging.getLogger(__name__)

CACHE_FOLDER = ".fid"
EXTRACTOR = f"inception-2015-12-05 {ARCHIVE_SHA256} {RESAMPLE} {INPUT_RANGE} 299x299"


def content_key(files: list[Path], settings: str) -> str:
    digest = hashlib.sha256(f"{EXTRACTOR}\n{settings}\n".encode())
    for file in files:
        digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(2**20), b""):
                digest.update(block)
    return digest.hexdigest()


def cache_file(split_folder: Path, settings: str) -> Path:
    """Beside the data if that folder may be written and its file there is the user's own, else in the
    user's cache (named by the split's folder)."""
    name = f"{split_folder.name}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}.npz"
    beside = split_folder.parent / CACHE_FOLDER
    try:
        beside.mkdir(exist_ok=True)
        _probe(beside)
        problem = untrusted(beside) or ((beside / name).exists() and untrusted(beside / name))
        if not problem:
            return beside / name
        log.warning("FID: the feature cache beside the data is not used (%s); the user cache is", problem)
    except OSError:
        pass
    folder = hashlib.sha256(str(split_folder.resolve()).encode()).hexdigest()[:12]
    return trusted_cache() / "fid" / "stats" / folder / name


def _probe(folder: Path) -> None:
    """OSError unless this process may create files in `folder` (a name of its own: others may probe too)."""
    fd, path = tempfile.mkstemp(prefix=".probe-", dir=folder)
    os.close(fd)
    os.unlink(path)


def _read(path: Path, key: str, count: int) -> np.ndarray | None:
    try:
        if path.stat().st_size > count * FEATURES * 4 + 2**16:  # the features and a key: more is not ours
            return None
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != key:
                return None
            features = stored["features"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, MemoryError) as err:
        log.warning("FID: %s is not a readable feature cache (%s); computing the features again", path, err)
        return None
    if features.shape != (count, FEATURES) or features.dtype != np.float32 or not np.isfinite(features).all():
        return None
    return features


def _write(path: Path, key: str, features: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), features=features)
        os.chmod(tmp, 0o644)  # never group-writable, whatever the umask (such a file is not read back)

    try:
        write_atomically(path, write)
    except (Pix2PixError, CacheProblem) as err:
        log.warning("FID: the real images' features are not cached (%s)", err)


def real_features(
    extract: Callable[[Iterable[np.ndarray]], np.ndarray],
    files: list[Path],
    images: Callable[[], Iterable[np.ndarray]],
    settings: str,
    split_folder: Path | None,
) -> tuple[np.ndarray, Path | None]:
    """The features of a split's real images (made by `images()` from `files`), from the cache when its
    key matches (the path it came from is returned; None if computed); split_folder=None: no cache."""
    if split_folder is None:
        return extract(images()), None
    key = content_key(files, settings)
    try:
        path = cache_file(split_folder, settings)
    except CacheProblem as err:
        log.warning("FID: the real images' features are not cached (%s)", err)
        return extract(images()), None
    features = _read(path, key, len(files))
    if features is not None:
        return features, path
    features = extract(images())
    _write(path, key, features)
    return features, None


class FidScorer:
    """FID and KID of generated images against fixed real features."""

    def __init__(self, extract: Callable[[Iterable[np.ndarray]], np.ndarray], real: np.ndarray):
        self.extract, self.real, self.real_stats = extract, real, Stats.of(real)

    def score(self, generated: Iterable[np.ndarray]) -> dict[str, float | int]:
        return fid_kid(self.real, self.extract(generated), self.real_stats)
