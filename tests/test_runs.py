"""Finding a trained run from `ckpt=` and the config eval/predict/export take from it."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from pix2pix.errors import Pix2PixError
from pix2pix.runs import (
    hydra_record_dir,
    locate_checkpoint,
    open_trained_run,
    recorded_config,
    run_folder_of,
    task_output_dir,
)
from tests.conftest import TINY


@pytest.fixture
def run_folder(tmp_path, compose_cfg):
    """A run folder as training leaves it: .hydra/config.yaml (unresolved, as Hydra saves it) and a checkpoint."""
    folder = tmp_path / "outputs" / "2026-11-25" / "10-00-00"
    (folder / ".hydra").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    OmegaConf.save(compose_cfg(*TINY, "seed=3", "model.lambda_L1=10"), folder / ".hydra" / "config.yaml")
    return folder


def test_ckpt_names_a_run_folder_or_a_file(run_folder, tmp_path):
    last = run_folder / "checkpoints" / "last.ckpt"
    assert locate_checkpoint(str(run_folder), "eval") == last
    assert locate_checkpoint(str(last), "eval") == last
    assert run_folder_of(last) == run_folder
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes(b"x")
    assert run_folder_of(loose) is None


@pytest.mark.parametrize(
    "ckpt,message",
    [
        (None, "task=eval needs a trained generator: add ckpt=RUN_FOLDER"),
        ("{tmp}/nowhere", "no such run folder or checkpoint file"),
        ("{tmp}/outputs", "this folder has no checkpoints/last.ckpt"),
    ],
)
def test_a_bad_ckpt_is_one_clear_error(run_folder, tmp_path, ckpt, message):
    with pytest.raises(Pix2PixError, match=message):
        locate_checkpoint(ckpt.format(tmp=tmp_path) if ckpt else None, "eval")


def test_hydra_folder_of_a_task_on_a_run(run_folder):
    assert task_output_dir("eval", str(run_folder), "outputs/x") == str(run_folder / "eval")
    assert task_output_dir("export", str(run_folder / "checkpoints/last.ckpt"), "outputs/x") == str(
        run_folder / "export"
    )
    assert task_output_dir("train", str(run_folder), "outputs/x") == str(run_folder)  # a resumed run
    assert task_output_dir("train", None, "outputs/x") == "outputs/x"
    assert hydra_record_dir("train", str(run_folder)).startswith(".hydra/resume-")
    assert hydra_record_dir("eval", str(run_folder)) == hydra_record_dir("train", None) == ".hydra"
    assert task_output_dir("eval", "/no/such/run", "outputs/x") == "outputs/x"


def test_the_recorded_config_is_used_and_command_line_overrides_still_apply(run_folder, compose_cfg):
    overrides = [
        "task=eval",
        f"ckpt={run_folder}",
        "device=cpu",
        "seed=7",
        "model/generator=unet_128",
        "eval.mode=deterministic",
    ]
    run = open_trained_run(compose_cfg(*overrides), overrides)
    cfg = run.cfg
    assert run.folder == run_folder and run.checkpoint == run_folder / "checkpoints" / "last.ckpt"
    # From the run: what the model and data were.
    assert cfg.model.lambda_L1 == 10
    assert cfg.dataset.crop_size == 64 and cfg.dataset.image_size == 64
    assert cfg.model.discriminator.ndf == 8
    # From the command line: the task's own keys, a value and a whole group.
    assert cfg.task == "eval" and cfg.eval.mode == "deterministic" and cfg.device.target == "cpu"
    assert cfg.seed == 7 and cfg.dataset.seed == 7  # interpolations follow the override
    assert cfg.model.generator.num_downs == 7 and cfg.model.generator.ngf == 64


def test_a_damaged_recorded_config_is_named(run_folder, compose_cfg):
    (run_folder / ".hydra" / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(Pix2PixError, match="config.yaml: unreadable run config"):
        recorded_config(compose_cfg("task=eval"), run_folder, [])
