"""Running a generator on validation images, under the paper's or a deterministic protocol."""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn

from pix2pix.choices import VAL_MODES, check_choice


def _running_stats(net: nn.Cell) -> list[tuple[ms.Parameter, np.ndarray]]:
    return [
        (p, p.asnumpy().copy())
        for name, p in net.parameters_and_names()
        if name.endswith(("moving_mean", "moving_variance"))
    ]


def generate(generator: nn.Cell, inputs: np.ndarray, mode: str = "paper", batch_size: int = 1) -> np.ndarray:
    """G(inputs) (NCHW in [-1, 1]).

    paper: batch statistics and dropout on, as the paper's test protocol; BatchNorm's
    running statistics are restored afterwards, so validating never changes the model.
    Always one image at a time: batch statistics are per image.
    deterministic: running statistics, no dropout; the same input gives the same output.
    Runs `batch_size` images at a time (faster per image on the CPU; each image's output
    is its own, up to float rounding).
    """
    check_choice("mode", mode, VAL_MODES)
    step = 1 if mode == "paper" else max(1, batch_size)
    was_training = generator.training
    saved = _running_stats(generator) if mode == "paper" else []
    generator.set_train(mode == "paper")
    try:
        outputs = [generator(ms.Tensor(inputs[i : i + step])).asnumpy() for i in range(0, len(inputs), step)]
    finally:
        for param, value in saved:
            param.set_data(ms.Tensor(value))
        generator.set_train(was_training)
    return np.concatenate(outputs)
