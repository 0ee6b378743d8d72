"""Trained runs: finding the checkpoint that `ckpt=` names, the run folder around it, and
the config a run recorded, so eval/predict/export use what training used.

No MindSpore here: launch.py checks `ckpt=` with these functions before Hydra starts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from pix2pix.checkpoint import read_meta, read_resume_point
from pix2pix.choices import TRAINED_RUN_TASKS
from pix2pix.errors import Pix2PixError
from pix2pix.parallel.env import env_rank, launcher
from pix2pix.parallel.lifeline import LAUNCHER_PID
from pix2pix.targets import load_config
from pix2pix.track.files import natural_key
from pix2pix.track.locks import FileLock
from pix2pix.weights.published import IMPLIED_META, is_ours

# Keys that describe this invocation, not the trained model: they come from the command
# line's config. Everything else (model, dataset, seed, paths, ...) comes from the run.
INVOCATION_KEYS = ("task", "ckpt", "eval", "predict", "export", "device", "parallel", "logging", "fault", "data", "fid")
# A resumed training run also keeps its parallel settings (the global batch, steps per epoch),
# unless the command line changes them.
RESUME_INVOCATION_KEYS = tuple(key for key in INVOCATION_KEYS if key != "parallel")

# Never from a run folder: whether this machine downloads anything is this invocation's to say.
INVOCATION_DATASET_KEYS = ("download",)

RECORDED_CONFIG = Path(".hydra") / "config.yaml"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
RUN_LOCK = ".run.lock"  # held by the process that trains in a run folder


def override_key(item: str) -> str:
    """The key a command-line item sets: `model.norm` of `+model.norm=x`, `model/generator` of a group choice."""
    return item.partition("=")[0].lstrip("+~")


def locate_checkpoint(ckpt: str | None, task: str, key: str = "ckpt") -> Path:
    """The checkpoint file that `ckpt=` (or `key`) names: a run folder (its checkpoints/last.ckpt) or a file."""
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
            f"{key}={ckpt}: this folder has no {LAST_CHECKPOINT}; point {key} at a run folder "
            "(outputs/DATE/TIME) or at a .ckpt file"
        )
    if path.is_file():
        return path.absolute()
    raise Pix2PixError(f"{key}={ckpt}: no such run folder or checkpoint file")


def run_folder_of(checkpoint: Path) -> Path | None:
    """The run folder that holds `checkpoint` (in its checkpoints/) and its recorded config; None for a loose file."""
    folder = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return folder if (folder / RECORDED_CONFIG).is_file() else None


def uses_trained_run(task: str, ckpt: str | None) -> bool:
    """eval/predict/export, and train with ckpt= (a resumed run)."""
    return task in TRAINED_RUN_TASKS or (task == "train" and bool(ckpt))


def continues_in_place(checkpoint: Path, folder: Path) -> bool:
    """Whether a resume from `checkpoint` continues in its run folder. Not when the run's last.ckpt is
    further on (an older epoch_NNN.ckpt): continuing there would overwrite the run's later checkpoints,
    TensorBoard points and metrics, so such a resume forks into a new run folder instead."""
    last = folder / LAST_CHECKPOINT
    try:
        if not last.is_file() or last.samefile(checkpoint):
            return True
    except OSError as err:
        raise Pix2PixError(f"{checkpoint}: cannot be read ({err.strerror})") from None
    return read_resume_point(checkpoint).global_step >= read_resume_point(last).global_step


def _run_folder_or_none(task: str, ckpt: str | None) -> Path | None:
    """The run folder of eval/predict/export, or the one a resume continues in (None: a fork, a loose
    file, or no run at all)."""
    if not (ckpt and uses_trained_run(task, ckpt)):
        return None
    try:
        checkpoint = locate_checkpoint(str(ckpt), task)
        folder = run_folder_of(checkpoint)
        if folder is not None and task == "train" and not continues_in_place(checkpoint, folder):
            return None
        return folder
    except Pix2PixError:
        return None


def task_output_dir(task: str, ckpt: str | None, default: str) -> str:
    """Hydra's run folder: the run itself when resuming it, `<run>/<task>` for eval/predict/export
    of a run, else `default` (also for a resume that forks).

    Used as a resolver in hydra.run.dir, so it never raises: a bad `ckpt=` is reported by the task.
    """
    folder = _run_folder_or_none(task, ckpt)
    if folder is None:
        return default
    return str(folder if task == "train" else folder / task)


def hydra_record_dir(task: str, ckpt: str | None) -> str:
    """Where Hydra writes its record: `.hydra`, or `.hydra/resume-TIME` when a resume continues a run in
    its folder (so the run's own `.hydra/config.yaml` stays what it trained with)."""
    if task == "train" and _run_folder_or_none(task, ckpt) is not None:
        return f".hydra/resume-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    return ".hydra"


def load_recorded(folder: Path) -> DictConfig:
    """A run's recorded config, checked (pix2pix.targets: only allow-listed targets and resolvers)."""
    path = folder / RECORDED_CONFIG
    try:
        return load_config(path)
    except Pix2PixError:
        raise
    except Exception as err:  # yaml and OmegaConf raise several types for a damaged file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise Pix2PixError(
            f"{path}: unreadable run config ({first}); restore it, or pass the checkpoint file itself "
            "with the model config on the command line"
        ) from None


def refuse_links(folder: Path) -> None:
    """A run folder's own folders and files are never links (a linked checkpoint aside): a received run
    whose eval/ or .hydra/config.yaml points elsewhere would make the tasks write there."""
    for parent, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = Path(parent) / name
            linked_checkpoint = path.suffix == ".ckpt" and path.parent.name == "checkpoints" and name not in dirs
            if path.is_symlink() and not linked_checkpoint:
                raise Pix2PixError(
                    f"{path}: a link inside a run folder; the tasks write into a run folder, so its files and folders "
                    "must be its own: replace the link with a copy (or remove it)"
                )


def recorded_config(
    current: DictConfig, folder: Path, overrides: list[str], recorded: DictConfig | None = None
) -> DictConfig:
    """The run's recorded config, with this invocation's keys and command-line overrides on top.

    `current` is the config composed from this command line; `overrides` are its key=value and
    group=option items. A group override (`dataset=facades`, `model/generator=unet_128`) replaces
    that whole group; a key override replaces one value.
    """
    recorded = recorded if recorded is not None else load_recorded(folder)
    invocation = RESUME_INVOCATION_KEYS if current.task == "train" else INVOCATION_KEYS
    merged = current.copy()
    with open_dict(merged):
        for key, value in recorded.items():
            if key not in invocation and key != "hydra":
                merged[key] = value
        # Where this invocation writes is Hydra's folder for it, not the training run's.
        merged.paths.output_dir = OmegaConf.to_container(current.paths)["output_dir"]
        for key in INVOCATION_DATASET_KEYS:
            OmegaConf.update(merged, f"dataset.{key}", OmegaConf.select(current, f"dataset.{key}"), force_add=True)
        for item in overrides:
            key = override_key(item).replace("/", ".")
            if key.split(".")[0] in invocation or key.startswith("hydra"):
                continue
            OmegaConf.update(merged, key, OmegaConf.select(current, key), merge=False, force_add=True)
    return merged


@dataclass(frozen=True)
class TrainedRun:
    """What eval/predict/export and a resume work from: the effective config and the checkpoint file."""

    cfg: DictConfig
    checkpoint: Path
    folder: Path | None  # None: a loose checkpoint file, configured by the command line alone
    forked: bool = False  # a resume that starts a new run folder (the checkpoint is older than folder's last)


NETWORK_KEYS = ("model.generator", "model.discriminator")


def refuse_network_changes(recorded: DictConfig, cfg: DictConfig) -> None:
    """A resumed run keeps the networks its checkpoint holds: any change to them is refused."""
    for key in NETWORK_KEYS:
        before = OmegaConf.to_container(OmegaConf.select(recorded, key), resolve=True)
        after = OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True)
        for name in sorted(set(before) | set(after)):
            if before.get(name) != after.get(name):
                raise Pix2PixError(
                    f"{key}.{name}: {before.get(name)} -> {after.get(name)} changes the networks in the checkpoint; "
                    "a resumed run keeps its model: drop that override, or start a new run"
                )


def refuse_published_resume(ckpt: str, checkpoint: Path) -> None:
    """A resume continues a pix2pix-ms checkpoint (weights, optimizers, place); published weights start a run."""
    if not is_ours(checkpoint):
        what = "not a pix2pix-ms checkpoint"
    elif IMPLIED_META in read_meta(checkpoint):
        what = "converted weights, without the optimizers and the place of a run"
    else:
        return
    raise Pix2PixError(
        f"ckpt={ckpt}: {what}, and ckpt= resumes a training run from its checkpoint; to start a new run from "
        f"these weights use model.init_from={ckpt} (model.init_from_D= for a discriminator)"
    )


def open_trained_run(current: DictConfig, overrides: list[str]) -> TrainedRun:
    checkpoint = locate_checkpoint(current.ckpt, current.task)
    folder = run_folder_of(checkpoint)
    if folder is None:
        if current.task == "train":
            refuse_published_resume(current.ckpt, checkpoint)
        return TrainedRun(cfg=current, checkpoint=checkpoint, folder=None)
    refuse_links(folder)
    recorded = load_recorded(folder)
    cfg = recorded_config(current, folder, overrides, recorded)
    forked = False
    if current.task == "train":
        refuse_network_changes(recorded, cfg)
        forked = not continues_in_place(checkpoint, folder)
    return TrainedRun(cfg=cfg, checkpoint=checkpoint, folder=folder, forked=forked)


def find_run_files(paths: list[Path], pattern: str) -> dict[Path, list[Path]]:
    """The files matching `pattern` at or below each path (or the path itself, a file), by the folder that
    holds them: under each path in natural order (multirun/X/2 before multirun/X/10), the paths as given."""
    found: dict[Path, list[Path]] = {}
    for root in paths:
        if not root.exists():
            raise Pix2PixError(f"{root}: no such run, sweep or file")
        files = [root] if root.is_file() else sorted(root.rglob(pattern))
        files.sort(key=lambda p: [natural_key(Path(part)) for part in p.parent.relative_to(root.parent).parts])
        for file in files:
            found.setdefault(file.parent, []).append(file)
    return found


def owns_the_run() -> bool:
    """Whether this process holds the run folder it trains in: the process the user started, or rank 0 of
    a job that msrun or mpirun started (the workers of a job this project started leave it to their launcher)."""
    return launcher() is None or (env_rank() == 0 and LAUNCHER_PID not in os.environ)


def lock_run(folder: Path) -> FileLock:
    """Hold `folder` for this training process until it ends; a second process that would train in
    the same folder (a resume of a run that is still going) is refused with one line."""
    lock = FileLock(folder / RUN_LOCK)
    if not lock.acquire(wait=False):
        raise Pix2PixError(
            f"{folder}: {lock.holder()} is training in this run folder right now; wait for it to end (or stop it) "
            "before resuming the run"
        )
    return lock


def check_not_busy(folder: Path) -> None:
    """Refuse at once (before Hydra writes anything there) to resume a run that another process trains."""
    lock_run(folder).release()
