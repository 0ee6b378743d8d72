"""Running a generator on validation images, under the paper's or a deterministic protocol."""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn

from pix2pix.backend import fastpath
from pix2pix.choices import VAL_MODES, check_choice
from pix2pix.models.deploy import inference_copy


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


class Inference:
    """`generate` for the life of a Translator, an eval or a predict run: it runs an inference copy of the
    generator (models.deploy: faster layers, its own copy of the weights as they are at construction),
    paper mode one image at a time, deterministic mode `batch_size` at a time (None: all at once). A
    generator with layers the copy does not know runs itself, through `generate`.

    Nothing changes the copy's weights, so its convolutions take them as constants (backend.fastpath.
    constant_weights: reordered for the CPU once, not per call)."""

    def __init__(self, generator: nn.Cell, mode: str = "paper", batch_size: int | None = 1):
        check_choice("mode", mode, VAL_MODES)
        self.generator = generator
        self.mode = mode
        self.batch_size = 1 if mode == "paper" else batch_size
        self.network = inference_copy(generator, deterministic=mode == "deterministic")
        if self.network is not None:
            self.network.set_train(mode == "paper")  # paper mode: batch statistics and dropout

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """G(inputs), NCHW in [-1, 1]."""
        step = max(1, self.batch_size or len(inputs))
        if self.network is None:
            return generate(self.generator, inputs, self.mode, step)
        with fastpath.constant_weights():  # a new input shape compiles new convolutions: under it too
            return np.concatenate(
                [self.network(ms.Tensor(inputs[i : i + step])).asnumpy() for i in range(0, len(inputs), step)]
            )
