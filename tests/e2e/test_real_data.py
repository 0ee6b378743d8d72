"""Optional checks on the real aligned data in ../shared/data (skipped where it is absent)."""

from __future__ import annotations

import json

import pytest

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
