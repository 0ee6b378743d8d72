"""task=train: build everything from the config and fit."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from pix2pix.models.layers import count_params
from pix2pix.runtime import describe_cpu_kernels, seed_everything, setup_device
from pix2pix.track.tensorboard import RunWriter
from pix2pix.train import checkpoint
from pix2pix.train.step import Pix2PixTrainStep
from pix2pix.train.trainer import Faults, ResumePoint, Trainer, TrainerSettings

log = logging.getLogger(__name__)


def build_train_step(cfg: DictConfig) -> Pix2PixTrainStep:
    """G, D, their optimizers and the losses, as the config describes them, in one train-step Cell."""
    generator = instantiate(cfg.model.generator)
    discriminator = instantiate(cfg.model.discriminator)
    log.info(
        "G %s: %s parameters; D %s: %s parameters",
        type(generator).__name__,
        f"{count_params(generator):,}",
        type(discriminator).__name__,
        f"{count_params(discriminator):,}",
    )
    return Pix2PixTrainStep(
        generator,
        discriminator,
        instantiate(cfg.optimizer)(generator.trainable_params()),
        instantiate(cfg.optimizer)(discriminator.trainable_params()),
        gan_mode=cfg.model.gan_mode,
        lambda_L1=cfg.model.lambda_L1,
        lambda_GAN=cfg.model.lambda_GAN,
        lambda_D=cfg.model.lambda_D,
    )


def resume_point(step: Pix2PixTrainStep, path: Path) -> ResumePoint:
    """Restore G, D and both optimizers from `path`; where the run stood when it was written."""
    loaded = checkpoint.load(path)
    checkpoint.restore(checkpoint.training_state(step), loaded, path)

    def meta(key: str, default: float) -> float:
        return float(loaded[key].asnumpy()) if key in loaded else default

    point = ResumePoint(
        epoch=int(meta("epoch", 0)),
        step_in_epoch=int(meta("step_in_epoch", 0)),
        global_step=int(meta("global_step", 0)),
        val_L1_before=meta("val_L1_before", float("nan")),
    )
    log.info(
        "resuming from %s: %d epochs and %d steps done (global step %d)",
        path,
        point.epoch,
        point.step_in_epoch,
        point.global_step,
    )
    return point


def train(cfg: DictConfig, resume_from: Path | None = None) -> dict[str, float]:
    """Train as `cfg` says; with `resume_from`, continue that checkpoint's run in `cfg`'s run folder."""
    run_dir = Path(cfg.paths.output_dir)
    device = setup_device(**cfg.device)
    log.info("device: %s%s", device, f" ({describe_cpu_kernels()})" if device == "cpu" else f" {cfg.device.device_id}")
    seed_everything(cfg.seed)

    data = instantiate(cfg.dataset)
    data.prepare()
    step = build_train_step(cfg)
    resume = resume_point(step, resume_from) if resume_from else None
    for stale in checkpoint.partial_files(run_dir / "checkpoints"):
        stale.unlink()  # a write cut short by a kill; the checkpoint it would have replaced is intact
        log.info("removed %s, left by an interrupted checkpoint write", stale.name)
    writer = RunWriter(run_dir / "tensorboard", purge_step=resume.global_step + 1 if resume else None)
    if resume is None:
        writer.config(cfg)
    settings = TrainerSettings(
        run_dir=run_dir,
        base_lr=cfg.optimizer.learning_rate,
        checkpoint_every=cfg.checkpoint.every,
        keep_last=cfg.checkpoint.get("keep_last"),
        faults=Faults(**cfg.fault),
        val_mode=cfg.val.mode,
        val_num_images=cfg.val.num_images,
        progress_bar=cfg.logging.progress_bar,
        seed=cfg.seed,
    )
    try:
        metrics = Trainer(step, data, instantiate(cfg.schedule), writer, settings).fit(resume)
        names = ("val_L1", "val_L1_before", "val_psnr", "val_ssim")
        writer.hparams(cfg, {f"hparams/{name}": metrics[name] for name in names})
    finally:
        writer.close()
    log.info("run folder: %s", run_dir)
    return metrics
