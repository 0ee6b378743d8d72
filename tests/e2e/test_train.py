"""End to end through the command line: a tiny run leaves every output; bad input gets one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pix2pix import checkpoint
from tests.helpers import TINY, run_launch

STEPS_PER_EPOCH, EPOCHS = 4, 2  # TINY: 4 synthetic pairs, batch 1, 1 + 1 epochs


def test_run_folder_has_every_output(trained_run):
    run_dir = trained_run
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "launch.log",
        "metrics.json",
        "checkpoints/last.ckpt",
        "checkpoints/epoch_001.ckpt",
        "checkpoints/epoch_002.ckpt",
        "samples/epoch_001.png",
        "samples/epoch_002.png",
    ):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.rglob("*partial*")), "a temporary file was left behind"


def test_log_has_one_line_per_epoch_and_the_l1_before_and_after(trained_run):
    run_dir = trained_run
    log = (run_dir / "launch.log").read_text()
    epoch_lines = [line for line in log.splitlines() if " - epoch " in line]
    assert len(epoch_lines) == EPOCHS
    for line in epoch_lines:
        for field in ("loss_D_real", "loss_D_fake", "loss_G_GAN", "loss_G_L1", "lr ", "ms/step", "img/s", "elapsed"):
            assert field in line, field
    assert "validation L1 of the generator before training" in log
    assert "validation L1 of the trained generator" in log
    assert "device: cpu" in log
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["val_L1"] < 2 and 0 < metrics["val_L1_before"] < 2


def test_sample_grid_rows_are_input_generated_target(trained_run):
    run_dir = trained_run
    with Image.open(run_dir / "samples/epoch_002.png") as img:
        assert img.size == (3 * 64, 2 * 64)  # 3 columns, num_val_samples=2 rows, crop 64
        grid = np.asarray(img.convert("RGB"), dtype=np.float32)
    label_map, generated, target = grid[:64, :64], grid[:64, 64:128], grid[:64, 128:]
    assert np.abs(label_map - target).mean() > 10 and generated.std() > 0


def test_checkpoint_holds_both_networks_both_optimizers_and_the_epoch(trained_run):
    run_dir = trained_run
    last = checkpoint.load(run_dir / "checkpoints/last.ckpt")
    first = checkpoint.load(run_dir / "checkpoints/epoch_001.ckpt")
    assert int(last["epoch"].asnumpy()) == 2 and int(first["epoch"].asnumpy()) == 1
    for prefix in ("G.", "D.", "optimizer_G.moment1.", "optimizer_G.moment2.", "optimizer_D.moment1."):
        assert any(name.startswith(prefix) for name in last), prefix
    assert "G.down.1.2.moving_mean" in last  # BatchNorm running statistics too
    # The linear schedule's per-epoch lr reached the optimizers: epoch 1 at 2e-4, epoch 2 at 2e-4 * (1 - 1/2).
    for ckpt, lr in ((first, 2e-4), (last, 1e-4)):
        for opt in ("optimizer_G", "optimizer_D"):
            assert float(ckpt[f"{opt}.learning_rate"].asnumpy()) == pytest.approx(lr, rel=1e-6)
    assert int(last["optimizer_G.global_step"].asnumpy()) == STEPS_PER_EPOCH * EPOCHS


def test_truncated_checkpoint_is_refused_with_its_name(trained_run, tmp_path):
    run_dir = trained_run
    data = (run_dir / "checkpoints/last.ckpt").read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception, match=f"{cut}: not a readable pix2pix checkpoint"):
        checkpoint.load(cut)


def test_tensorboard_events_read_back(trained_run):
    run_dir = trained_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    for name in ("loss_D_real", "loss_D_fake", "loss_G_GAN", "loss_G_L1", "step_time_ms"):
        points = events.Scalars(name)
        assert [p.step for p in points] == list(range(1, STEPS_PER_EPOCH * EPOCHS + 1)), name
        assert all(np.isfinite(p.value) for p in points)
    assert [round(p.value, 8) for p in events.Scalars("lr")] == [2e-4, 1e-4]
    assert len(events.Images("samples")) == EPOCHS
    assert "config/text_summary" in tags["tensors"]
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "lambda_L1: 100.0" in config_text
    assert events.PluginTagToContent("hparams"), "no hparams summary"
    assert [p.value for p in events.Scalars("hparams/val_L1")] == pytest.approx(
        [json.loads((run_dir / "metrics.json").read_text())["val_L1"]]
    )


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["dataset=facade"],
            "dataset=facade: no such option; choose one of cityscapes, edges2handbags, edges2shoes, facades",
        ),
        (["model.lamda_L1=3"], "'model.lamda_L1' is not a config key"),
        (["dataset.crop_size=512"], "dataset.crop_size=512 is larger than dataset.load_size=286"),
        (["dataset.crop_size=128"], "dataset.crop_size must be a multiple of 256"),
        (["dataset=facades"], "dataset=facades: no data in {data}/facades; download it first with"),
        (["dataset=folder", "dataset.root={data}/empty"], "no images"),
        (["device=gpu"], "device=gpu is not available: CUDA_HOME is not set"),
        (["device=ascend"], "device=ascend is not available: the CANN environment is not set up"),
    ],
)
def test_bad_input_gets_one_line_and_a_nonzero_exit(trained_run, args, expected):
    run_dir, work = trained_run, trained_run.parent
    before = snapshot(run_dir)
    data = work / "data"
    (data / "empty" / "train").mkdir(parents=True, exist_ok=True)
    args = [a.format(data=data) for a in args]
    result = run_launch([*args, f"paths.data_dir={data}"], cwd=work)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert expected.format(data=data) in output
    assert "Traceback" not in output and "C++ Call Stack" not in output
    message_lines = [line for line in output.splitlines() if expected.format(data=data) in line]
    assert len(message_lines) == 1
    assert snapshot(run_dir) == before, "an earlier run folder changed"


def test_corrupt_jpeg_in_a_folder_dataset_is_named(tmp_path):
    root = tmp_path / "pairs"
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        Image.new("RGB", (64, 32), "white").save(root / split / "1.jpg")
    good = (root / "train" / "1.jpg").read_bytes()
    (root / "train" / "2.jpg").write_bytes(good[: len(good) // 3])
    result = run_launch(["dataset=folder", f"dataset.root={root}", "device=cpu"], cwd=tmp_path)
    assert result.returncode == 2
    assert f"{root / 'train' / '2.jpg'}: corrupt, truncated or not an image" in result.stdout + result.stderr


@pytest.mark.slow
def test_default_quick_run_learns(tmp_path):
    """`python launch.py` with no arguments: synthetic data, unet_256, 5 short epochs (about 3-4 minutes)."""
    result = run_launch([], cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_L1"] < 0.7 * metrics["val_L1_before"], metrics


def test_same_seed_same_run_other_seed_other_run(trained_run, tmp_path):
    run_dir, work = trained_run, trained_run.parent
    first = json.loads((run_dir / "metrics.json").read_text())
    for seed, same in ((0, True), (1, False)):
        again = tmp_path / f"seed{seed}"
        result = run_launch([*TINY, f"seed={seed}", f"paths.data_dir={work / 'data'}", f"hydra.run.dir={again}"], work)
        assert result.returncode == 0, result.stdout[-2000:]
        metrics = json.loads((again / "metrics.json").read_text())
        # Init, data order, jitter and dropout come from the seed; CPU kernels add float noise only.
        assert (metrics["val_L1_before"] == first["val_L1_before"]) is same
        if same:
            assert metrics["val_L1"] == pytest.approx(first["val_L1"], abs=1e-3)


def test_pynative_mode_trains_like_graph_mode(trained_run, tmp_path):
    """The same run eagerly (PyNative) and compiled (GRAPH_MODE) ends at the same validation L1."""
    run_dir, work = trained_run, trained_run.parent
    eager = tmp_path / "eager"
    result = run_launch(
        [*TINY, "device.mode=pynative", f"paths.data_dir={work / 'data'}", f"hydra.run.dir={eager}"], work
    )
    assert result.returncode == 0, result.stdout[-2000:]
    graph_l1 = json.loads((run_dir / "metrics.json").read_text())["val_L1"]
    assert json.loads((eager / "metrics.json").read_text())["val_L1"] == pytest.approx(graph_l1, abs=1e-3)


def test_checkpoint_restores_into_a_fresh_step(trained_run, compose_cfg):
    """checkpoint.restore fills every parameter, running stat and Adam slot; a wrong shape is refused."""
    from hydra.utils import instantiate

    from pix2pix.errors import Pix2PixError
    from pix2pix.training.step import Pix2PixTrainStep

    run_dir = trained_run

    def fresh_step(*extra: str) -> Pix2PixTrainStep:
        cfg = compose_cfg(*TINY, *extra)
        gen, disc = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
        adam = instantiate(cfg.optimizer)
        return Pix2PixTrainStep(gen, disc, adam(gen.trainable_params()), adam(disc.trainable_params()))

    path = run_dir / "checkpoints/last.ckpt"
    loaded = checkpoint.load(path)
    state = checkpoint.training_state(fresh_step())
    checkpoint.restore(state, loaded, path)
    for name, param in state.items():
        np.testing.assert_array_equal(param.asnumpy(), loaded[name].asnumpy(), err_msg=name)
    with pytest.raises(Pix2PixError, match="has shape"):
        checkpoint.restore(checkpoint.training_state(fresh_step("model.generator.ngf=16")), loaded, path)
