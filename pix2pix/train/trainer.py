"""The training loop: epochs, learning rate per epoch, logs, samples, checkpoints."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import ops
from tqdm import tqdm

from pix2pix.data.aligned import AlignedData
from pix2pix.errors import Pix2PixError
from pix2pix.evaluate.metrics import image_metrics
from pix2pix.track.samples import make_grid, save_png, to_uint8
from pix2pix.track.tensorboard import RunWriter
from pix2pix.train import checkpoint
from pix2pix.train.schedule import Schedule
from pix2pix.train.step import Pix2PixTrainStep
from pix2pix.train.validate import generate, mean_l1

log = logging.getLogger(__name__)

LOSS_NAMES = ("loss_D_real", "loss_D_fake", "loss_G_GAN", "loss_G_L1")


@dataclass
class TrainerSettings:
    run_dir: Path
    base_lr: float
    checkpoint_every: int = 50
    keep_last: int | None = None
    nan_at_step: int | None = None  # fault injection for tests: this global step's input becomes NaN
    val_mode: str = "paper"
    val_num_images: int | None = None
    progress_bar: bool = True
    seed: int = 0


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Trainer:
    def __init__(
        self,
        step: Pix2PixTrainStep,
        data: AlignedData,
        schedule: Schedule,
        writer: RunWriter,
        settings: TrainerSettings,
    ):
        self.step = step
        self.data = data
        self.schedule = schedule
        self.writer = writer
        self.settings = settings
        self.run_dir = settings.run_dir
        self.global_step = 0

    def set_learning_rate(self, lr: float) -> None:
        # ops.assign reaches the compiled graph; Parameter.set_data on it is ignored there.
        for optimizer in (self.step.optimizer_G, self.step.optimizer_D):
            ops.assign(optimizer.learning_rate, ms.Tensor(lr, ms.float32))

    def validate(self, val_A: np.ndarray, val_B: np.ndarray) -> dict[str, float]:
        """Validation L1 (on the float outputs, as the training L1) and the mean PSNR and SSIM
        of the 8-bit images, as task=eval computes them."""
        fake = generate(self.step.G, val_A, self.settings.val_mode)
        per_image = [image_metrics(f, t) for f, t in zip(to_uint8(fake), to_uint8(val_B))]
        return {
            "L1": mean_l1(fake, val_B),
            "psnr": float(np.mean([m["psnr"] for m in per_image])),
            "ssim": float(np.mean([m["ssim"] for m in per_image])),
        }

    def save_samples(self, epoch: int, val_A: np.ndarray, val_B: np.ndarray) -> None:
        n = self.data.num_val_samples
        fake = generate(self.step.G, val_A[:n], self.settings.val_mode)
        grid = make_grid(val_A[:n], fake, val_B[:n])
        save_png(self.run_dir / "samples" / f"epoch_{epoch:03d}.png", grid)
        self.writer.image("samples", grid, epoch)

    def save_checkpoint(self, epoch: int) -> None:
        state = checkpoint.training_state(self.step)
        meta = {"epoch": epoch, "global_step": self.global_step, "seed": self.settings.seed}
        folder = self.run_dir / "checkpoints"
        checkpoint.save(folder / "last.ckpt", state, meta)
        every = self.settings.checkpoint_every
        if every and epoch % every == 0:
            checkpoint.save(folder / f"epoch_{epoch:03d}.ckpt", state, meta)
            for old in checkpoint.prune(folder, self.settings.keep_last):
                log.info("removed %s (checkpoint.keep_last=%d)", old.name, self.settings.keep_last)

    def check_finite(self, losses: dict[str, float], epoch: int, step: int) -> None:
        """Stop at the first NaN or Inf loss: before the epoch's checkpoint, so no good one is overwritten."""
        bad = next((name for name, value in losses.items() if not np.isfinite(value)), None)
        if bad is None:
            return
        last = self.run_dir / "checkpoints" / "last.ckpt"
        good = f"the last good checkpoint is {last} (epoch {epoch - 1})" if last.exists() else "no checkpoint yet"
        raise Pix2PixError(
            f"{bad} is {losses[bad]} at epoch {epoch}, step {step} (global step {self.global_step}); "
            f"training stopped and nothing was saved from this epoch: {good}; "
            "lower optimizer.learning_rate or check the data"
        )

    def train_epoch(self, epoch: int, batches, steps: int) -> dict[str, float]:
        sums = dict.fromkeys(LOSS_NAMES, 0.0)
        times: list[float] = []
        show = self.settings.progress_bar and sys.stderr.isatty()
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.schedule.total_epochs}", disable=not show, leave=False)
        self.step.set_train(True)
        for real_A, real_B in batches:
            if self.global_step + 1 == self.settings.nan_at_step:
                real_A = ms.Tensor(np.full(real_A.shape, np.nan, np.float32))
            start = time.perf_counter()
            losses = [float(x) for x in self.step(real_A, real_B)]
            times.append(time.perf_counter() - start)
            self.global_step += 1
            self.check_finite(dict(zip(LOSS_NAMES, losses)), epoch, len(times))
            if self.global_step == 1:
                log.info("first step: %.1f s (includes graph compilation)", times[0])
            values = dict(zip(LOSS_NAMES, losses))
            for name, value in values.items():
                sums[name] += value
            self.writer.scalars({**values, "step_time_ms": times[-1] * 1000}, self.global_step)
            bar.set_postfix(G_L1=f"{values['loss_G_L1']:.3f}", D=f"{values['loss_D_fake']:.3f}")
            bar.update()
        bar.close()
        # The first step of a run includes graph compilation: keep it out of the rate.
        steady = times[1:] if len(times) > 1 and epoch == 1 else times
        return {
            **{name: total / len(times) for name, total in sums.items()},
            "ms_per_step": 1000 * float(np.median(steady)),
        }

    def fit(self) -> dict[str, float]:
        settings = self.settings
        val_A, val_B = self.data.val_arrays(settings.val_num_images)
        l1_before = self.validate(val_A, val_B)["L1"]
        log.info(
            "validation L1 of the untrained generator: %.4f (%d %s images, %s mode)",
            l1_before,
            len(val_A),
            self.data.name,
            settings.val_mode,
        )
        dataset = self.data.train_dataset()
        steps = dataset.get_dataset_size()
        total = self.schedule.total_epochs
        log.info("training %d epochs x %d steps (batch %d)", total, steps, self.data.batch_size)
        batches = dataset.create_tuple_iterator(num_epochs=total)
        started = time.perf_counter()
        for epoch in range(1, total + 1):
            lr = settings.base_lr * self.schedule.factor(epoch - 1)
            self.set_learning_rate(lr)
            stats = self.train_epoch(epoch, batches, steps)
            elapsed = time.perf_counter() - started
            images_per_s = 1000 * self.data.batch_size / stats["ms_per_step"]
            log.info(
                "epoch %d/%d | %s | lr %.3g | %.0f ms/step | %.2f img/s | elapsed %s",
                epoch,
                total,
                " ".join(f"{n} {stats[n]:.4f}" for n in LOSS_NAMES),
                lr,
                stats["ms_per_step"],
                images_per_s,
                format_seconds(elapsed),
            )
            self.writer.scalars({"lr": lr, "epoch_ms_per_step": stats["ms_per_step"]}, epoch)
            self.save_samples(epoch, val_A, val_B)
            self.save_checkpoint(epoch)
        final = self.validate(val_A, val_B)
        log.info(
            "validation L1 of the trained generator: %.4f (untrained: %.4f); PSNR %.2f dB, SSIM %.4f",
            final["L1"],
            l1_before,
            final["psnr"],
            final["ssim"],
        )
        metrics = {
            "val_L1_before": l1_before,
            "val_L1": final["L1"],
            "val_psnr": final["psnr"],
            "val_ssim": final["ssim"],
            "ms_per_step": stats["ms_per_step"],
            "train_seconds": time.perf_counter() - started,
            **{f"final_{name}": stats[name] for name in LOSS_NAMES},
        }
        (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics
