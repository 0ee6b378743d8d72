"""Learning-rate schedules as pure functions of the epoch (0-based), stepped per epoch.

`factor(epoch)` multiplies the optimizer's initial learning rate for that whole epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pix2pix.errors import Pix2PixError


@dataclass(frozen=True)
class Schedule:
    n_epochs: int = 100
    n_epochs_decay: int = 100
    epoch_num: int | None = None  # the ModelZoo's total; derived, checked when given

    def __post_init__(self):
        if self.n_epochs < 0 or self.n_epochs_decay < 0 or self.total_epochs < 1:
            raise Pix2PixError(
                f"schedule.n_epochs={self.n_epochs}, schedule.n_epochs_decay={self.n_epochs_decay}: "
                "both must be >= 0 and at least one epoch in all"
            )
        if self.epoch_num is not None and self.epoch_num != self.total_epochs:
            raise Pix2PixError(
                f"schedule.epoch_num={self.epoch_num} but n_epochs + n_epochs_decay = {self.total_epochs}; "
                "set schedule.n_epochs and schedule.n_epochs_decay instead"
            )

    @property
    def total_epochs(self) -> int:
        return self.n_epochs + self.n_epochs_decay

    def factor(self, epoch: int) -> float:
        raise NotImplementedError

    def factors(self) -> list[float]:
        return [self.factor(e) for e in range(self.total_epochs)]


@dataclass(frozen=True)
class LinearSchedule(Schedule):
    """The paper's: n_epochs at the initial lr, then linear decay over n_epochs_decay epochs
    towards zero (pytorch-CycleGAN-and-pix2pix: 1 - max(0, e + 1 - n_epochs) / (n_epochs_decay + 1))."""

    def factor(self, epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - self.n_epochs) / float(self.n_epochs_decay + 1)


@dataclass(frozen=True)
class StepSchedule(Schedule):
    """Multiply by `gamma` every `step_size` epochs."""

    step_size: int = 50
    gamma: float = 0.1

    def factor(self, epoch: int) -> float:
        return self.gamma ** (epoch // self.step_size)


@dataclass(frozen=True)
class CosineSchedule(Schedule):
    """Cosine annealing from the initial lr to zero over all epochs."""

    def factor(self, epoch: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * epoch / self.total_epochs))
