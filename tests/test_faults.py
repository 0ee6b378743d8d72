"""Faults a long run must survive: NaN losses, a full disk, bad checkpoint files, too many checkpoints."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import mindspore as ms
import numpy as np
import pytest

from pix2pix.errors import Pix2PixError
from pix2pix.train import checkpoint
from tests.conftest import ROOT, TINY, run_launch


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, "fault.nan_at_step=6", f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run_dir}"]
    result = run_launch(args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    (line,) = [line for line in output.splitlines() if "is nan at epoch 2, step 2 (global step 6)" in line]
    assert "loss_" in line and f"the last good checkpoint is {run_dir / 'checkpoints' / 'last.ckpt'} (epoch 1)" in line
    assert "Traceback" not in output
    last = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    assert int(last["epoch"].asnumpy()) == 1
    assert all(np.isfinite(value.asnumpy()).all() for name, value in last.items() if name.startswith(("G.", "D.")))
    assert not (run_dir / "checkpoints" / "epoch_002.ckpt").exists()


def test_keep_last_keeps_only_the_newest_periodic_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, "schedule.n_epochs=3", "schedule.n_epochs_decay=0", "checkpoint.keep_last=2"]
    result = run_launch([*args, f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["epoch_002.ckpt", "epoch_003.ckpt", "last.ckpt"]
    assert "removed epoch_001.ckpt (checkpoint.keep_last=2)" in (run_dir / "launch.log").read_text()


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
    from pix2pix.train import checkpoint

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
