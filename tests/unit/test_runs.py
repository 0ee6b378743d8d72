"""Finding a trained run from `ckpt=` and the config eval/predict/export take from it (a run folder made
here, no training); the configs' `_target_` names and the allow-list; run locks."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from pix2pix.config.compose import CONF_DIR
from pix2pix.errors import Pix2PixError
from pix2pix.runs import (
    RECORDED_CONFIG,
    RUN_LOCK,
    find_run_files,
    hydra_record_dir,
    locate_checkpoint,
    lock_run,
    open_trained_run,
    recorded_config,
    run_folder_of,
    task_output_dir,
)
from pix2pix.targets import ALLOWED_TARGETS, targets_in
from tests.helpers import TINY


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


def every_target_in_conf() -> set[str]:
    """The `_target_` names the project's own configs use (Hydra's own sweeper nodes aside)."""
    found = set()
    for path in CONF_DIR.rglob("*.yaml"):
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        cfg.pop("hydra", None)
        found |= {target for _, target in targets_in(cfg)}
    return found


def test_every_target_of_the_configs_is_allowed():
    assert every_target_in_conf() <= ALLOWED_TARGETS
    assert ALLOWED_TARGETS - every_target_in_conf() == set()  # the list holds nothing the configs do not use


def test_a_run_recorded_before_the_schedules_moved_still_opens(run_folder, compose_cfg):
    recorded = OmegaConf.load(run_folder / RECORDED_CONFIG)
    recorded.schedule._target_ = "pix2pix.train.schedule.LinearSchedule"  # where it lived until the reshape
    OmegaConf.save(recorded, run_folder / RECORDED_CONFIG)
    cfg = recorded_config(compose_cfg("task=eval"), run_folder, [])
    assert cfg.schedule._target_ == "pix2pix.training.schedule.LinearSchedule"


def test_a_run_folder_never_makes_this_machine_download(run_folder, compose_cfg):
    cfg = OmegaConf.load(run_folder / RECORDED_CONFIG)
    cfg.dataset.download = True
    cfg.dataset.url = "http://attacker.example/facades.tar.gz"
    OmegaConf.save(cfg, run_folder / RECORDED_CONFIG)
    run = open_trained_run(compose_cfg("task=eval", f"ckpt={run_folder}"), [])
    assert run.cfg.dataset.download is False
    asked = ["task=eval", f"ckpt={run_folder}", "dataset.download=true"]
    assert open_trained_run(compose_cfg(*asked), asked).cfg.dataset.download is True  # the user's own choice


def test_the_tools_find_run_files_in_natural_order(tmp_path):
    sweep = tmp_path / "multirun" / "x"
    for job in ("10", "2", "1"):
        (sweep / job).mkdir(parents=True)
        (sweep / job / "metrics.json").write_text("{}")
    (sweep / "metrics.json").write_text("{}")  # the sweep folder's own comes first
    found = find_run_files([sweep], "metrics.json")
    assert [folder.name for folder in found] == ["x", "1", "2", "10"]
    with pytest.raises(Pix2PixError, match="nowhere: no such run, sweep or file"):
        find_run_files([tmp_path / "nowhere"], "metrics.json")


def test_a_lock_file_that_is_a_link_is_never_followed(tmp_path):
    victim = tmp_path / "bashrc"
    victim.write_text("export PATH=...\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RUN_LOCK).symlink_to(victim)
    with pytest.raises(Pix2PixError, match="cannot open the lock file"):
        lock_run(tmp_path / "run")
    assert victim.read_text() == "export PATH=...\n"
