"""Inference copies of a generator (models.deploy): the same function as the generator, weights of their own."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from pix2pix.infer.generate import Inference, generate
from pix2pix.models.deploy import PhaseConvTranspose, SubPixelConvTranspose, inference_copy
from pix2pix.models.generator import ResnetGenerator, UnetGenerator

ms.set_device("CPU")
ms.set_context(mode=ms.GRAPH_MODE)


def images(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def trained_like(net: nn.Cell, seed: int = 1) -> nn.Cell:
    """Running statistics and affine parameters away from their initial values, as after training."""
    rng = np.random.default_rng(seed)
    for name, p in net.parameters_and_names():
        if name.endswith(("moving_mean", "beta", "bias")):
            p.set_data(ms.Tensor(rng.uniform(-0.2, 0.2, p.shape).astype(np.float32)))
        elif name.endswith(("moving_variance", "gamma")):
            p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
    return net


def cells_of(net: nn.Cell, kind: type) -> list[nn.Cell]:
    return [cell for _, cell in net.cells_and_names() if isinstance(cell, kind)]


@pytest.mark.parametrize("size", [(1, 1), (4, 4), (5, 7)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("form", [PhaseConvTranspose, SubPixelConvTranspose])
def test_a_transposed_convolution_is_four_interleaved_stride_1_convolutions(size, bias, form):
    """ConvTranspose(4, stride 2, padding 1) against its phase forms (four 2x2 convolutions, or one 3x3 with
    the four side by side), on odd sizes and the 1x1 bottleneck."""
    deconv = nn.Conv2dTranspose(6, 5, 4, stride=2, pad_mode="pad", padding=1, has_bias=bias)
    deconv.weight.set_data(ms.Tensor(images(6, 5, 4, 4, seed=2)))
    if bias:
        deconv.bias.set_data(ms.Tensor(images(5, seed=3)))
    phases = form(deconv.weight.asnumpy(), deconv.bias.asnumpy() if bias else None)
    x = ms.Tensor(images(2, 6, *size))
    expected, got = deconv(x).asnumpy(), phases(x).asnumpy()
    assert got.shape == expected.shape == (2, 5, 2 * size[0], 2 * size[1])
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize(
    "make",
    [
        lambda: UnetGenerator(num_downs=6, ngf=8),
        lambda: UnetGenerator(num_downs=6, ngf=8, pad_mode="REFLECT"),
        lambda: UnetGenerator(num_downs=6, ngf=8, norm="instance"),
        lambda: ResnetGenerator(ngf=8, n_blocks=2),
    ],
    ids=["unet", "unet-reflect", "unet-instance", "resnet"],
)
def test_the_deterministic_copy_computes_what_the_generator_computes(make):
    net = trained_like(make())
    x = images(3, 3, 64, 64)
    expected = generate(net, x, "deterministic", batch_size=3)
    copy = inference_copy(net, deterministic=True)
    got = Inference(net, "deterministic", batch_size=2)(x)  # batches of 2 and 1
    assert np.abs(got - expected).max() <= 1e-4
    assert not cells_of(copy, (nn.BatchNorm2d, nn.Dropout))  # folded, left out
    if isinstance(net, UnetGenerator):  # the last layer (3 outputs) as one convolution, the others as four
        assert not cells_of(copy, nn.Conv2dTranspose) and len(cells_of(copy, PhaseConvTranspose)) == 5
        assert len(cells_of(copy, SubPixelConvTranspose)) == 1


def test_the_copy_owns_its_weights():
    """Changing the generator afterwards (as training does) leaves the copy as it was."""
    net = trained_like(UnetGenerator(num_downs=5, ngf=8))
    x = images(1, 3, 32, 32)
    run = Inference(net, "deterministic")
    before = run(x)
    for p in net.trainable_params():
        p.set_data(ms.Tensor(np.zeros(p.shape, np.float32)))
    assert np.array_equal(run(x), before)
    assert not set(map(id, run.network.get_parameters())) & set(map(id, net.get_parameters()))


def test_paper_mode_keeps_batch_statistics_and_dropout_and_leaves_the_generator_alone():
    net = trained_like(UnetGenerator(num_downs=6, ngf=8))
    running = {p.name: p.asnumpy().copy() for p in net.get_parameters() if "moving" in p.name}
    run = Inference(net, "paper")
    assert cells_of(run.network, nn.BatchNorm2d) and cells_of(run.network, nn.Dropout)
    x = images(2, 3, 64, 64)
    first, second = run(x), run(x)
    assert first.shape == (2, 3, 64, 64) and not np.array_equal(first, second)  # dropout draws differ
    assert all(np.array_equal(p.asnumpy(), running[p.name]) for p in net.get_parameters() if "moving" in p.name)
    # without dropout, the copy's paper mode is the generator's (batch statistics of each image)
    quiet = trained_like(UnetGenerator(num_downs=6, ngf=8, use_dropout=False))
    assert np.abs(Inference(quiet, "paper")(x) - generate(quiet, x, "paper")).max() <= 1e-4


def test_an_unknown_layer_with_weights_runs_the_generator_itself():
    class Odd(nn.Cell):
        def __init__(self):
            super().__init__()
            self.scale = ms.Parameter(ms.Tensor(np.float32(0.5)))

        def construct(self, x):
            return x * self.scale

    net = nn.SequentialCell([nn.Conv2d(3, 3, 3, pad_mode="same"), Odd()])
    assert inference_copy(net, deterministic=True) is None
    run = Inference(net, "deterministic")
    x = images(1, 3, 8, 8)
    assert run.network is None and np.allclose(run(x), generate(net, x, "deterministic"))
