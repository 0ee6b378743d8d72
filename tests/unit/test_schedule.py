"""Learning-rate schedules: pure per-epoch factors."""

from __future__ import annotations

import pytest

from pix2pix.errors import Pix2PixError
from pix2pix.training.schedule import CosineSchedule, LinearSchedule, StepSchedule


def test_linear_keeps_then_decays_per_epoch():
    assert LinearSchedule(3, 2).factors() == pytest.approx([1, 1, 1, 2 / 3, 1 / 3])


def test_linear_matches_the_reference_for_the_paper_schedule():
    factors = LinearSchedule(100, 100).factors()
    assert len(factors) == 200
    assert factors[:100] == [1.0] * 100
    # pytorch-CycleGAN-and-pix2pix: 1 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1)
    assert factors[100] == pytest.approx(1 - 1 / 101) and factors[-1] == pytest.approx(1 / 101)
    assert all(a > b for a, b in zip(factors[99:], factors[100:]))


def test_step_and_cosine():
    assert StepSchedule(3, 3, step_size=2, gamma=0.5).factors() == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])
    cosine = CosineSchedule(2, 2).factors()
    assert cosine[0] == 1.0 and cosine[2] == pytest.approx(0.5) and cosine[-1] > 0


def test_inconsistent_epoch_num_is_refused():
    with pytest.raises(Pix2PixError, match="schedule.epoch_num=300"):
        LinearSchedule(100, 100, epoch_num=300)
    with pytest.raises(Pix2PixError, match="at least one epoch"):
        LinearSchedule(0, 0)
