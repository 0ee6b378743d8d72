"""task=train: build everything from the config and fit; with ckpt=, resume (or fork) a run."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from pix2pix import checkpoint
from pix2pix.backend.runtime import describe_cpu_kernels, device_count, resolve_device, seed_everything, setup_device
from pix2pix.data.aligned import AlignedData
from pix2pix.errors import Interrupted, Pix2PixError
from pix2pix.models.layers import count_params
from pix2pix.parallel.collective import Ranks, broadcast_parameters, init_collective
from pix2pix.parallel.env import launcher, local_index
from pix2pix.runs import LAST_CHECKPOINT, RECORDED_CONFIG, TrainedRun, locate_checkpoint, lock_run, owns_the_run
from pix2pix.scoring.real_features import FidScorer
from pix2pix.tasks.common import (
    build_dataset,
    command_line_overrides,
    fid_features,
    fid_weights,
    split_fid_scorer,
    trained_run,
)
from pix2pix.track.files import write_text
from pix2pix.track.samples import to_uint8
from pix2pix.track.tensorboard import RunWriter
from pix2pix.training.amp import AMP_SCOPE, DynamicLossScale, mixed_precision
from pix2pix.training.hooks import Checkpoints, Faults, TensorBoard, Validation
from pix2pix.training.loop import Trainer
from pix2pix.training.step import Pix2PixTrainStep
from pix2pix.weights.fid_weights import WeightsMissing, check_weights
from pix2pix.weights.mapping import load_into
from pix2pix.weights.published import has_discriminator

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float | None:
    """task=train; with ckpt=, the run continues (the run's config, overrides that keep its networks), in
    its own folder, or in a new one when the checkpoint is older than the run's last.ckpt (a fork).
    With parallel.device_num > 1, this process starts the workers through msrun (unless it is one)."""
    resume_from, forked = None, False
    overrides = command_line_overrides()
    if cfg.ckpt:
        if any(o.startswith(("model.init_from=", "model.init_from_D=")) for o in overrides):
            raise Pix2PixError(
                "model.init_from starts a new run from other weights, and ckpt= resumes a run from its own: drop one"
            )
        kept = [o for o in overrides if not o.startswith(("ckpt=", "task="))]
        resumed = trained_run(cfg, kept)
        cfg, resume_from = resumed.cfg, resumed.checkpoint
        if resumed.forked:
            cfg, forked = record_fork(resumed, write=owns_the_run()), True
        if kept:
            log.info("resuming with these overrides on the run's config: %s", " ".join(kept))
    lock = lock_run(Path(cfg.paths.output_dir)) if owns_the_run() else None
    try:
        if cfg.parallel.device_num > 1 and launcher() is None:
            metrics = train_on_workers(cfg, overrides)
        else:
            metrics = train(cfg, resume_from, forked)
        return metrics.get(cfg.optimized_metric)
    except KeyboardInterrupt:
        log.warning("stopped at once by a second signal; the newest complete checkpoint is intact")
        sys.exit(130)
    except Interrupted as stop:
        path = stop.checkpoint_path
        if path is None:
            log.warning("stopped by %s before this launch wrote a checkpoint; the newest complete one is intact", stop)
        else:
            run_dir = path.parent.parent
            log.warning("stopped by %s; %s is written; resume with: python launch.py ckpt=%s", stop, path, run_dir)
        sys.exit(128 + stop.signum)
    finally:
        if lock:
            lock.release()


def build_train_step(cfg: DictConfig, ranks: Ranks | None = None) -> Pix2PixTrainStep:
    """G, D, their optimizers and the losses, as the config describes them, in one train-step Cell
    (averaging gradients over the ranks of a data-parallel job; at amp=O1..O3, with a dynamic loss scale)."""
    ranks = ranks or Ranks()
    sync_bn = ranks.distributed and cfg.parallel.get("sync_bn", False) and cfg.model.norm == "batch"
    norm = {"norm": "sync_batch"} if sync_bn else {}
    generator = instantiate(cfg.model.generator, **norm)
    discriminator = instantiate(cfg.model.discriminator, **norm)
    log.info(
        "G %s: %s parameters; D %s: %s parameters",
        type(generator).__name__,
        f"{count_params(generator):,}",
        type(discriminator).__name__,
        f"{count_params(discriminator):,}",
    )
    level = cfg.get("amp", "O0")
    generator, discriminator = mixed_precision(generator, level), mixed_precision(discriminator, level)
    optimizer_G = instantiate(cfg.optimizer)(generator.trainable_params())
    optimizer_D = instantiate(cfg.optimizer)(discriminator.trainable_params())
    scaling = {}
    if level != "O0":
        # a run recorded before loss_scale existed, resumed with amp=: DynamicLossScale's defaults
        loss_scale = DynamicLossScale(**cfg.get("loss_scale", {}))
        scaling = {
            "loss_scale": loss_scale,
            "restorable": [
                *checkpoint.network_state("D", discriminator).values(),
                *checkpoint.optimizer_state("optimizer_D", optimizer_D, discriminator).values(),
                *(p for n, p in checkpoint.network_state("G", generator).items() if "moving_" in n),
            ],
        }
        log.info(
            "amp=%s: float16 %s, float32 weights; dynamic loss scale from %g (x%g after %d good steps, "
            "halved and the step skipped on overflow)",
            *(level, AMP_SCOPE[level], float(loss_scale.scale.asnumpy()), loss_scale.factor, loss_scale.window),
        )
        if ms.get_context("device_target") == "CPU":
            log.warning(
                "amp=%s on the CPU: MindSpore runs float16 there, but more slowly than float32 and in no less "
                'memory (README "Mixed precision"); mixed precision is for GPU and Ascend, amp=O0 on the CPU',
                level,
            )
    return Pix2PixTrainStep(
        generator,
        discriminator,
        optimizer_G,
        optimizer_D,
        gan_mode=cfg.model.gan_mode,
        lambda_L1=cfg.model.lambda_L1,
        lambda_GAN=cfg.model.lambda_GAN,
        lambda_D=cfg.model.lambda_D,
        device_num=ranks.size,
        **scaling,
    )


def init_networks(model: DictConfig, step: Pix2PixTrainStep) -> None:
    """model.init_from / init_from_D: G and D start from those weights (a run folder's last.ckpt, a checkpoint,
    or a published file); the optimizers start fresh."""
    g_from = init_file("model.init_from", model.get("init_from"))
    d_from = init_file("model.init_from_D", model.get("init_from_D"))
    if d_from is None and g_from is not None and has_discriminator(g_from):
        d_from = g_from
    for role, net, path in (("G", step.G, g_from), ("D", step.D, d_from)):
        if path is not None:
            load_into(net, path, role)
            log.info("%s starts from %s (fresh optimizer)", role, path)


def init_file(key: str, value: str | None) -> Path | None:
    """The weights file `key` names: a file, or a run folder's checkpoints/last.ckpt."""
    return locate_checkpoint(value, "train", key) if value else None


def check_sync_bn(par: DictConfig, device: str) -> None:
    if par.sync_bn and device == "cpu":
        raise Pix2PixError(
            "parallel.sync_bn=true: MindSpore's SyncBatchNorm has no CPU kernel; use parallel.sync_bn=false "
            "(per-device BatchNorm) or device=gpu/ascend"
        )


def setup_ranks(cfg: DictConfig) -> Ranks:
    """Set up the device; this process's rank in a data-parallel job (one rank when device_num is 1)."""
    distributed = cfg.parallel.device_num > 1
    device_cfg = dict(cfg.device)
    if distributed:
        device_cfg["device_id"] = local_index()  # each worker drives the device of its index
    device = setup_device(**device_cfg)
    detail = f" ({describe_cpu_kernels()})" if device == "cpu" else f" {device_cfg['device_id']}"
    log.info("device: %s%s", device, detail)
    if not distributed:
        return Ranks()
    check_sync_bn(cfg.parallel, device)
    return init_collective(device, cfg.parallel.device_num, local_index())


def train(cfg: DictConfig, resume_from: Path | None = None, forked: bool = False) -> dict[str, float]:
    """Train as `cfg` says; with `resume_from`, continue that checkpoint's run in `cfg`'s run folder (a new
    one when `forked`). In a data-parallel job every rank runs this; rank 0 writes the run."""
    run_dir = Path(cfg.paths.output_dir)
    ranks = setup_ranks(cfg)
    seed_everything(cfg.seed + ranks.rank)  # per-rank dropout and jitter streams; weights come from rank 0
    data = build_dataset(cfg)
    data.prepare()
    step = build_train_step(cfg, ranks)
    resume = checkpoint.restore_training(step, resume_from) if resume_from else None
    if resume is None:
        init_networks(cfg.model, step)
    if resume:
        log.info(
            "resuming from %s: %d epochs and %d steps done (global step %d)",
            *(resume_from, resume.epoch, resume.step_in_epoch, resume.global_step),
        )
    if ranks.distributed:
        broadcast_parameters(step.G, step.D)
    purge_step = resume.global_step + 1 if resume else None
    writer = RunWriter(run_dir / "tensorboard", purge_step=purge_step, enabled=ranks.writes)
    if resume is None or forked:  # a new run folder: its TensorBoard gets the config
        writer.config(cfg)
    trainer = build_trainer(cfg, step, data, writer, ranks)
    try:
        metrics = trainer.fit(resume)
        if ranks.writes:
            write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        names = ("val_L1", "val_L1_before", "val_psnr", "val_ssim", "val_fid", "val_kid")
        writer.hparams(cfg, {f"hparams/{name}": metrics[name] for name in names if name in metrics})
    finally:
        writer.close()
    log.info("run folder: %s", run_dir)
    return metrics


def build_trainer(
    cfg: DictConfig, step: Pix2PixTrainStep, data: AlignedData, writer: RunWriter, ranks: Ranks
) -> Trainer:
    """The loop and its hooks: checkpoints, TensorBoard and samples, and (debug=faults) the tests' faults."""
    run_dir = Path(cfg.paths.output_dir)
    faults = Faults(**cfg.fault) if "fault" in cfg else None
    checkpoints = Checkpoints(
        run_dir,
        every=cfg.checkpoint.every,
        keep_last=cfg.checkpoint.get("keep_last"),  # a run recorded before keep_last and resume existed
        seed=cfg.seed,
        before_rename=faults.checkpoint_writes() if faults else None,
    )
    hooks = [TensorBoard(writer, run_dir, cfg.val.mode), Validation(writer, cfg.val.get("every", 0))]
    return Trainer(
        step,
        data,
        instantiate(cfg.schedule),
        checkpoints,
        base_lr=cfg.optimizer.learning_rate,
        hooks=[*hooks, *([faults] if faults else [])],
        ranks=ranks,
        val_mode=cfg.val.mode,
        val_num_images=cfg.val.num_images,
        resume_mode=cfg.checkpoint.get("resume", "exact"),
        progress_bar=cfg.logging.progress_bar,
        fid=validation_fid(cfg, data, ranks) if cfg.val.get("fid") else None,
    )


def validation_fid(cfg: DictConfig, data: AlignedData, ranks: Ranks) -> FidScorer | None:
    """val.fid=true: FID and KID against the validation images (their features cached, as task=eval's).
    Every rank checks that they can be computed (one rank stopping alone would leave the others waiting
    in a collective); rank 0 computes them (None on the others)."""
    files = data.files("val")[: cfg.val.num_images]
    if len(files) < 2:
        raise Pix2PixError(f"val.fid=true: FID needs at least two validation images, {data.name} has {len(files)}")
    try:
        check_weights(fid_weights(cfg))
    except WeightsMissing as err:
        raise Pix2PixError(f"val.fid=true: {err}") from None
    if not ranks.writes:
        return None
    extract = fid_features(cfg, "val.fid", required=True)
    settings = f"val {data.name} {data.direction} {data.preprocess} {len(files)}"

    def real_images() -> list[np.ndarray]:
        return [image for _, b in data.val_batches(cfg.val.num_images) for image in to_uint8(b)]

    return split_fid_scorer(cfg, extract, files, real_images, settings, "val.fid")


def record_fork(run: TrainedRun, write: bool) -> DictConfig:
    """A resume from a checkpoint older than its run's last.ckpt: the run goes on in this new folder
    (Hydra's), whose record becomes the config it trains with plus where it came from; the original
    run folder is left as it was."""
    step = checkpoint.read_resume_point(run.checkpoint).global_step
    last_step = checkpoint.read_resume_point(run.folder / LAST_CHECKPOINT).global_step
    cfg = run.cfg.copy()
    with open_dict(cfg):
        cfg.forked_from = {"run": str(run.folder), "checkpoint": str(run.checkpoint), "global_step": step}
    run_dir = Path(cfg.paths.output_dir)
    if write:
        write_text(run_dir / RECORDED_CONFIG, OmegaConf.to_yaml(cfg))
    log.warning(
        "%s is at global step %d, behind the run's last.ckpt (step %d): continuing from it would overwrite what "
        "came later, so this is a fork in a new run folder, %s; %s is left as it was",
        run.checkpoint,
        step,
        last_step,
        run_dir,
        run.folder,
    )
    return cfg


def launch_script() -> Path:
    """The launch.py the workers run: the one this process runs, else the project's own."""
    started = Path(sys.argv[0]).absolute()
    if started.name == "launch.py" and started.is_file():
        return started
    project = Path(__file__).resolve().parents[2] / "launch.py"
    if project.is_file():
        return project
    raise Pix2PixError(f"cannot start the workers: no launch.py at {started} or {project}; run python launch.py ...")


def train_on_workers(cfg: DictConfig, overrides: list[str]) -> dict[str, float]:
    """A data-parallel job started from this process: the device and the data are checked (the data
    downloaded or generated) once here, then msrun starts the workers, each `launch.py` with the same
    overrides."""
    from pix2pix.parallel.launcher import launch_workers  # psutil and the msrun plumbing: only here

    par = cfg.parallel
    device = resolve_device(cfg.device.target)
    check_sync_bn(par, device)
    per_node = par.device_num // par.nodes
    available = device_count(device)
    if available is not None and available < per_node:
        raise Pix2PixError(
            f"parallel.device_num={par.device_num} over {par.nodes} node(s) needs {per_node} {device} devices here; "
            f"found {available}: lower parallel.device_num"
        )
    build_dataset(cfg).prepare()
    return launch_workers(par, Path(cfg.paths.output_dir), [str(launch_script()), *overrides])
