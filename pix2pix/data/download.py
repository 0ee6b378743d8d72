"""Fetching an official pix2pix archive: resumable HTTP download, SHA-256 check, safe extraction.

Nothing half-done ever looks complete: the transfer goes to `<archive>.part` (resumed with an
HTTP Range request), the archive is only renamed into place once its hash is checked, and it is
extracted into a temporary folder that is renamed to the dataset folder at the very end.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import posixpath
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from pix2pix.errors import Pix2PixError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT_S = 30


def fetch(url: str, archive: Path, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download `url` to `archive`, resuming `<archive>.part` where an earlier transfer stopped."""
    part = archive.with_name(archive.name + ".part")
    archive.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the .part file is already whole
            os.replace(part, archive)
            return archive
        raise Pix2PixError(f"{url}: the server answered HTTP {err.code} {err.reason}; check dataset.url") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise Pix2PixError(
            f"{url}: cannot connect ({reason}); check the network or set dataset.url to a mirror"
        ) from None
    with response:
        resumed = response.status == 206
        if have and not resumed:
            log.info("%s: the server does not resume transfers; starting again", url)
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        if have:
            log.info("resuming %s at %.1f MB", url, have / 1e6)
        done = have
        try:
            with open(part, "ab" if resumed else "wb") as f:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except (OSError, urllib.error.URLError, http.client.HTTPException) as err:
            raise Pix2PixError(
                f"{url}: the transfer stopped at {done / 1e6:.1f} MB ({err}); run the same command again to resume"
            ) from None
    if total is not None and done < total:
        raise Pix2PixError(
            f"{url}: the transfer stopped at {done / 1e6:.1f} of {total / 1e6:.1f} MB; "
            "run the same command again to resume"
        )
    os.replace(part, archive)
    return archive


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(archive: Path, expected: str | None) -> str:
    """Check the archive's SHA-256; with none expected, record it in `<archive>.sha256` and say so.
    A mismatching archive is deleted (a rerun downloads it afresh)."""
    actual = sha256_of(archive)
    if expected:
        if actual != expected.lower():
            archive.unlink()
            raise Pix2PixError(
                f"{archive}: SHA-256 {actual} does not match dataset.sha256={expected}; the file was deleted. "
                "Run again to download it afresh, or correct dataset.sha256 / dataset.url"
            )
        return actual
    sidecar = archive.with_name(archive.name + ".sha256")
    sidecar.write_text(f"{actual}  {archive.name}\n")
    log.warning(
        "dataset.sha256 is empty: could not verify %s; its SHA-256 %s is recorded in %s "
        "(set dataset.sha256=%s to check later downloads)",
        archive.name,
        actual,
        sidecar,
        actual,
    )
    return actual


def unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why extracting `member` could write outside the target folder (or create a device); None if safe."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")):
        return "an absolute path"
    if ".." in name.parts:
        return "a '..' path"
    if member.issym() or member.islnk():
        # A symlink's target is relative to its own folder; a hard link's to the archive's root.
        base = name.parent if member.issym() else PurePosixPath()
        target = posixpath.normpath(str(base / member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            return f"a link to {member.linkname}"
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        return "a device or FIFO"
    return None


def extract(archive: Path, destination: Path) -> Path:
    """Extract a .tar(.gz) archive to `destination` (which must not exist yet), atomically.

    The archive's own top folder (facades/ in facades.tar.gz) is the dataset folder when it is the
    only entry; an archive with any member that would leave the target is refused whole.
    """
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                reason = unsafe_member(member)
                if reason:
                    raise Pix2PixError(
                        f"{archive}: refused: member {member.name!r} is {reason}, which could write outside "
                        f"{destination.parent}; nothing was extracted"
                    )
            tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
            try:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # Python without extraction filters: the checks above stand alone
                    tar.extractall(tmp)  # noqa: S202
                entries = list(tmp.iterdir())
                top = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
                os.replace(top, destination)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise Pix2PixError(f"{archive}: not a readable .tar.gz archive ({err}); delete it and download again") from None
    return destination


def download_dataset(url: str, sha256: str | None, root: Path, progress_bar: bool = True) -> Path:
    """Make `root` the extracted dataset of the archive at `url`: fetch (resuming), verify, extract.

    The archive is kept beside `root` until it is extracted, then deleted (its hash stays recorded
    when dataset.sha256 was empty)."""
    if root.is_dir() and any(root.iterdir()):
        log.info("%s is already there; nothing to download", root)
        return root
    archive = root.parent / PurePosixPath(urllib.parse.urlparse(url).path).name
    if not archive.name:
        raise Pix2PixError(f"dataset.url={url}: does not name an archive file")
    from tqdm import tqdm

    with tqdm(unit="B", unit_scale=True, desc=archive.name, disable=not progress_bar, leave=False) as bar:

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        log.info("downloading %s to %s", url, archive)
        fetch(url, archive, progress)
    digest = verify(archive, sha256)
    log.info("%s: SHA-256 %s%s", archive.name, digest, " (verified)" if sha256 else "")
    if root.is_dir():
        root.rmdir()  # empty (checked above)
    extract(archive, root)
    archive.unlink()
    log.info("extracted %s into %s", archive.name, root)
    return root
