"""The training loop: epochs, learning rate per epoch, logs, samples, checkpoints."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import ops
from tqdm import tqdm

from pix2pix import checkpoint
from pix2pix.backend.runtime import describe_conv_kernels
from pix2pix.data.aligned import AlignedData
from pix2pix.errors import Pix2PixError
from pix2pix.infer.generate import generate, mean_l1
from pix2pix.parallel.collective import Ranks, StepAgreement, check_in_sync
from pix2pix.scoring.metrics import image_metrics
from pix2pix.track.files import write_text
from pix2pix.track.samples import make_grid, save_png, to_uint8
from pix2pix.track.tensorboard import RunWriter
from pix2pix.training.schedule import Schedule
from pix2pix.training.step import Pix2PixTrainStep

log = logging.getLogger(__name__)

LOSS_NAMES = ("loss_D_real", "loss_D_fake", "loss_G_GAN", "loss_G_L1")


@dataclass(frozen=True)
class Faults:
    """Fault injection for the tests (the `fault` config group's keys); all off by default."""

    nan_at_step: int | None = None  # this global step's input becomes NaN
    kill_at_step: int | None = None  # SIGKILL after this global step
    kill_in_save: int | None = None  # SIGKILL inside the Nth checkpoint write, before its rename
    signal_at_step: int | None = None  # send `signal_name` to itself `signal_times` times after this step
    signal_name: str = "SIGINT"
    signal_times: int = 1
    rank: int = 0  # the rank that injects them (data-parallel runs)


@dataclass
class TrainerSettings:
    run_dir: Path
    base_lr: float
    checkpoint_every: int = 50
    keep_last: int | None = None
    resume_mode: str = "exact"  # checkpoint.resume: exact, or next_epoch (skip the rest of a half-done epoch)
    faults: Faults = field(default_factory=Faults)
    val_mode: str = "paper"
    val_num_images: int | None = None
    progress_bar: bool = True
    seed: int = 0
    ranks: Ranks = field(default_factory=Ranks)


@dataclass(frozen=True)
class ResumePoint:
    """Where a checkpoint left a run: epochs completed, steps into the next epoch, global step."""

    epoch: int
    step_in_epoch: int
    global_step: int
    val_L1_before: float
    device_num: int = 1  # the ranks that trained it (steps per epoch depend on it)
    batch_size: int | None = None  # None: a checkpoint written before these were recorded
    train_files: str | None = None  # the training split's fingerprint (AlignedData.fingerprint)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint of the last finished step was written (None: the
    job stopped before it could write one)."""

    def __init__(self, signum: int, checkpoint_path: Path | None):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.checkpoint_path = checkpoint_path


class StopRequests:
    """SIGINT/SIGTERM handlers for the training loop: the first asks it to stop after the current
    step (with a checkpoint); a second one stops at once (KeyboardInterrupt; writes are atomic)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self.previous = {}

    def handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s: stopping after the current step to write a checkpoint (again: stop at once)",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> StopRequests:
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def reinstall(self) -> None:
        """MindSpore puts its own C-level SIGINT handler in place while it runs (measured: Ctrl-C then
        arrives here as SIGTERM); ours goes back on top after every step, one cheap syscall each."""
        for sig in self.SIGNALS:
            signal.signal(sig, self.handle)

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def mid_epoch_change(resume: ResumePoint, device_num: int, batch_size: int, train_files: str) -> str | None:
    """What differs from the run that wrote a mid-epoch checkpoint, in a way that changes the epoch's steps
    or pairs (the rest of the epoch could not be replayed); None when nothing does."""
    if resume.device_num != device_num:
        return f"parallel.device_num={resume.device_num} then, {device_num} now"
    if resume.batch_size is not None and resume.batch_size != batch_size:
        return f"dataset.batch_size={resume.batch_size} then, {batch_size} now"
    if resume.train_files is not None and resume.train_files != train_files:
        return f"the training split's files differ (then {resume.train_files}, now {train_files})"
    return None


def check_mid_epoch_resume(resume: ResumePoint, device_num: int, batch_size: int, train_files: str) -> None:
    """A checkpoint written mid-epoch continues exactly only with the device count, batch size and files
    that wrote it: they decide the epoch's steps and the pairs of each. From the end of an epoch any is fine."""
    if not resume.step_in_epoch:
        return
    change = mid_epoch_change(resume, device_num, batch_size, train_files)
    if change:
        epoch = resume.epoch + 1
        raise Pix2PixError(
            f"the checkpoint stopped at step {resume.step_in_epoch} of epoch {epoch}, and {change}, so the rest "
            f"of that epoch cannot be replayed: resume with the settings and files it had, or add "
            f"checkpoint.resume=next_epoch to go on at epoch {epoch + 1} (skipping the rest of epoch {epoch}), "
            f"or resume from the end of epoch {resume.epoch} (checkpoints/epoch_{resume.epoch:03d}.ckpt, if kept)"
        )


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Trainer:
    """Fits the train step to the data; in a data-parallel job every rank runs one, on its shard,
    and only rank 0 writes (checkpoints, samples, TensorBoard, metrics.json)."""

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
        self.ranks = settings.ranks
        self.agree = StepAgreement(settings.ranks)
        self.run_dir = settings.run_dir
        self.global_step = 0
        self.val_L1_before = float("nan")
        self.first_epoch = 1
        self.first_step_logged = False
        self.saves = 0
        self.stop_agreed = False

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
        # Every rank runs G (a SyncBatchNorm would wait for the others); rank 0 writes.
        fake = generate(self.step.G, val_A[:n], self.settings.val_mode)
        if not self.ranks.writes:
            return
        grid = make_grid(val_A[:n], fake, val_B[:n])
        save_png(self.run_dir / "samples" / f"epoch_{epoch:03d}.png", grid)
        self.writer.image("samples", grid, epoch)

    def save_checkpoint(self, epoch: int, step_in_epoch: int = 0) -> Path:
        """last.ckpt after `epoch` complete epochs and `step_in_epoch` steps of the next (a mid-epoch
        checkpoint is written on SIGINT/SIGTERM); plus epoch_NNN.ckpt every checkpoint.every epochs.
        Rank 0 writes; the other ranks only return the path."""
        folder = self.run_dir / "checkpoints"
        last = folder / "last.ckpt"
        if not self.ranks.writes:
            return last
        state = checkpoint.training_state(self.step)
        meta = {
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": self.global_step,
            "seed": self.settings.seed,
            "val_L1_before": self.val_L1_before,
            "device_num": self.ranks.size,
            "batch_size": self.data.batch_size,
            "train_files": self.data.fingerprint(),
        }
        checkpoint.save(last, state, meta, before_rename=self.kill_hook)
        every = self.settings.checkpoint_every
        if every and epoch % every == 0 and step_in_epoch == 0:
            checkpoint.save(folder / f"epoch_{epoch:03d}.ckpt", state, meta, before_rename=self.kill_hook)
            for old in checkpoint.prune(folder, self.settings.keep_last):
                log.info("removed %s (checkpoint.keep_last=%d)", old.name, self.settings.keep_last)
        return last

    def kill_hook(self) -> None:
        """Fault injection: SIGKILL this process between writing a checkpoint and renaming it."""
        self.saves += 1
        if self.saves == self.settings.faults.kill_in_save:
            os.kill(os.getpid(), signal.SIGKILL)

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

    def inject_faults(self) -> None:
        """The fault.* keys that act after a step (on the rank fault.rank)."""
        faults = self.settings.faults
        if self.ranks.rank != faults.rank:
            return
        if self.global_step == faults.signal_at_step:
            for _ in range(faults.signal_times):
                os.kill(os.getpid(), signal.Signals[faults.signal_name])
        if self.global_step == faults.kill_at_step:
            self.writer.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def interrupted(self, stop: StopRequests, path: Path) -> Interrupted:
        """Every rank stops at the same step; the others wait until rank 0 has written `path`."""
        self.writer.flush()
        self.agree.barrier()
        return Interrupted(stop.signum or signal.SIGTERM, path)

    def train_epoch(self, epoch: int, batches, steps: int, first_step: int, stop: StopRequests) -> dict[str, float]:
        """Steps first_step+1..steps of `epoch`; on a stop request, a checkpoint and Interrupted."""
        sums = dict.fromkeys(LOSS_NAMES, 0.0)
        times: list[float] = []
        show = self.settings.progress_bar and sys.stderr.isatty()
        bar = tqdm(
            total=steps,
            initial=first_step,
            desc=f"epoch {epoch}/{self.schedule.total_epochs}",
            disable=not show,
            leave=False,
        )
        self.step.set_train(True)
        faults = self.settings.faults
        for step_in_epoch, (real_A, real_B) in enumerate(itertools.islice(batches, steps - first_step), first_step + 1):
            if self.global_step + 1 == faults.nan_at_step and self.ranks.rank == faults.rank:
                real_A = ms.Tensor(np.full(real_A.shape, np.nan, np.float32))
            start = time.perf_counter()
            losses = [float(x) for x in self.step(real_A, real_B)]
            times.append(time.perf_counter() - start)
            self.global_step += 1
            stop.reinstall()
            self.inject_faults()
            # Mean over the ranks (the global batch's losses); a stop request on any rank stops all.
            losses, self.stop_agreed = self.agree(losses, stop.signum is not None)
            values = dict(zip(LOSS_NAMES, losses))
            self.check_finite(values, epoch, step_in_epoch)
            if len(times) == 1 and self.first_step_logged is False:
                self.first_step_logged = True
                kernels = describe_conv_kernels()
                log.info(
                    "first step: %.1f s (includes graph compilation)%s",
                    times[0],
                    f"; CPU convolutions: {kernels}" if kernels else "",
                )
            for name, value in values.items():
                sums[name] += value
            self.writer.scalars({**values, "step_time_ms": times[-1] * 1000}, self.global_step)
            bar.set_postfix(G_L1=f"{values['loss_G_L1']:.3f}", D=f"{values['loss_D_fake']:.3f}")
            bar.update()
            if self.stop_agreed and step_in_epoch < steps:
                raise self.interrupted(stop, self.save_checkpoint(epoch - 1, step_in_epoch))
        bar.close()
        # The first step of a process includes graph compilation: keep it out of the rate.
        steady = times[1:] if len(times) > 1 and first_step == 0 and epoch == self.first_epoch else times
        return {
            **{name: total / len(times) for name, total in sums.items()},
            "ms_per_step": 1000 * float(np.median(steady)),
        }

    def start_point(self, resume: ResumePoint | None) -> tuple[int, int]:
        """The first epoch to train and the steps of it already done."""
        if resume is None:
            return 1, 0
        self.val_L1_before = resume.val_L1_before
        self.global_step = resume.global_step
        if resume.step_in_epoch and self.settings.resume_mode == "next_epoch":
            log.warning(
                "checkpoint.resume=next_epoch: the rest of epoch %d (after its step %d) is skipped; training goes on "
                "at epoch %d",
                resume.epoch + 1,
                resume.step_in_epoch,
                resume.epoch + 2,
            )
            return resume.epoch + 2, 0
        check_mid_epoch_resume(resume, self.ranks.size, self.data.batch_size, self.data.fingerprint())
        return resume.epoch + 1, resume.step_in_epoch

    def fit(self, resume: ResumePoint | None = None) -> dict[str, float]:
        """Train from the start, or from `resume` (the state restored by the caller)."""
        settings = self.settings
        val_A, val_B = self.data.val_arrays(settings.val_num_images)
        steps = self.data.steps_per_epoch(self.ranks.size)
        self.first_epoch, skip = self.start_point(resume)
        if resume is None:
            self.val_L1_before = self.validate(val_A, val_B)["L1"]
            log.info(
                "validation L1 of the untrained generator: %.4f (%d %s images, %s mode)",
                self.val_L1_before,
                len(val_A),
                self.data.name,
                settings.val_mode,
            )
        total = self.schedule.total_epochs
        if self.first_epoch > total:
            raise Pix2PixError(
                f"the checkpoint has all {total} epochs of this schedule done; lengthen it to continue "
                "(e.g. schedule.n_epochs=...)"
            )
        batch = self.data.batch_size
        log.info(
            "training epochs %d-%d x %d steps (batch %s)%s",
            self.first_epoch,
            total,
            steps,
            f"{self.ranks.size} x {batch} = {self.ranks.size * batch}" if self.ranks.distributed else batch,
            f", resuming at step {skip + 1} of epoch {self.first_epoch}" if resume else "",
        )
        stream = self.data.train_dataset(self.first_epoch, total, skip, rank=self.ranks.rank, ranks=self.ranks.size)
        batches = stream.create_tuple_iterator(num_epochs=1)
        started = time.perf_counter()
        with StopRequests() as stop:
            for epoch in range(self.first_epoch, total + 1):
                lr = settings.base_lr * self.schedule.factor(epoch - 1)
                self.set_learning_rate(lr)
                stats = self.train_epoch(epoch, batches, steps, skip if epoch == self.first_epoch else 0, stop)
                elapsed = time.perf_counter() - started
                images_per_s = 1000 * batch * self.ranks.size / stats["ms_per_step"]
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
                last = self.save_checkpoint(epoch)  # first: the epoch's work is kept even if the samples fail
                self.save_samples(epoch, val_A, val_B)
                if self.stop_agreed:  # asked during the epoch's last step: its checkpoint is written
                    raise self.interrupted(stop, last)
        l1_before = self.val_L1_before
        final = self.validate(val_A, val_B)
        log.info(
            "validation L1 of the trained generator: %.4f (untrained: %.4f); PSNR %.2f dB, SSIM %.4f",
            final["L1"],
            l1_before,
            final["psnr"],
            final["ssim"],
        )
        check_in_sync(self.ranks, self.step.G, self.step.D)
        metrics = {
            "val_L1_before": l1_before,
            "val_L1": final["L1"],
            "val_psnr": final["psnr"],
            "val_ssim": final["ssim"],
            "ms_per_step": stats["ms_per_step"],
            "train_seconds": time.perf_counter() - started,
            **{f"final_{name}": stats[name] for name in LOSS_NAMES},
        }
        if self.ranks.writes:
            write_text(self.run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        return metrics
