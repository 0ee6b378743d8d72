"""Downloading against a local HTTP server (never the internet), safe extraction, inspect and combine."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2pix.data.download import extract, fetch, verify
from pix2pix.errors import Pix2PixError
from tests.conftest import ROOT, run_launch


class ArchiveHandler(BaseHTTPRequestHandler):
    """Serves server.files by path with HTTP Range; paths in server.cut_once send half, then hang up."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        requested = self.headers.get("Range")
        start = int(requested.split("=")[1].split("-")[0]) if requested else 0
        if start >= len(data):
            self.send_error(416, "Range Not Satisfiable")
            return
        body = data[start:]
        self.send_response(206 if requested else 200)
        self.send_header("Content-Length", str(len(body)))
        if requested:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.path in self.server.cut_once:
            self.server.cut_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        if self.path in self.server.slow:  # about 2 s per transfer: two downloads overlap
            for start in range(0, len(body), max(1, len(body) // 40)):
                self.wfile.write(body[start : start + max(1, len(body) // 40)])
                self.wfile.flush()
                time.sleep(0.05)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
    httpd.files, httpd.cut_once, httpd.slow = {}, set(), set()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()


def jpeg_pair(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, 2 * size, 3), dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def tar_gz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A .tar.gz of `members` (name -> bytes) and symlinks (name -> target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return out.getvalue()


def facades_like() -> bytes:
    """The official layout: one top folder facades/ with train/, test/ and val/."""
    members = {f"facades/{split}/{i}.jpg": jpeg_pair(i) for split in ("train", "test", "val") for i in range(1, 4)}
    return tar_gz(members)


def test_download_task_fetches_verifies_and_extracts(server, tmp_path):
    server.files["/facades.tar.gz"] = facades_like()
    data = tmp_path / "data"
    url = f"dataset.url={server.url}/facades.tar.gz"
    result = run_launch(["task=download", "dataset=facades", url, f"paths.data_dir={data}"], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert sorted(p.name for p in (data / "facades").iterdir()) == ["test", "train", "val"]
    assert len(list((data / "facades" / "train").glob("*.jpg"))) == 3
    digest = hashlib.sha256(server.files["/facades.tar.gz"]).hexdigest()
    assert (data / "facades.tar.gz.sha256").read_text().split()[0] == digest
    assert "dataset.sha256 is empty" in output and digest in output
    # nothing half-done; the lock file stays (see pix2pix.track.locks)
    assert sorted(p.name for p in data.iterdir()) == [".facades.lock", "facades", "facades.tar.gz.sha256"]

    again = run_launch(["task=download", "dataset=facades", url, f"paths.data_dir={data}"], cwd=tmp_path)
    assert again.returncode == 0 and "already there" in again.stdout + again.stderr


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


def test_the_hash_recorded_at_the_first_download_is_enforced_later(server, tmp_path):
    server.files["/facades.tar.gz"] = facades_like()
    data = tmp_path / "data"
    args = ["task=download", "dataset=facades", f"dataset.url={server.url}/facades.tar.gz", f"paths.data_dir={data}"]
    assert run_launch(args, cwd=tmp_path).returncode == 0
    recorded = (data / "facades.tar.gz.sha256").read_text()
    shutil.rmtree(data / "facades")
    server.files["/facades.tar.gz"] = tar_gz({"facades/train/1.jpg": jpeg_pair(9)})  # the server's file changed
    again = run_launch(args, cwd=tmp_path)
    output = again.stdout + again.stderr
    assert again.returncode == 2 and "Traceback" not in output
    assert "does not match the SHA-256 recorded at the first download" in output and "the file was deleted" in output
    assert not (data / "facades").exists() and not (data / "facades.tar.gz").exists()
    assert (data / "facades.tar.gz.sha256").read_text() == recorded


def test_two_downloads_of_one_dataset_at_once_give_one_good_copy(server, tmp_path):
    """A sweep with dataset.download=true starts two downloads together: one fetches, the other waits."""
    server.files["/slow/facades.tar.gz"] = payload = facades_like()
    server.slow.add("/slow/facades.tar.gz")
    data = tmp_path / "data"
    args = ["task=download", "dataset=facades", f"dataset.url={server.url}/slow/facades.tar.gz"]
    both = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "launch.py"), *args, f"paths.data_dir={data}", f"hydra.run.dir={tmp_path / n}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in ("a", "b")
    ]
    outputs = [p.communicate(timeout=300)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    assert any("waiting for it to finish" in out for out in outputs) or any("already there" in out for out in outputs)
    assert sum("extracted facades.tar.gz" in out for out in outputs) == 1
    digest = hashlib.sha256(payload).hexdigest()
    assert (data / "facades.tar.gz.sha256").read_text().split()[0] == digest
    assert sorted(p.name for p in (data / "facades").iterdir()) == ["test", "train", "val"]
    assert not list(data.glob("*.part")) and not list(data.glob(".facades.partial-*"))


def test_missing_data_says_how_to_download_and_download_true_does_it(server, tmp_path):
    server.files["/facades.tar.gz"] = facades_like()
    data = f"paths.data_dir={tmp_path / 'data'}"
    stop = run_launch(["dataset=facades", data, "device=cpu"], cwd=tmp_path)
    assert stop.returncode == 2
    assert "download it first with 'python launch.py task=download dataset=facades'" in stop.stdout + stop.stderr
    tiny = ["dataset.load_size=36", "dataset.crop_size=32", "model.generator.num_downs=5", "model.generator.ngf=4"]
    tiny += ["model.discriminator.ndf=4", "schedule.n_epochs=1", "schedule.n_epochs_decay=0", "device=cpu"]
    url = f"dataset.url={server.url}/facades.tar.gz"
    run = run_launch(["dataset=facades", "dataset.download=true", url, data, *tiny], cwd=tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "extracted facades.tar.gz" in run.stdout + run.stderr
    assert len(list((tmp_path / "data" / "facades" / "test").glob("*.jpg"))) == 3


def test_cityscapes_is_not_downloadable_and_says_why(tmp_path):
    result = run_launch(["task=download", "dataset=cityscapes", f"paths.data_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "dataset=cityscapes cannot be downloaded: the Cityscapes licence" in result.stdout + result.stderr


def write_dataset(root: Path) -> None:
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        for i in range(1, 4):
            (root / split / f"{i}.jpg").write_bytes(jpeg_pair(i))
    good = (root / "train" / "1.jpg").read_bytes()
    (root / "train" / "4.jpg").write_bytes(good[: len(good) // 3])  # truncated
    Image.new("RGB", (40, 40)).save(root / "train" / "5.png")  # not a pair
    Image.new("L", (64, 32)).save(root / "train" / "6.png")  # grayscale
    (root / "train" / "notes.txt").write_text("hello")


def test_inspect_reports_every_split_and_previews_the_direction(tmp_path):
    root = tmp_path / "pairs"
    write_dataset(root)
    args = ["task=inspect", "dataset=folder", f"dataset.root={root}", "dataset.direction=BtoA", "dataset.crop_size=64"]
    result = run_launch([*args, "dataset.load_size=72", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "train: 4 pairs" in output and "val: 3 pairs" in output and "32x64" not in output
    assert "sizes 64x32 (4)" in output
    assert "corrupt: 4.jpg: corrupt, truncated or not an image" in output
    assert "odd: 5.png: 40x40 is not an aligned A|B pair" in output
    assert "odd: 6.png: L image converted to RGB" in output
    assert "odd: notes.txt: not an image file" in output
    (preview,) = (tmp_path / "run").glob("preview_folder_BtoA.png")
    with Image.open(preview) as img:
        assert img.size == (2 * 64, 4 * (64 + 22))  # G input | target, one row per preview pair
        top = np.asarray(img.convert("RGB"))[22:, :64]
    expected = np.asarray(Image.open(root / "train" / "1.jpg").convert("RGB"))[:, 32:]  # BtoA: B is the input
    resized = np.asarray(Image.fromarray(expected).resize((64, 64), Image.BICUBIC))
    assert np.abs(top[:64].astype(int) - resized.astype(int)).mean() < 2


def write_halves(folder: Path, names: list[str], colour: int, size=(32, 32)) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (colour, colour, colour)).save(path)


def test_combine_builds_aligned_pairs(tmp_path):
    names = ["train/1.png", "train/2.png", "val/1.png"]
    write_halves(tmp_path / "A", names, 0)
    write_halves(tmp_path / "B", names, 255)
    out = tmp_path / "AB"
    args = ["task=combine", f"combine.a={tmp_path / 'A'}", f"combine.b={tmp_path / 'B'}", f"combine.output={out}"]
    result = run_launch(args, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == [
        "train/1.jpg",
        "train/2.jpg",
        "val/1.jpg",
    ]
    pair = np.asarray(Image.open(out / "train" / "1.jpg"))
    assert pair.shape == (32, 64, 3) and pair[:, :32].mean() < 5 and pair[:, 32:].mean() > 250


@pytest.mark.parametrize(
    "extra_b,size_b,expected",
    [
        (["train/3.png"], (32, 32), "1 files in combine.b=.* have no file of the same name in combine.a"),
        ([], (48, 32), "train/1.png is 32x32 in A but 48x32 in B"),
    ],
)
def test_combine_refuses_unmatched_names_and_sizes(tmp_path, extra_b, size_b, expected):
    write_halves(tmp_path / "A", ["train/1.png"], 0)
    write_halves(tmp_path / "B", ["train/1.png", *extra_b], 255, size_b)
    args = [
        "task=combine",
        f"combine.a={tmp_path / 'A'}",
        f"combine.b={tmp_path / 'B'}",
        f"combine.output={tmp_path / 'AB'}",
    ]
    result = run_launch(args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert pytest.importorskip("re").search(expected, output), output[-2000:]
    assert not (tmp_path / "AB").exists()
