"""Faults a training run must survive, through the command line: NaN losses, too many checkpoints, a disk
that fills up."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pix2pix import checkpoint
from tests.helpers import ROOT, TINY, run_launch


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        *TINY,
        "debug=faults",
        "fault.nan_at_step=6",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={run_dir}",
    ]
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


def user_namespaces_work() -> bool:
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(
    not shutil.which("unshare") or not user_namespaces_work(), reason="needs unshare -Urm (user namespaces)"
)
def test_a_run_on_a_disk_that_fills_up_keeps_its_last_good_checkpoint(tmp_path):
    """A real ENOSPC: the run folder is a 10 MB tmpfs (mounted in a user namespace of this test's own);
    epoch 1's checkpoint (6 MB) fits, epoch 2's new copy does not fit beside it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    run = disk / "run"
    args = [*TINY, "checkpoint.every=0", f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run}"]
    mount_then_run = 'mount -t tmpfs -o size=10m tmpfs "$1" && shift && exec "$@"'
    script = textwrap.dedent("""
        import subprocess, sys
        from pix2pix import checkpoint
        from pathlib import Path
        done = subprocess.run(sys.argv[2:], capture_output=True, text=True)
        print("EXIT", done.returncode)
        print(done.stdout + done.stderr)
        run = Path(sys.argv[1])
        print("EPOCH", int(checkpoint.load(run / "checkpoints" / "last.ckpt")["epoch"].asnumpy()))
        print("LEFT", sorted(p.name for p in (run / "checkpoints").iterdir()))
    """)
    # The checks run inside the namespace too: the tmpfs exists only there.
    inner = ["unshare", "-Urm", "sh", "-c", mount_then_run, "sh", str(disk), sys.executable, "-c", script, str(run)]
    inner += [sys.executable, str(ROOT / "launch.py"), *args]
    result = subprocess.run(inner, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert "EXIT 2" in output, output[-3000:]
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if "writing the checkpoint failed" in line]
    assert "(No space left on device); last.ckpt is unchanged; free space in " + str(run / "checkpoints") in line
    assert "EPOCH 1" in output and "LEFT ['last.ckpt']" in output
