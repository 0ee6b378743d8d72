"""Fetching an official pix2pix archive: resumable HTTP download, SHA-256 check, safe extraction.

Nothing half-done ever looks complete: the transfer goes to `<archive>.part` (resumed with an
HTTP Range request), the archive is only renamed into place once its hash is checked, and it is
extracted into a temporary folder that is renamed to the dataset folder at the very end.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from pix2pix.errors import Pix2PixError
from pix2pix.track.files import write_text
from pix2pix.track.locks import FileLock

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT_S = 30
MAX_MEMBERS = 200_000  # edges2shoes, the largest official archive, has about 50,000
MAX_HEADER_BYTES = 1 << 20  # a PAX or GNU long-name header (a long file name needs a few hundred bytes)
MAX_RATIO = 100  # extracted bytes per archive byte (JPEG archives are about 1:1)


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


def sidecar_of(archive: Path) -> Path:
    """Where the SHA-256 of a first download is recorded when dataset.sha256 is empty."""
    return archive.with_name(archive.name + ".sha256")


def recorded_sha256(archive: Path) -> str | None:
    try:
        text = sidecar_of(archive).read_text().split()
    except OSError:
        return None
    return text[0].lower() if text and len(text[0]) == 64 else None


def verify(archive: Path, expected: str | None) -> str:
    """Check the archive's SHA-256 against `expected` (dataset.sha256) or, where that is empty, the hash
    recorded at the first download. A mismatching archive is deleted (a rerun downloads it afresh)."""
    actual = sha256_of(archive)
    if expected:
        wanted, source, fix = expected.lower(), f"dataset.sha256={expected}", "correct dataset.sha256 / dataset.url"
    else:
        sidecar = sidecar_of(archive)
        wanted, source = recorded_sha256(archive), f"the SHA-256 recorded at the first download, in {sidecar}"
        fix = f"delete {sidecar} if the server's archive really changed"
    if wanted and actual != wanted:
        archive.unlink()
        raise Pix2PixError(
            f"{archive}: SHA-256 {actual} does not match {source} ({wanted}); the file was deleted. "
            f"Run again to download it afresh, or {fix}"
        )
    return actual


def record_sha256(archive: Path, digest: str) -> None:
    """Keep the hash of a first download (dataset.sha256 empty), so that later downloads must match it."""
    sidecar = sidecar_of(archive)
    write_text(sidecar, f"{digest}  {archive.name}\n")
    log.warning(
        "dataset.sha256 is empty: could not verify %s; its SHA-256 %s is recorded in %s, and later downloads "
        "must match it (set dataset.sha256=%s to pin it in the config)",
        archive.name,
        digest,
        sidecar,
        digest,
    )


def unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why `member` may not be extracted; None for a plain file or folder with a relative name that
    stays inside the target. Links of any kind, devices and FIFOs are refused: the official archives
    have none, and with none a name alone says where a member lands, on every Python."""
    name = member.name
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "a '..' path"
    if member.issym() or member.islnk():
        return f"a link (to {member.linkname})"
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        return "a device or FIFO"
    if not (member.isreg() or member.isdir()) or member.issparse():
        return "not a plain file or folder"
    return None


class ArchiveRefused(Pix2PixError):
    """An archive that will not be extracted: the message says which member or limit, and it is deleted."""


class GuardedTarInfo(tarfile.TarInfo):
    """tarfile's member header, refusing the extended headers (PAX, GNU long names) that tarfile would
    otherwise read into memory whole, whatever size they declare: a small .tar.gz could declare gigabytes.
    (`_proc_pax` and `_proc_gnulong` are tarfile's own steps for them, the same on Python 3.9 to 3.13.)"""

    def _proc_pax(self, tarfile):
        self._refuse_large_header()
        return super()._proc_pax(tarfile)

    def _proc_gnulong(self, tarfile):
        self._refuse_large_header()
        return super()._proc_gnulong(tarfile)

    def _refuse_large_header(self) -> None:
        if self.size > MAX_HEADER_BYTES:
            raise ArchiveRefused(f"refused: an extended header of {self.size:,} bytes (a decompression bomb?)")


def listed_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The archive's members, read one by one up to the cap (never the whole list of a hostile archive)."""
    members = []
    for member in tar:
        members.append(member)
        if len(members) > MAX_MEMBERS:
            raise ArchiveRefused(f"refused: more than {MAX_MEMBERS:,} members")
    return members


def check_members(members: list[tarfile.TarInfo], destination: Path, limit: int) -> None:
    """Refuse the whole archive for one unsafe member, or for more content than `limit` bytes."""
    for member in members:
        reason = unsafe_member(member)
        if reason:
            raise ArchiveRefused(
                f"refused: member {member.name!r} is {reason}, which a dataset archive never needs and which "
                f"could write outside {destination.parent}"
            )
    total = sum(m.size for m in members if m.isreg())
    if total > limit:
        raise ArchiveRefused(
            f"refused: its files hold {total / 1e6:,.1f} MB, over {MAX_RATIO}x the archive's size "
            f"({limit / 1e6:,.1f} MB; a decompression bomb?)"
        )


def extraction_limit(archive: Path) -> int:
    return max(MAX_RATIO * archive.stat().st_size, 1 << 20)


def extract_members(tar: tarfile.TarFile, members: list[tarfile.TarInfo], target: Path) -> None:
    """Write the (checked) members into the fresh folder `target`: folders and plain files only, with
    this user's default permissions (never the archive's modes or owners), no file opened through a link."""
    for member in members:
        path = target.joinpath(*PurePosixPath(member.name).parts)
        if member.isdir():
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o666)
        with source, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)


def extract(archive: Path, destination: Path) -> Path:
    """Extract a .tar(.gz) archive to `destination` (which must not exist yet), atomically.

    The archive's own top folder (facades/ in facades.tar.gz) is the dataset folder when it is the
    only entry. An archive refused (a member that could leave the target, a cap exceeded) or that is
    not a complete archive is deleted, with one line saying why; nothing is extracted from it.
    """
    try:
        with tarfile.open(archive, tarinfo=GuardedTarInfo) as tar:
            members = listed_members(tar)
            check_members(members, destination, extraction_limit(archive))
            tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
            try:
                extract_members(tar, members, tmp)
                entries = list(tmp.iterdir())
                top = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
                os.replace(top, destination)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except ArchiveRefused as err:
        archive.unlink(missing_ok=True)
        raise ArchiveRefused(f"{archive}: {err}; nothing was extracted and the archive was deleted") from None
    except OSError as err:
        if err.errno is not None:  # the file system's refusal (disk full, permissions), not the archive's fault
            raise Pix2PixError(
                f"{archive}: extracting into {destination.parent} failed ({err.strerror}); nothing was extracted; "
                "free space there (the archive is kept, a rerun extracts it)"
            ) from None
        raise not_an_archive(archive, err) from None  # gzip and bz2 report damaged data as an OSError
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as err:
        raise not_an_archive(archive, err) from None
    return destination


def not_an_archive(archive: Path, err: Exception) -> Pix2PixError:
    archive.unlink(missing_ok=True)
    first = str(err).strip().splitlines()[0].rstrip(":") if str(err).strip() else type(err).__name__
    return Pix2PixError(
        f"{archive}: not a complete .tar or .tar.gz archive ({first}); it was deleted. Check dataset.url "
        "(a server may send an error page instead of the file), then run again"
    )


def download_dataset(url: str, sha256: str | None, root: Path, progress_bar: bool = True) -> Path:
    """Make `root` the extracted dataset of the archive at `url`: fetch (resuming), verify, extract.

    One process at a time per dataset (a file lock beside `root`): a second one waits, then finds the
    dataset there. The archive is kept beside `root` until it is extracted, then deleted; its hash stays
    recorded when dataset.sha256 was empty, and later downloads must match it."""
    archive = root.parent / PurePosixPath(urllib.parse.urlparse(url).path).name
    if not archive.name:
        raise Pix2PixError(f"dataset.url={url}: does not name an archive file")

    def present() -> bool:
        if root.is_dir() and any(root.iterdir()):
            log.info("%s is already there; nothing to download", root)
            return True
        return False

    def waiting(holder: str) -> None:
        log.info("%s is being downloaded by %s; waiting for it to finish", root, holder)

    if present():
        return root
    with FileLock(root.parent / f".{root.name}.lock", on_wait=waiting):
        if present():  # the process we waited for made it
            return root
        if archive.is_file():
            log.info("using %s, downloaded earlier", archive)
        else:
            log.info("downloading %s to %s", url, archive)
            fetch_with_progress(url, archive, progress_bar)
        digest = verify(archive, sha256)
        log.info("%s: SHA-256 %s%s", archive.name, digest, " (verified)" if sha256 or recorded_sha256(archive) else "")
        if root.is_dir():
            root.rmdir()  # empty (checked above)
        extract(archive, root)
        if not sha256 and recorded_sha256(archive) is None:
            record_sha256(archive, digest)
        archive.unlink()
    log.info("extracted %s into %s", archive.name, root)
    return root


def fetch_with_progress(url: str, archive: Path, progress_bar: bool) -> Path:
    from tqdm import tqdm

    with tqdm(unit="B", unit_scale=True, desc=archive.name, disable=not progress_bar, leave=False) as bar:

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return fetch(url, archive, progress)
