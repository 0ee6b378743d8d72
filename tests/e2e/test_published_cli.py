"""Published weights on the command line: predict, eval and export straight from each publisher's file,
task=convert, fine-tuning with model.init_from, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from pix2pix import checkpoint
from pix2pix.api import load_generator
from pix2pix.weights.published import IMPLIED_META
from tests.helpers import run_launch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "published"
REFERENCE_G = FIXTURES / "unet_256.legacy.pth"  # pytorch-CycleGAN-and-pix2pix's latest_net_G.pth, legacy format
REFERENCE_D = FIXTURES / "basic_d.zip.pth"
MMAGIC = FIXTURES / "unet_256.mmagic.pth"  # G and D
MODELZOO = FIXTURES / "Generator_200.ckpt"
# The fixtures are unet_256 with ngf 2: synthetic 256x256 pairs, a handful.
DATA_256 = [
    "device=cpu",
    "dataset=synthetic",
    "dataset.image_size=256",
    "dataset.num_train=2",
    "dataset.num_val=2",
    "dataset.load_size=256",
    "dataset.crop_size=256",
    "dataset.num_val_samples=1",
    "logging.progress_bar=false",
]


def output_of(result) -> str:
    return result.stdout + result.stderr


def newest_run(cwd: Path) -> Path:
    return max((cwd / "outputs").glob("*/*"), key=lambda p: p.stat().st_mtime)


def test_each_publishers_file_predicts_evaluates_and_exports(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(photos / "a.jpg")
    args = ["task=predict", f"ckpt={REFERENCE_G}", f"predict.input={photos}", "predict.mode=deterministic"]
    result = run_launch([*args, "device=cpu", f"predict.output={tmp_path / 'out'}"], cwd=tmp_path)
    assert result.returncode == 0, output_of(result)[-3000:]
    assert "pytorch-CycleGAN-and-pix2pix's generator, PyTorch legacy, unet_256" in output_of(result)
    assert "model.generator.ngf=2" in output_of(result)
    with Image.open(tmp_path / "out" / "a.png") as image:
        assert image.size == (200, 300)

    result = run_launch(
        ["task=eval", f"ckpt={MODELZOO}", *DATA_256, f"paths.data_dir={tmp_path / 'data'}", "eval.fid=false"], tmp_path
    )
    assert result.returncode == 0, output_of(result)[-3000:]
    assert "MindSpore ModelZoo's generator" in output_of(result) and "use_dropout=false" in output_of(result)
    metrics = json.loads(next(newest_run(tmp_path).rglob("metrics.json")).read_text())
    assert 0 < metrics["l1"] < 2 and metrics["num_images"] == 2

    result = run_launch(["task=export", f"ckpt={MMAGIC}", "export.format=MINDIR", "device=cpu"], cwd=tmp_path)
    assert result.returncode == 0, output_of(result)[-3000:]
    assert "BGR-trained, its first and last layers flipped to RGB" in output_of(result)
    summary = json.loads(next(newest_run(tmp_path).rglob("generator.mindir.json")).read_text())
    assert summary["max_abs_diff"] < 1e-4 and summary["input_shape"] == ["batch", 3, 256, 256]


def test_convert_writes_a_checkpoint_that_translates_like_the_original(tmp_path):
    out = tmp_path / "facades.ckpt"
    args = [
        "task=convert",
        f"convert.input={REFERENCE_G}",
        f"convert.discriminator={REFERENCE_D}",
        f"convert.output={out}",
    ]
    result = run_launch([*args, "device=cpu"], cwd=tmp_path)
    assert result.returncode == 0, output_of(result)[-3000:]
    assert "every tensor read back equal" in output_of(result)
    shapes = checkpoint.read_shapes(out)
    assert shapes["G.down.0.weight"] == (2, 3, 4, 4) and shapes["D.model.0.weight"] == (2, 6, 4, 4)
    assert "model.generator.ngf=2" in checkpoint.read_meta(out)[IMPLIED_META]

    # The converted file carries its config: the API needs no model overrides, and gets the original's output.
    photo = np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    converted = load_generator(out, mode="deterministic", device="cpu")(photo)
    original = load_generator(REFERENCE_G, mode="deterministic", device="cpu")(photo)
    np.testing.assert_array_equal(converted, original)


def test_fine_tuning_starts_a_new_run_from_published_weights(tmp_path):
    small = ["model.generator.ngf=2", "model.discriminator.ndf=2", "schedule.n_epochs=1", "schedule.n_epochs_decay=0"]
    args = [*DATA_256, *small, f"paths.data_dir={tmp_path / 'data'}", f"model.init_from={MMAGIC}"]
    result = run_launch(args, cwd=tmp_path)
    assert result.returncode == 0, output_of(result)[-3000:]
    log = output_of(result)
    assert f"G starts from {MMAGIC} (fresh optimizer)" in log and f"D starts from {MMAGIC}" in log  # both in it
    run = newest_run(tmp_path)
    recorded = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert recorded["model"]["init_from"] == str(MMAGIC)
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_what_cannot_be_read_is_one_line_and_exit_2(tmp_path):
    junk = tmp_path / "latest_net_G.pth"
    junk.write_bytes(b"\x00" * 64)
    cases = [
        (["task=predict", f"ckpt={junk}", "predict.input=x"], "neither a PyTorch file"),
        (["task=train", f"ckpt={REFERENCE_G}"], f"use model.init_from={REFERENCE_G}"),
        (["task=predict", f"ckpt={REFERENCE_D}", "predict.input=x"], "holds a basic discriminator, not a generator"),
        (["model.init_from=missing.pth"], "model.init_from=missing.pth: no such weights file"),
    ]
    for args, expected in cases:
        result = run_launch([*args, "device=cpu"], cwd=tmp_path)
        assert result.returncode == 2, (args, output_of(result)[-2000:])
        assert expected in output_of(result), (args, output_of(result)[-2000:])
        assert "Traceback" not in output_of(result)
