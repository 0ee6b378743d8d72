"""Downloading against a local HTTP server (never the internet), safe extraction, inspect and combine."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2pix.data.download import extract, fetch, verify
from pix2pix.errors import Pix2PixError
from tests.conftest import run_launch


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
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
    httpd.files, httpd.cut_once = {}, set()
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
    assert sorted(p.name for p in data.iterdir()) == ["facades", "facades.tar.gz.sha256"]  # nothing half-done

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


@pytest.mark.parametrize(
    "members,links,reason",
    [
        ({"facades/train/1.jpg": b"x", "facades/../../evil.txt": b"x"}, None, "a '..' path"),
        ({"/tmp/evil.txt": b"x"}, None, "an absolute path"),
        ({"facades/train/1.jpg": b"x"}, {"facades/train/link": "../../../outside"}, "a link to ../../../outside"),
        ({"facades/train/1.jpg": b"x"}, {"facades/etc": "/etc"}, "a link to /etc"),
    ],
)
def test_unsafe_archives_are_refused_whole(tmp_path, members, links, reason):
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(tar_gz(members, links))
    target = tmp_path / "data" / "facades"
    target.parent.mkdir()
    with pytest.raises(Pix2PixError, match=f"refused: member .* is {reason}"):
        extract(archive, target)
    assert list(target.parent.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


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
    assert "corrupt: 4.jpg: corrupt or truncated image" in output
    assert "odd: 5.png: 40x40 is not an aligned A|B pair" in output
    assert "odd: 6.png: L image, converted to RGB" in output
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
