"""What happens around the training loop, as hooks it calls: checkpoints, TensorBoard and sample
grids, validation every N epochs, stop signals, and (for the tests only) fault injection. Only rank 0 writes."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mindspore as ms
import numpy as np

from pix2pix import checkpoint
from pix2pix.errors import STOP_SIGNALS
from pix2pix.infer.generate import generate
from pix2pix.track.samples import make_grid, save_png
from pix2pix.track.tensorboard import RunWriter

if TYPE_CHECKING:
    from pix2pix.training.loop import Trainer

log = logging.getLogger(__name__)


class Hook:
    """The points of the loop a hook may act at; each does nothing unless overridden."""

    def before_fit(self, trainer: Trainer) -> None:
        """Once, before the first step."""

    def before_step(self, trainer: Trainer, real_A: ms.Tensor, real_B: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
        return real_A, real_B

    def after_step(self, trainer: Trainer) -> None:
        """Right after the step, before the ranks agree on its losses and on stopping."""

    def on_losses(self, trainer: Trainer, losses: dict[str, float], seconds: float) -> None:
        """The step's losses (the mean over the ranks; none for a step skipped on an AMP overflow) and its time."""

    def after_epoch(self, trainer: Trainer, epoch: int, lr: float, ms_per_step: float) -> None:
        """After the epoch's last step, with its learning rate and median step time."""

    def on_stop(self, trainer: Trainer) -> None:
        """The run stops before its end (a signal, or a kill the tests inject): make what is written durable."""


class Checkpoints(Hook):
    """checkpoints/last.ckpt after every epoch (and mid-epoch when the run is stopped), plus
    epoch_NNN.ckpt every `every` epochs, the newest `keep_last` of them kept."""

    def __init__(
        self,
        run_dir: Path,
        every: int = 50,
        keep_last: int | None = None,
        seed: int = 0,
        before_rename: Callable[[], None] | None = None,
    ):
        self.folder = run_dir / "checkpoints"
        self.every = every
        self.keep_last = keep_last
        self.seed = seed
        self.before_rename = before_rename

    @property
    def last(self) -> Path:
        return self.folder / "last.ckpt"

    def before_fit(self, trainer: Trainer) -> None:
        if not trainer.ranks.writes:
            return
        for stale in checkpoint.partial_files(self.folder):
            stale.unlink()  # a write cut short by a kill; the checkpoint it would have replaced is intact
            log.info("removed %s, left by an interrupted checkpoint write", stale.name)

    def after_epoch(self, trainer: Trainer, epoch: int, lr: float, ms_per_step: float) -> None:
        self.save(trainer, epoch)

    def save(self, trainer: Trainer, epoch: int, step_in_epoch: int = 0) -> Path:
        """last.ckpt after `epoch` complete epochs and `step_in_epoch` steps of the next; rank 0 writes,
        the other ranks only return the path."""
        if not trainer.ranks.writes:
            return self.last
        state = checkpoint.training_state(trainer.step)
        point = checkpoint.ResumePoint(
            epoch=epoch,
            step_in_epoch=step_in_epoch,
            global_step=trainer.global_step,
            val_L1_before=trainer.val_L1_before,
            device_num=trainer.ranks.size,
            batch_size=trainer.data.batch_size,
            train_files=trainer.data.fingerprint(),
            seed=self.seed,
        )
        checkpoint.save(self.last, state, point.meta(), before_rename=self.before_rename)
        if self.every and epoch % self.every == 0 and step_in_epoch == 0:
            periodic = self.folder / f"epoch_{epoch:03d}.ckpt"
            checkpoint.save(periodic, state, point.meta(), before_rename=self.before_rename)
            for old in checkpoint.prune(self.folder, self.keep_last):
                log.info("removed %s (checkpoint.keep_last=%d)", old.name, self.keep_last)
        return self.last


class TensorBoard(Hook):
    """Losses and step time per step, lr and ms/step per epoch, and a sample grid (input | generated |
    target) per epoch into samples/epoch_NNN.png and TensorBoard."""

    def __init__(self, writer: RunWriter, run_dir: Path, mode: str = "paper"):
        self.writer = writer
        self.samples = run_dir / "samples"
        self.mode = mode

    def on_losses(self, trainer: Trainer, losses: dict[str, float], seconds: float) -> None:
        scalars = {**losses, "step_time_ms": seconds * 1000}
        if trainer.step.scaled:  # mixed precision: the scale each step used, and the steps skipped so far
            scalars["amp/loss_scale"] = trainer.step.scale_last
            scalars["amp/skipped_steps"] = float(trainer.step.loss_scale.skipped_steps.asnumpy())
        self.writer.scalars(scalars, trainer.global_step)

    def after_epoch(self, trainer: Trainer, epoch: int, lr: float, ms_per_step: float) -> None:
        self.writer.scalars({"lr": lr, "epoch_ms_per_step": ms_per_step}, epoch)
        n = trainer.data.num_val_samples
        val_A, val_B = trainer.val_A[:n], trainer.val_B[:n]
        # Every rank runs G (a SyncBatchNorm would wait for the others); rank 0 writes.
        fake = generate(trainer.step.G, val_A, self.mode)
        if not trainer.ranks.writes:
            return
        grid = make_grid(val_A, fake, val_B)
        save_png(self.samples / f"epoch_{epoch:03d}.png", grid)
        self.writer.image("samples", grid, epoch)

    def on_stop(self, trainer: Trainer) -> None:
        self.writer.flush()


class Validation(Hook):
    """val.every=N: the validation metrics after every N-th epoch (all but the last, which the loop's final
    validation scores) into the log and TensorBoard (val/L1, val/psnr, val/ssim; val/fid, val/kid)."""

    def __init__(self, writer: RunWriter, every: int):
        self.writer, self.every = writer, every

    def after_epoch(self, trainer: Trainer, epoch: int, lr: float, ms_per_step: float) -> None:
        if not self.every or epoch % self.every or epoch == trainer.schedule.total_epochs:
            return
        metrics = trainer.validate()  # every rank: G may hold a SyncBatchNorm
        shown = {name: value for name, value in metrics.items() if name not in ("kid_std", "kid_subset_size")}
        log.info("validation after epoch %d: %s", epoch, " | ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        self.writer.scalars({f"val/{name}": value for name, value in shown.items()}, epoch)


class StopSignals(Hook):
    """SIGINT/SIGTERM during training: the first asks the loop to stop after the current step (with a
    checkpoint); a second one stops at once (KeyboardInterrupt; every write is atomic)."""

    def __init__(self):
        self.signum: int | None = None
        self.previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s: stopping after the current step to write a checkpoint (again: stop at once)",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def after_step(self, trainer: Trainer) -> None:
        """MindSpore puts its own C-level SIGINT handler in place while it runs (measured: Ctrl-C then
        arrives here as SIGTERM); ours goes back on top after every step, one cheap syscall each."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self.handle)

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class Faults(Hook):
    """Fault injection, for the tests (`debug=faults`: the `fault` keys); all off by default."""

    nan_at_step: int | None = None  # this global step's input becomes NaN
    overflow_at_step: int | None = None  # this global step's input becomes Inf (with amp: an overflow to skip)
    kill_at_step: int | None = None  # SIGKILL after this global step
    kill_in_save: int | None = None  # SIGKILL inside the Nth checkpoint write, before its rename
    signal_at_step: int | None = None  # send `signal_name` to itself `signal_times` times after this step
    signal_name: str = "SIGINT"
    signal_times: int = 1
    rank: int = 0  # the rank that injects them (data-parallel runs)

    def before_step(self, trainer: Trainer, real_A: ms.Tensor, real_B: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
        if trainer.ranks.rank == self.rank:
            for at, value in ((self.nan_at_step, np.nan), (self.overflow_at_step, np.inf)):
                if trainer.global_step + 1 == at:
                    real_A = ms.Tensor(np.full(real_A.shape, value, np.float32))
        return real_A, real_B

    def after_step(self, trainer: Trainer) -> None:
        if trainer.ranks.rank != self.rank:
            return
        if trainer.global_step == self.signal_at_step:
            for _ in range(self.signal_times):
                os.kill(os.getpid(), signal.Signals[self.signal_name])
        if trainer.global_step == self.kill_at_step:
            trainer.call("on_stop")
            os.kill(os.getpid(), signal.SIGKILL)

    def checkpoint_writes(self) -> Callable[[], None]:
        """The callback Checkpoints calls between writing a file and renaming it: SIGKILL in the Nth."""
        saves = [0]

        def count() -> None:
            saves[0] += 1
            if saves[0] == self.kill_in_save:
                os.kill(os.getpid(), signal.SIGKILL)

        return count
