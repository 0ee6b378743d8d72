"""Downloading against a local HTTP server (never the internet) and safe extraction, called in this process
(the download task, inspect and combine through the command line: tests/e2e/test_download_cli.py)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile

import numpy as np
import pytest

from pix2pix.data.download import extract, fetch, verify
from pix2pix.errors import Pix2PixError
from tests.helpers import facades_like, jpeg_pair, tar_gz


def test_an_interrupted_transfer_resumes(server, tmp_path):
    server.files["/big.tar.gz"] = payload = np.random.default_rng(0).bytes(3 << 20)
    server.cut_once.add("/big.tar.gz")
    archive = tmp_path / "big.tar.gz"
    with pytest.raises(Pix2PixError, match="run the same command again to resume"):
        fetch(f"{server.url}/big.tar.gz", archive)
    part = tmp_path / "big.tar.gz.part"
    assert not archive.exists() and 0 < part.stat().st_size < len(payload)
    fetch(f"{server.url}/big.tar.gz", archive)
    assert archive.read_bytes() == payload and not part.exists()


def test_a_wrong_checksum_is_refused_and_the_file_removed(tmp_path):
    archive = tmp_path / "facades.tar.gz"
    archive.write_bytes(facades_like())
    with pytest.raises(Pix2PixError, match="does not match dataset.sha256=0000"):
        verify(archive, "0000")
    assert not archive.exists()
    archive.write_bytes(facades_like())
    assert verify(archive, hashlib.sha256(archive.read_bytes()).hexdigest().upper())


def test_a_404_names_the_url(server, tmp_path):
    with pytest.raises(Pix2PixError, match=r"/nothing.tar.gz: the server answered HTTP 404"):
        fetch(f"{server.url}/nothing.tar.gz", tmp_path / "nothing.tar.gz")


def hostile_tar(kind: str) -> bytes:
    """Archives that must be refused whole, built here: each kind is one way out of the target."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:

        def add(name, data=b"", **fields):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for key, value in fields.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if data else None)

        add("facades/train/1.jpg", jpeg_pair(1))
        if kind == "chained links":  # each link alone stays inside; together they walk out
            add("facades/up", type=tarfile.SYMTYPE, linkname="..")
            add("facades/up/esc", type=tarfile.SYMTYPE, linkname="..")
            add("facades/up/esc/evil.txt", b"outside")
        elif kind == "absolute path":
            add("/tmp/evil.txt", b"outside")
        elif kind == "dotdot path":
            add("facades/../../evil.txt", b"outside")
        elif kind == "link out":
            add("facades/train/link", type=tarfile.SYMTYPE, linkname="../../../outside")
        elif kind == "hard link":
            add("facades/train/hard", type=tarfile.LNKTYPE, linkname="facades/train/1.jpg")
        elif kind == "character device":
            add("facades/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        elif kind == "block device":
            add("facades/disk", type=tarfile.BLKTYPE, devmajor=8, devminor=0)
        elif kind == "fifo":
            add("facades/pipe", type=tarfile.FIFOTYPE)
        elif kind == "1000:1 bomb":
            add("facades/train/zeros.jpg", bytes(20 << 20))  # 20 MB of zeros, about 20 kB compressed
        elif kind == "huge extended header":  # tarfile would read all 8 MB of it into memory at once
            add("././@PaxHeader", b"0" * (8 << 20), type=tarfile.XHDTYPE)
            add("facades/train/2.jpg", jpeg_pair(2))
    return out.getvalue()


HOSTILE_ARCHIVES = {
    "chained links": "is a link (to ..)",
    "absolute path": "is an absolute path",
    "dotdot path": "is a '..' path",
    "link out": "is a link (to ../../../outside)",
    "hard link": "is a link (to facades/train/1.jpg)",
    "character device": "is a device or FIFO",
    "block device": "is a device or FIFO",
    "fifo": "is a device or FIFO",
    "1000:1 bomb": "over 100x the archive's size",
    "huge extended header": "an extended header of 8,388,608 bytes",
}


@pytest.mark.parametrize("data_filter", ["with tarfile.data_filter", "without (Python < 3.11.4, 3.10.12, 3.9.17)"])
@pytest.mark.parametrize("kind", list(HOSTILE_ARCHIVES))
def test_hostile_archives_are_refused_whole_on_every_python(tmp_path, monkeypatch, kind, data_filter):
    if data_filter.startswith("without"):
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
        monkeypatch.delattr(tarfile, "fully_trusted_filter", raising=False)
    archive = tmp_path / "work" / "bad.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(hostile_tar(kind))
    target = tmp_path / "work" / "data" / "facades"
    target.parent.mkdir()
    with pytest.raises(Pix2PixError, match=f"refused: .*{re.escape(HOSTILE_ARCHIVES[kind])}") as err:
        extract(archive, target)
    assert "\n" not in str(err.value) and "nothing was extracted and the archive was deleted" in str(err.value)
    assert list(target.parent.iterdir()) == []  # not even a temporary folder
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data", "work"]  # nothing outside; the archive gone


def test_too_many_members_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("pix2pix.data.download.MAX_MEMBERS", 5)
    archive = tmp_path / "many.tar.gz"
    archive.write_bytes(tar_gz({f"facades/train/{i}.jpg": jpeg_pair(i, 8) for i in range(6)}))
    (tmp_path / "data").mkdir()
    with pytest.raises(Pix2PixError, match="refused: more than 5 members"):
        extract(archive, tmp_path / "data" / "facades")


def test_extracted_files_get_this_users_permissions_not_the_archives(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        data = jpeg_pair(1)
        info = tarfile.TarInfo("facades/train/1.jpg")
        info.size, info.mode, info.uid, info.gid = len(data), 0o6777, 12345, 12345  # setuid, world-writable
        tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "modes.tar.gz"
    archive.write_bytes(out.getvalue())
    (tmp_path / "data").mkdir()
    root = extract(archive, tmp_path / "data" / "facades")
    info = (root / "train" / "1.jpg").stat()
    assert info.st_mode & 0o7022 == 0 and info.st_uid == os.geteuid()
    assert (root / "train" / "1.jpg").read_bytes() == data


@pytest.mark.parametrize("damage", ["an error page", "a damaged gzip stream", "a cut-off archive"])
def test_a_file_that_is_not_an_archive_says_so_and_is_removed(tmp_path, damage):
    archive = tmp_path / "facades.tar.gz"
    good = facades_like()
    broken = bytearray(good)
    broken[16:24] = b"\xff" * 8  # the start of the deflate stream
    data = {
        "an error page": b"<html><body>503 Service Unavailable</body></html>",
        "a damaged gzip stream": bytes(broken),
        "a cut-off archive": good[: len(good) // 2],
    }
    archive.write_bytes(data[damage])
    (tmp_path / "data").mkdir()
    with pytest.raises(
        Pix2PixError, match="not a complete .tar or .tar.gz archive .*it was deleted. Check dataset.url"
    ):
        extract(archive, tmp_path / "data" / "facades")
    assert not archive.exists() and list((tmp_path / "data").iterdir()) == []
