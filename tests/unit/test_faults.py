"""Faults a long run must survive, on checkpoint.py and the run folder's writers: a full disk, bad checkpoint
files, pruning the periodic checkpoints."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import mindspore as ms
import numpy as np
import pytest

from pix2pix import checkpoint
from pix2pix.errors import Pix2PixError
from tests.helpers import ROOT


def test_prune_orders_epochs_by_number(tmp_path):
    for epoch in (9, 10, 100, 1000):
        (tmp_path / f"epoch_{epoch:03d}.ckpt").write_bytes(b"x")
    (tmp_path / "last.ckpt").write_bytes(b"x")
    removed = checkpoint.prune(tmp_path, 2)
    assert [p.name for p in removed] == ["epoch_009.ckpt", "epoch_010.ckpt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_100.ckpt", "epoch_1000.ckpt", "last.ckpt"]


DISK_LIMIT = """
    import resource, signal, sys
    from pathlib import Path
    import mindspore as ms, numpy as np
    from pix2pix.errors import Pix2PixError
    from pix2pix import checkpoint

    path = Path(sys.argv[1])
    state = {"w": ms.Parameter(ms.Tensor(np.full((1000, 1000), 2.0, np.float32)), name="w")}
    # A real file-system limit: writes past 1 MiB fail with EFBIG (SIGXFSZ ignored, as a daemon would).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    try:
        checkpoint.save(path, state, {"epoch": 2})
    except Pix2PixError as err:
        print("REFUSED", err)
"""


def test_a_full_disk_leaves_the_previous_checkpoint_valid(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    small = {"w": ms.Parameter(ms.Tensor(np.ones((10, 10), np.float32)), name="w")}
    checkpoint.save(path, small, {"epoch": 1})
    before = path.read_bytes()
    script = textwrap.dedent(DISK_LIMIT)
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert "REFUSED" in result.stdout, result.stdout + result.stderr[-2000:]
    assert f"{path}: writing the checkpoint failed (File too large)" in result.stdout
    assert "last.ckpt is unchanged" in result.stdout
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    assert int(checkpoint.load(path)["epoch"].asnumpy()) == 1


@pytest.mark.parametrize("content", ["empty", "truncated", "foreign"])
def test_bad_checkpoint_files_are_refused_with_one_line(tmp_path, content):
    good = tmp_path / "good.ckpt"
    checkpoint.save(good, {"w": ms.Parameter(ms.Tensor(np.ones((64, 64), np.float32)), name="w")}, {"epoch": 1})
    bad = tmp_path / f"{content}.ckpt"
    data = {"empty": b"", "truncated": good.read_bytes()[:-100], "foreign": b"\x89PNG\r\n\x1a\n" + bytes(500)}
    bad.write_bytes(data[content])
    with pytest.raises(Pix2PixError, match=f"{bad}: not a readable pix2pix checkpoint") as err:
        checkpoint.load(bad)
    assert "\n" not in str(err.value)


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
    from pix2pix.models.generator import UnetGenerator

    other = tmp_path / "other.ckpt"
    checkpoint.save(other, {"w": ms.Parameter(ms.Tensor(np.ones((4, 4), np.float32)), name="w")}, {"epoch": 1})
    with pytest.raises(Pix2PixError, match="lacks .* entries this model needs"):
        checkpoint.restore_generator(UnetGenerator(num_downs=5, ngf=4), other)


EVERY_WRITER = """
    import resource, signal, sys
    from pathlib import Path
    import numpy as np
    from PIL import Image
    from pix2pix.errors import Pix2PixError
    from pix2pix.track.files import save_image, write_text
    from pix2pix.track.tensorboard import RunWriter

    def images_then_flush(writer, image):
        for step in range(4):
            writer.image("samples", image, step)
        writer.flush()

    run = Path(sys.argv[1])
    big = "x" * (2 << 20)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8))
    writes = {
        "metrics.json": lambda: write_text(run / "metrics.json", big),
        "samples": lambda: save_image(run / "samples" / "epoch_002.png", noise, format="PNG"),
        "eval output": lambda: write_text(run / "eval" / "val" / "metrics.csv", big),
        "tensorboard": lambda: images_then_flush(writer, np.asarray(noise)),
    }
    writer = RunWriter(run / "tensorboard")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a real file-size limit: writes past 1 MiB fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    for name, write in writes.items():
        try:
            write()
            print(name, "WRITTEN")
        except Pix2PixError as err:
            print(name, "REFUSED", err)
"""


def test_a_full_disk_anywhere_in_the_run_folder_is_one_line_and_loses_nothing(tmp_path):
    run = tmp_path / "run"
    (run / "eval" / "val").mkdir(parents=True)
    (run / "metrics.json").write_text('{"val_L1": 0.2}\n')  # what an earlier write left: it must stay
    (run / "eval" / "val" / "metrics.csv").write_text("image,l1\n")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EVERY_WRITER), str(run)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr[-3000:]
    lines = dict(line.split(" REFUSED ", 1) for line in result.stdout.splitlines() if " REFUSED " in line)
    assert sorted(lines) == ["eval output", "metrics.json", "samples", "tensorboard"], result.stdout
    for name, folder in (("metrics.json", run), ("samples", run / "samples"), ("eval output", run / "eval" / "val")):
        assert "failed (File too large)" in lines[name] and f"free space in {folder} " in lines[name], lines[name]
    assert f"{run / 'tensorboard'}: writing TensorBoard events failed (File too large)" in lines["tensorboard"]
    assert (run / "metrics.json").read_text() == '{"val_L1": 0.2}\n'
    assert (run / "eval" / "val" / "metrics.csv").read_text() == "image,l1\n"
    assert not [p for p in run.rglob("*") if ".partial-" in p.name]  # no temporary file left anywhere


def test_reading_a_damaged_checkpoints_scalars_is_one_error_never_a_crash(tmp_path):
    """read_meta runs before Hydra starts (does a resume fork?): on any damaged file, one Pix2PixError."""
    good = tmp_path / "good.ckpt"
    state = {"w": ms.Parameter(ms.Tensor(np.ones((4, 4), np.float32)), name="w")}
    checkpoint.save(good, state, {"epoch": 3, "global_step": 12, "train_files": "4 files, sha256 abc"})
    assert checkpoint.read_meta(good) == {"epoch": 3, "global_step": 12, "train_files": "4 files, sha256 abc"}
    data = good.read_bytes()
    rng = np.random.default_rng(0)
    damaged = tmp_path / "damaged.ckpt"
    for _ in range(400):
        broken = bytearray(data[: int(rng.integers(0, len(data) + 1))])
        for at in rng.integers(0, max(1, len(broken)), int(rng.integers(1, 6))):
            if broken:
                broken[at] = int(rng.integers(0, 256))
        damaged.write_bytes(bytes(broken))
        try:
            checkpoint.read_meta(damaged)
        except Pix2PixError as err:
            assert str(err).startswith(f"{damaged}: not a readable pix2pix checkpoint")
