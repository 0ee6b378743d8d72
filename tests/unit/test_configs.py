"""Composition of every group option and the config keys users type."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pix2pix.config.checks import check_overrides
from pix2pix.config.compose import CONF_DIR, group_options
from pix2pix.errors import Pix2PixError
from pix2pix.tools.report import published_figures

GROUPS = ["dataset", "device", "parallel", "model/generator", "model/discriminator", "schedule", "optimizer"]


@pytest.mark.parametrize("group,option", [(group, option) for group in GROUPS for option in group_options(group)])
def test_every_group_option_composes(compose_cfg, group, option):
    extra = ["dataset.root=/tmp/anywhere"] if (group, option) == ("dataset", "folder") else []
    cfg = compose_cfg(f"{group}={option}", *extra)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    node = resolved
    for part in group.split("/"):
        node = node[part]
    assert node, f"{group}={option} composed to an empty node"


def test_groups_hold_the_options_the_issue_names():
    assert set(group_options("dataset")) >= {"synthetic", "facades", "maps", "folder"}
    assert set(group_options("device")) == {"auto", "cpu", "gpu", "ascend"}
    assert "single" in group_options("parallel")
    assert set(group_options("model/generator")) == {
        "unet_512",
        "unet_256",
        "unet_128",
        "resnet_9blocks",
        "resnet_6blocks",
    }
    assert set(group_options("model/discriminator")) == {"basic", "n_layers", "pixel"}
    assert set(group_options("schedule")) == {"linear", "step", "cosine"}


# The ModelZoo README's "Script Parameters" (and the issue's fixed names) with their defaults.
MODELZOO_DEFAULTS = {
    "device.target": "auto",  # device_target: the ModelZoo had only Ascend; we probe
    "parallel.device_num": 1,
    "device.device_id": 0,
    "device.save_graphs": False,
    "model.init_type": "normal",
    "model.init_gain": 0.02,
    "dataset.load_size": 286,
    "dataset.crop_size": 256,
    "dataset.batch_size": 1,
    "model.lambda_D": 0.5,
    "model.lambda_GAN": 1.0,
    "model.lambda_L1": 100.0,
    "optimizer.beta1": 0.5,
    "optimizer.beta2": 0.999,
    "optimizer.learning_rate": 0.0002,
    "schedule.n_epochs": 100,
    "schedule.n_epochs_decay": 100,
    "schedule.epoch_num": 200,
    "dataset.dataset_size": 400,
    "dataset.train_data_dir": None,
    "dataset.val_data_dir": None,
    "ckpt": None,
    "model.generator.ngf": 64,
    "model.discriminator.ndf": 64,
    "model.gan_mode": "vanilla",
    "model.pad_mode": "CONSTANT",
    "dataset.direction": "BtoA",
    "seed": 0,
    "task": "train",
}


def test_modelzoo_parameters_are_keys_with_their_defaults(compose_cfg):
    cfg = compose_cfg("dataset=facades")
    for key, default in MODELZOO_DEFAULTS.items():
        assert OmegaConf.select(cfg, key, throw_on_missing=True) == default, key
    assert OmegaConf.to_container(cfg.dataset, resolve=True)["root"].endswith("/facades")


def test_default_is_the_quick_synthetic_run(compose_cfg):
    cfg = compose_cfg()
    assert cfg.dataset.name == "synthetic" and cfg.device.target == "auto" and cfg.task == "train"
    assert cfg.schedule.n_epochs + cfg.schedule.n_epochs_decay == 5
    assert cfg.model.generator.num_downs == 8 and cfg.model.discriminator.n_layers == 3


@pytest.mark.parametrize("dataset,direction,val_split", [("facades", "BtoA", "test"), ("maps", "AtoB", "val")])
def test_real_datasets_keep_the_paper_schedule(compose_cfg, dataset, direction, val_split):
    cfg = compose_cfg(f"dataset={dataset}")
    assert (cfg.schedule.n_epochs, cfg.schedule.n_epochs_decay) == (100, 100)
    assert cfg.dataset.direction == direction and cfg.dataset.val_split == val_split


@pytest.mark.parametrize("dataset", ["synthetic", "facades", "maps", "folder"])
def test_dataset_root_overrides_every_dataset(compose_cfg, tmp_path, dataset):
    data = instantiate(compose_cfg(f"dataset={dataset}", "dataset.root=/srv/pairs").dataset)
    assert str(data.train_dir).startswith("/srv/pairs") and str(data.val_dir).startswith("/srv/pairs")


def test_objects_come_from_targets(compose_cfg):
    cfg = compose_cfg("schedule=step")
    schedule = instantiate(cfg.schedule)
    assert type(schedule).__name__ == "StepSchedule" and schedule.total_epochs == 5  # synthetic: 3 + 2
    partial = instantiate(cfg.optimizer)
    assert partial.func.__name__ == "Adam" and partial.keywords["beta1"] == 0.5


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ["dataset=facade"],
            "dataset=facade: no such option; choose one of cityscapes, edges2handbags, edges2shoes, facades",
        ),
        (["model/generator=unet_1024"], "model/generator=unet_1024: no such option"),
        (["model.lamda_L1=10"], "'model.lamda_L1' is not a config key"),
        (
            ["model.generator=unet_128"],
            "model.generator is a config group; choose its option with model/generator=unet_128",
        ),
        (["dataset.crop_size=abc"], "dataset.crop_size=abc: use a positive integer (a square) or [height, width]"),
        (["model.lambda_L1=lots"], "model.lambda_L1 must be a number (default 100.0)"),
        (["dataset.flip=maybe"], "dataset.flip must be true or false"),
        (["dataset.crop_size=300"], "dataset.crop_size=300 is larger than dataset.load_size=286"),
        (["dataset.crop_size=192"], "dataset.crop_size must be a multiple of 256"),
        (
            [
                "model/discriminator=n_layers",
                "model.discriminator.n_layers=5",
                "dataset.crop_size=64",
                "model/generator=resnet_6blocks",
            ],
            "n_layers=5 needs both sides of dataset.crop_size >= 96",
        ),
        (["dataset=folder"], "dataset.root must be set: add dataset.root=VALUE"),
        (["parallel.device_num=3", "parallel.nodes=2"], "parallel.device_num=3 does not divide over parallel.nodes=2"),
        (["parallel=8pcs", "parallel.nodes=2"], "parallel.nodes=2: set parallel.master_port"),
        (["optimized_metric=loss"], "optimized_metric=loss: use one of val_L1, val_psnr, val_ssim, val_fid"),
        (["optimized_metric=val_fid"], "optimized_metric=val_fid: the run computes FID only with val.fid=true"),
        (["val.every=-1"], "val.every=-1: use 0 (off) or more"),
        (["fid.batch_size=0"], "fid.batch_size=0: use 1 or more"),
        (["hydra/launcher=joblb"], "come with the sweep extra: pip install -e '.[sweep]'"),
        # typed by the schemas (pix2pix/config/schema.py), refused by Hydra while composing
        (["task=eval", "eval.num_images=all"], "eval.num_images must be an integer or null (default null)"),
        (["parallel.master_port=abc"], "parallel.master_port must be an integer or null"),
        # a key another option brings
        (["task=predict", "eval.mode=deterministic"], "eval.mode: a key of task=eval only, and this command line"),
        (["fault.kill_at_step=3"], "the fault.* keys (the tests' fault injection) come with debug=faults"),
        (["dataset.flip=yes"], "dataset.flip=yes: dataset.flip must be true or false"),  # not converted to true
        (["parallel.sync_bn=1"], "parallel.sync_bn must be true or false"),
        (['dataset.crop_size="256"'], "dataset.crop_size=256: use a positive integer (a square) or [height, width]"),
        (["task=eval", "eval.num_imgs=3"], "'eval.num_imgs' is not a config key; check its spelling"),
        (["model.lamda_L1=10", "task=predict"], "'model.lamda_L1' is not a config key"),
        (["task=evaluate"], "task=evaluate: no such task; use one of train, eval, predict, export, convert, benchmark"),
    ],
)
def test_bad_command_lines_get_one_line(overrides, expected):
    with pytest.raises(Pix2PixError) as err:
        check_overrides(overrides, CONF_DIR)
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_every_task_is_an_option_and_a_function(compose_cfg):
    from pix2pix.choices import TASKS
    from pix2pix.tasks import REGISTRY, task_function

    assert tuple(REGISTRY) == TASKS and set(group_options("task")) == set(TASKS)
    for task in TASKS:
        assert compose_cfg(f"task={task}").task == task and callable(task_function(task))


def test_each_task_brings_its_own_keys(compose_cfg):
    assert {"checkpoint", "val"} <= set(compose_cfg()) and "eval" not in compose_cfg()
    assert "eval" in compose_cfg("task=eval") and "checkpoint" not in compose_cfg("task=eval")
    assert compose_cfg("task=predict").predict.mode == "paper" and "fault" not in compose_cfg()
    assert compose_cfg("debug=faults").fault.kill_at_step is None


def test_good_command_line_passes():
    check_overrides(["dataset=maps", "model.lambda_L1=10", "device=cpu"], CONF_DIR)
    check_overrides(["task=benchmark", "experiment=maps_gpu_8pcs", "device=cpu"], CONF_DIR)
    check_overrides(["parallel=8pcs", "parallel.nodes=2", "parallel.master_port=8118"], CONF_DIR)
    check_overrides(["val.fid=true", "val.every=10", "optimized_metric=val_fid"], CONF_DIR)


def test_eval_fid_is_auto_true_or_false(compose_cfg):
    from pix2pix.config.checks import validate

    for value in ("maybe", "0"):  # 0 == False in Python, but not a choice
        with pytest.raises(Pix2PixError, match=f"eval.fid={value}: use one of auto, true, false"):
            validate(compose_cfg("task=eval", f"eval.fid={value}"))
    for value in ("auto", "true", "false"):
        validate(compose_cfg("task=eval", f"eval.fid={value}", "fid.weights=/opt/default_1.pt", "fid.cache=false"))


PUBLISHED_KEYS = {"table", "column", "dataset", "resource", "mindspore_version", "devices", "ms_per_step"}


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_experiment_is_a_modelzoo_row(compose_cfg, experiment):
    cfg = compose_cfg(f"experiment={experiment}")
    dataset, backend, devices = experiment.split("_")
    pub = published_figures()[experiment]
    assert PUBLISHED_KEYS <= set(pub) and pub["dataset"] == dataset == cfg.dataset.name
    assert cfg.device.target == backend and cfg.parallel.device_num == pub["devices"] == int(devices[0])
    assert cfg.schedule.epoch_num == 200 and cfg.dataset.batch_size == 1 and cfg.optimizer.learning_rate == 2e-4
    assert cfg.model.pad_mode == ("REFLECT" if backend == "gpu" else "CONSTANT")  # as each published row


def test_the_readme_rows_are_all_there():
    assert set(group_options("experiment")) == {
        f"{d}_{b}_{n}" for d in ("facades", "maps") for b in ("ascend", "gpu") for n in ("1pc", "8pcs")
    }
    assert set(published_figures()) == set(group_options("experiment"))  # one published entry per row


def test_optuna_search_composes_with_its_sweeper():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hparams_search=lambda_l1_optuna"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "minimize"
    assert set(cfg.hydra.sweeper.params) == {"model.lambda_L1", "optimizer.learning_rate"}
    assert cfg.optimized_metric == "val_L1"
