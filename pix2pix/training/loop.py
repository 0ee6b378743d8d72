"""The training loop: epochs of steps, the learning rate per epoch, validation before and after.
Checkpoints, TensorBoard and samples, validation every N epochs, stop signals and what the tests inject
are hooks (training.hooks)."""

from __future__ import annotations

import itertools
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import ops
from tqdm import tqdm

from pix2pix.backend.runtime import describe_conv_kernels
from pix2pix.checkpoint import ResumePoint, check_mid_epoch_resume
from pix2pix.data.aligned import AlignedData
from pix2pix.errors import Interrupted, Pix2PixError
from pix2pix.infer.generate import generate
from pix2pix.parallel.collective import Ranks, StepAgreement, check_in_sync
from pix2pix.scoring.metrics import image_metrics, mean_l1
from pix2pix.scoring.real_features import FidScorer
from pix2pix.track.samples import to_uint8
from pix2pix.training.hooks import Checkpoints, Hook, StopSignals
from pix2pix.training.schedule import Schedule
from pix2pix.training.step import LOSS_NAMES, Pix2PixTrainStep

log = logging.getLogger(__name__)


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def describe_fid(metrics: dict[str, float]) -> str:
    return f"FID {metrics['fid']:.2f}, KID {metrics['kid']:.4f} +- {metrics['kid_std']:.4f}"


class Trainer:
    """Fits the train step to the data; in a data-parallel job every rank runs one, on its shard."""

    def __init__(
        self,
        step: Pix2PixTrainStep,
        data: AlignedData,
        schedule: Schedule,
        checkpoints: Checkpoints,
        base_lr: float,
        hooks: Sequence[Hook] = (),
        ranks: Ranks | None = None,
        val_mode: str = "paper",
        val_num_images: int | None = None,
        resume_mode: str = "exact",
        progress_bar: bool = True,
        fid: FidScorer | None = None,
    ):
        self.step, self.data, self.schedule, self.checkpoints = step, data, schedule, checkpoints
        self.base_lr = base_lr
        self.signals = StopSignals()
        self.hooks = [self.signals, checkpoints, *hooks]  # after an epoch: its checkpoint before its samples
        self.ranks = ranks or Ranks()
        self.agree = StepAgreement(self.ranks)
        self.val_mode, self.val_num_images = val_mode, val_num_images
        self.fid = fid  # FID and KID (val.fid): rank 0's alone (None on the other ranks)
        self.fid_before: dict[str, float] = {}
        self.resume_mode = resume_mode
        self.progress_bar = progress_bar and sys.stderr.isatty()
        self.global_step, self.val_L1_before, self.first_epoch = 0, float("nan"), 1
        self.stop_agreed = False

    def call(self, event: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    def fit(self, resume: ResumePoint | None = None) -> dict[str, float]:
        """Train from the start, or from `resume` (the state restored by the caller); the final metrics."""
        self.call("before_fit")
        self.val_batches = self.data.val_batches(self.val_num_images)  # one per shape (see AlignedData)
        self.val_A, self.val_B = self.val_batches[0]  # the sample grids show the first shape's images
        steps = self.data.steps_per_epoch(self.ranks.size)
        self.first_epoch, skip = self.start_point(resume)
        total = self.schedule.total_epochs
        self.log_start(steps, skip, resume)  # refuses a schedule that is already done, before the pipeline
        stream = self.data.train_dataset(self.first_epoch, total, skip, rank=self.ranks.rank, ranks=self.ranks.size)
        batches = stream.create_tuple_iterator(num_epochs=1)
        started = time.perf_counter()
        with self.signals:
            for epoch in range(self.first_epoch, total + 1):
                lr = self.set_learning_rate(epoch)
                stats = self.train_epoch(epoch, batches, steps, skip if epoch == self.first_epoch else 0)
                self.log_epoch(epoch, stats, lr, time.perf_counter() - started)
                self.call("after_epoch", epoch, lr, stats["ms_per_step"])
                if self.stop_agreed:  # asked during the epoch's last step: its checkpoint is written
                    raise self.interrupted(self.checkpoints.last)
        final = self.validate()
        log.info(
            "validation L1 of the trained generator: %.4f (at the start: %.4f); PSNR %.2f dB, SSIM %.4f%s",
            *(final["L1"], self.val_L1_before, final["psnr"], final["ssim"]),
            f"; {describe_fid(final)}" if "fid" in final else "",
        )
        check_in_sync(self.ranks, self.step.G, self.step.D)
        return {
            "val_L1_before": self.val_L1_before,
            **{f"val_{name}": value for name, value in final.items()},
            **{f"val_{name}_before": self.fid_before[name] for name in ("fid", "kid") if name in self.fid_before},
            "ms_per_step": stats["ms_per_step"],
            "train_seconds": time.perf_counter() - started,
            **{f"final_{name}": stats[name] for name in LOSS_NAMES},
            **self.amp_totals(),
        }

    def amp_totals(self) -> dict[str, float]:
        """With mixed precision: the steps skipped on overflow over the whole run, and the scale reached."""
        if not self.step.scaled:
            return {}
        scale = self.step.loss_scale
        return {"amp_skipped_steps": int(scale.skipped_steps.asnumpy()), "amp_loss_scale": float(scale.scale.asnumpy())}

    def train_epoch(self, epoch: int, batches, steps: int, first_step: int) -> dict[str, float]:
        """Steps first_step+1..steps of `epoch`; on a stop request, a checkpoint and Interrupted."""
        sums, times, skips = dict.fromkeys(LOSS_NAMES, 0.0), [], 0
        desc = f"epoch {epoch}/{self.schedule.total_epochs}"
        bar = tqdm(total=steps, initial=first_step, desc=desc, disable=not self.progress_bar, leave=False)
        self.step.set_train(True)
        for step_in_epoch, batch in enumerate(itertools.islice(batches, steps - first_step), first_step + 1):
            for hook in self.hooks:
                batch = hook.before_step(self, *batch)
            start = time.perf_counter()
            losses = self.step.losses(*batch)
            times.append(time.perf_counter() - start)
            self.global_step += 1
            self.call("after_step")
            # Mean over the ranks (the global batch's losses); a stop request on any rank stops all.
            losses, self.stop_agreed = self.agree(losses, self.signals.requested)
            values = dict(zip(LOSS_NAMES, losses))
            skipped = self.step.skipped_last  # an AMP overflow: neither network was updated
            if not skipped or self.step.scale_last <= 1:  # overflowing at scale 1 is not a float16 matter
                self.check_finite(values, epoch, step_in_epoch)
            if len(times) == 1 and epoch == self.first_epoch:
                self.log_first_step(times[0])
            if skipped:
                skips += 1
            else:
                for name, value in values.items():
                    sums[name] += value
            self.call("on_losses", {} if skipped else values, times[-1])
            bar.set_postfix(G_L1=f"{values['loss_G_L1']:.3f}", D=f"{values['loss_D_fake']:.3f}")
            bar.update()
            if self.stop_agreed and step_in_epoch < steps:
                raise self.interrupted(self.checkpoints.save(self, epoch - 1, step_in_epoch))
        bar.close()
        # The first step of a process includes graph compilation: keep it out of the rate.
        steady = times[1:] if len(times) > 1 and first_step == 0 and epoch == self.first_epoch else times
        counted = len(times) - skips
        means = {name: total / counted if counted else float("nan") for name, total in sums.items()}
        return {**means, "ms_per_step": 1000 * float(np.median(steady)), "skipped_steps": skips}

    def set_learning_rate(self, epoch: int) -> float:
        lr = self.base_lr * self.schedule.factor(epoch - 1)
        # ops.assign reaches the compiled graph; Parameter.set_data on it is ignored there.
        for optimizer in (self.step.optimizer_G, self.step.optimizer_D):
            ops.assign(optimizer.learning_rate, ms.Tensor(lr, ms.float32))
        return lr

    def validate(self) -> dict[str, float]:
        """Validation L1 (on the float outputs, as the training L1) and the mean PSNR and SSIM
        of the 8-bit images, as task=eval computes them; with val.fid, FID and KID of those images."""
        per_image, generated, l1_sum, values = [], [], 0.0, 0
        for val_A, val_B in self.val_batches:
            fake = generate(self.step.G, val_A, self.val_mode)
            fakes = to_uint8(fake)
            generated += list(fakes)
            per_image += [image_metrics(f, t) for f, t in zip(fakes, to_uint8(val_B))]
            l1_sum, values = l1_sum + mean_l1(fake, val_B) * fake.size, values + fake.size
        metrics = {
            "L1": l1_sum / values,
            "psnr": float(np.mean([m["psnr"] for m in per_image])),
            "ssim": float(np.mean([m["ssim"] for m in per_image])),
        }
        return {**metrics, **(self.fid.score(generated) if self.fid else {})}

    def start_point(self, resume: ResumePoint | None) -> tuple[int, int]:
        """The first epoch to train and the steps of it already done; the untrained L1 of a new run."""
        if resume is None:
            before = self.validate()
            self.val_L1_before = before["L1"]
            self.fid_before = {name: before[name] for name in ("fid", "kid") if name in before}
            log.info(
                "validation L1 of the generator before training: %.4f (%d %s images, %s mode)%s",
                *(self.val_L1_before, sum(len(a) for a, _ in self.val_batches), self.data.name, self.val_mode),
                f"; {describe_fid(before)}" if "fid" in before else "",
            )
            return 1, 0
        self.val_L1_before, self.global_step = resume.val_L1_before, resume.global_step
        if resume.step_in_epoch and self.resume_mode == "next_epoch":
            log.warning(
                "checkpoint.resume=next_epoch: the rest of epoch %d (after its step %d) is skipped; training goes on "
                "at epoch %d",
                *(resume.epoch + 1, resume.step_in_epoch, resume.epoch + 2),
            )
            return resume.epoch + 2, 0
        check_mid_epoch_resume(resume, self.ranks.size, self.data.batch_size, self.data.fingerprint())
        return resume.epoch + 1, resume.step_in_epoch

    def check_finite(self, losses: dict[str, float], epoch: int, step: int) -> None:
        """Stop at the first NaN or Inf loss: before the epoch's checkpoint, so no good one is overwritten."""
        bad = next((name for name, value in losses.items() if not np.isfinite(value)), None)
        if bad is None:
            return
        last = self.checkpoints.last
        good = f"the last good checkpoint is {last} (epoch {epoch - 1})" if last.exists() else "no checkpoint yet"
        raise Pix2PixError(
            f"{bad} is {losses[bad]} at epoch {epoch}, step {step} (global step {self.global_step}); "
            f"training stopped and nothing was saved from this epoch: {good}; "
            "lower optimizer.learning_rate or check the data"
        )

    def interrupted(self, path: Path) -> Interrupted:
        """Every rank stops at the same step; the others wait until rank 0 has written `path`."""
        self.call("on_stop")
        self.agree.barrier()
        return Interrupted(self.signals.signum or signal.SIGTERM, path)  # SIGTERM: another rank was asked

    def log_start(self, steps: int, skip: int, resume: ResumePoint | None) -> None:
        total = self.schedule.total_epochs
        if self.first_epoch > total:
            raise Pix2PixError(
                f"the checkpoint has all {total} epochs of this schedule done; lengthen it to continue "
                "(e.g. schedule.n_epochs=...)"
            )
        batch = self.data.batch_size
        log.info(
            "training epochs %d-%d x %d steps (batch %s)%s",
            *(self.first_epoch, total, steps),
            f"{self.ranks.size} x {batch} = {self.ranks.size * batch}" if self.ranks.distributed else batch,
            f", resuming at step {skip + 1} of epoch {self.first_epoch}" if resume else "",
        )

    def log_first_step(self, seconds: float) -> None:
        kernels = describe_conv_kernels()
        log.info(
            "first step: %.1f s (includes graph compilation)%s",
            *(seconds, f"; CPU convolutions: {kernels}" if kernels else ""),
        )

    def log_epoch(self, epoch: int, stats: dict[str, float], lr: float, elapsed: float) -> None:
        amp = ""
        if self.step.scaled:
            amp = f" | amp: {stats['skipped_steps']} steps skipped (overflow), loss scale {self.step.scale_last:g}"
        log.info(
            "epoch %d/%d | %s | lr %.3g | %.0f ms/step | %.2f img/s | elapsed %s%s",
            *(epoch, self.schedule.total_epochs, " ".join(f"{n} {stats[n]:.4f}" for n in LOSS_NAMES), lr),
            stats["ms_per_step"],
            1000 * self.data.batch_size * self.ranks.size / stats["ms_per_step"],
            format_seconds(elapsed),
            amp,
        )
