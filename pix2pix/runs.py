"""Trained runs: finding the checkpoint that `ckpt=` names, the run folder around it, and
the config a run recorded, so eval/predict/export use what training used.

No MindSpore here: launch.py checks `ckpt=` with these functions before Hydra starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from pix2pix.errors import Pix2PixError

TRAINED_RUN_TASKS = ("eval", "predict", "export")

# Keys that describe this invocation, not the trained model: they come from the command
# line's config. Everything else (model, dataset, seed, paths, ...) comes from the run.
INVOCATION_KEYS = ("task", "ckpt", "eval", "predict", "export", "device", "parallel", "logging", "fault")
# A resumed training run also keeps its parallel settings (the global batch, steps per epoch),
# unless the command line changes them.
RESUME_INVOCATION_KEYS = tuple(key for key in INVOCATION_KEYS if key != "parallel")

RECORDED_CONFIG = Path(".hydra") / "config.yaml"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def locate_checkpoint(ckpt: str | None, task: str) -> Path:
    """The checkpoint file that `ckpt=` names: a run folder (its checkpoints/last.ckpt) or a file."""
    if not ckpt:
        raise Pix2PixError(
            f"task={task} needs a trained generator: add ckpt=RUN_FOLDER (e.g. ckpt=outputs/2026-11-25/10-00-00) "
            "or ckpt=PATH/TO/FILE.ckpt"
        )
    path = Path(ckpt).expanduser()
    if path.is_dir():
        if (path / LAST_CHECKPOINT).is_file():
            return (path / LAST_CHECKPOINT).absolute()
        raise Pix2PixError(
            f"ckpt={ckpt}: this folder has no {LAST_CHECKPOINT}; point ckpt at a run folder "
            "(outputs/DATE/TIME) or at a .ckpt file"
        )
    if path.is_file():
        return path.absolute()
    raise Pix2PixError(f"ckpt={ckpt}: no such run folder or checkpoint file")


def run_folder_of(checkpoint: Path) -> Path | None:
    """The run folder that holds `checkpoint` (in its checkpoints/) and its recorded config; None for a loose file."""
    folder = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return folder if (folder / RECORDED_CONFIG).is_file() else None


def uses_trained_run(task: str, ckpt: str | None) -> bool:
    """eval/predict/export, and train with ckpt= (a resumed run)."""
    return task in TRAINED_RUN_TASKS or (task == "train" and bool(ckpt))


def _run_folder_or_none(task: str, ckpt: str | None) -> Path | None:
    if not (ckpt and uses_trained_run(task, ckpt)):
        return None
    try:
        return run_folder_of(locate_checkpoint(str(ckpt), task))
    except Pix2PixError:
        return None


def task_output_dir(task: str, ckpt: str | None, default: str) -> str:
    """Hydra's run folder: the run itself when resuming it, `<run>/<task>` for eval/predict/export
    of a run, else `default`.

    Used as a resolver in hydra.run.dir, so it never raises: a bad `ckpt=` is reported by the task.
    """
    folder = _run_folder_or_none(task, ckpt)
    if folder is None:
        return default
    return str(folder if task == "train" else folder / task)


def hydra_record_dir(task: str, ckpt: str | None) -> str:
    """Where Hydra writes its record: `.hydra`, or `.hydra/resume-TIME` when resuming a run (so the
    run's own `.hydra/config.yaml` stays what it trained with)."""
    if task == "train" and _run_folder_or_none(task, ckpt) is not None:
        return f".hydra/resume-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    return ".hydra"


def recorded_config(current: DictConfig, folder: Path, overrides: list[str]) -> DictConfig:
    """The run's recorded config, with this invocation's keys and command-line overrides on top.

    `current` is the config composed from this command line; `overrides` are its key=value and
    group=option items. A group override (`dataset=facades`, `model/generator=unet_128`) replaces
    that whole group; a key override replaces one value.
    """
    path = folder / RECORDED_CONFIG
    try:
        recorded = OmegaConf.load(path)
    except Exception as err:  # yaml and OmegaConf raise several types for a damaged file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise Pix2PixError(
            f"{path}: unreadable run config ({first}); restore it, or pass the checkpoint file itself "
            "with the model config on the command line"
        ) from None
    invocation = RESUME_INVOCATION_KEYS if current.task == "train" else INVOCATION_KEYS
    merged = current.copy()
    with open_dict(merged):
        for key, value in recorded.items():
            if key not in invocation and key != "hydra":
                merged[key] = value
        # Where this invocation writes is Hydra's folder for it, not the training run's.
        merged.paths.output_dir = OmegaConf.to_container(current.paths)["output_dir"]
        for item in overrides:
            key = item.partition("=")[0].lstrip("+~").replace("/", ".")
            if key.split(".")[0] in invocation or key.startswith("hydra"):
                continue
            OmegaConf.update(merged, key, OmegaConf.select(current, key), merge=False, force_add=True)
    return merged


@dataclass(frozen=True)
class TrainedRun:
    """What eval/predict/export work from: the effective config and the checkpoint file."""

    cfg: DictConfig
    checkpoint: Path
    folder: Path | None  # None: a loose checkpoint file, configured by the command line alone


NETWORK_KEYS = ("model.generator", "model.discriminator")


def refuse_network_changes(folder: Path, cfg: DictConfig) -> None:
    """A resumed run keeps the networks its checkpoint holds: any change to them is refused."""
    recorded = OmegaConf.load(folder / RECORDED_CONFIG)
    for key in NETWORK_KEYS:
        before = OmegaConf.to_container(OmegaConf.select(recorded, key), resolve=True)
        after = OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True)
        for name in sorted(set(before) | set(after)):
            if before.get(name) != after.get(name):
                raise Pix2PixError(
                    f"{key}.{name}: {before.get(name)} -> {after.get(name)} changes the networks in the checkpoint; "
                    "a resumed run keeps its model: drop that override, or start a new run"
                )


def open_trained_run(current: DictConfig, overrides: list[str]) -> TrainedRun:
    checkpoint = locate_checkpoint(current.ckpt, current.task)
    folder = run_folder_of(checkpoint)
    cfg = recorded_config(current, folder, overrides) if folder else current
    if folder and current.task == "train":
        refuse_network_changes(folder, cfg)
    return TrainedRun(cfg=cfg, checkpoint=checkpoint, folder=folder)
