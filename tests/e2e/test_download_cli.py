"""The download, inspect and combine tasks through the command line, downloading from a local HTTP server
(never the internet)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT, facades_like, jpeg_pair, run_launch, tar_gz


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
