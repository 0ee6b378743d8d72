"""Building blocks shared by the generators and discriminators: convs, norms, init."""

from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops
from mindspore.common import initializer as init

from pix2pix.choices import INIT_TYPES, NORMS, PAD_MODES, check_choice


def norm_layer(norm: str, channels: int) -> nn.Cell | None:
    """BatchNorm with PyTorch's momentum 0.1 (per device, or synchronized over the devices of a
    data-parallel job), or instance norm, or nothing.

    MindSpore has no CPU kernel for InstanceNorm2d; GroupNorm with one group per
    channel and no affine transform computes the same thing (like PyTorch's default).
    """
    check_choice("model.norm", norm, NORMS)
    if norm == "batch":
        return nn.BatchNorm2d(channels, momentum=0.9, eps=1e-5)
    if norm == "sync_batch":
        return nn.SyncBatchNorm(channels, momentum=0.9, eps=1e-5)
    if norm == "instance":
        return nn.GroupNorm(channels, channels, eps=1e-5, affine=False)
    return None


def has_bias(norm: str) -> bool:
    """A conv feeding BatchNorm needs no bias: BatchNorm's beta does its job."""
    return norm not in ("batch", "sync_batch")


def conv4x4(in_ch: int, out_ch: int, stride: int = 2, bias: bool = False, pad_mode: str = "CONSTANT") -> nn.Cell:
    """Conv kernel 4, padding 1: zero padding (the paper) or reflect padding (ModelZoo option)."""
    check_choice("model.pad_mode", pad_mode, PAD_MODES)
    if pad_mode == "CONSTANT":
        return nn.Conv2d(in_ch, out_ch, 4, stride=stride, pad_mode="pad", padding=1, has_bias=bias)
    return nn.SequentialCell(
        nn.Pad(((0, 0), (0, 0), (1, 1), (1, 1)), mode="REFLECT"),
        nn.Conv2d(in_ch, out_ch, 4, stride=stride, pad_mode="valid", has_bias=bias),
    )


def deconv4x4(in_ch: int, out_ch: int, bias: bool = False) -> nn.Cell:
    """Transposed conv kernel 4, stride 2, padding 1: doubles height and width."""
    return nn.Conv2dTranspose(in_ch, out_ch, 4, stride=2, pad_mode="pad", padding=1, has_bias=bias)


class LeakyReLU(nn.Cell):
    """LeakyReLU(x) = max(alpha * x, x), with its gradient written out.

    nn.LeakyReLU's automatic gradient goes through Maximum's (Select, Equal, Greater, Less and a
    division: about 95 ms of a unet_256 step on the CPU); `bprop` gives the same values directly.
    """

    def __init__(self, alpha: float = 0.2):
        super().__init__()
        self.alpha = alpha

    def construct(self, x):
        return ops.maximum(x * self.alpha, x)

    def bprop(self, x, out, dout):
        return (dout * (self.alpha + (1.0 - self.alpha) * (x > 0).astype(x.dtype)),)


def sequential(*layers: nn.Cell | None) -> nn.SequentialCell:
    """A SequentialCell that skips the None entries (an absent norm or dropout)."""
    return nn.SequentialCell([layer for layer in layers if layer is not None])


def _conv_initializer(init_type: str, gain: float) -> init.Initializer:
    check_choice("model.init_type", init_type, INIT_TYPES)
    if init_type == "normal":
        return init.Normal(sigma=gain, mean=0.0)
    if init_type == "xavier":
        return init.XavierNormal(gain=gain)
    if init_type == "kaiming":
        return init.HeNormal(negative_slope=0, mode="fan_in")
    return init.Orthogonal(gain=gain)


def init_weights(net: nn.Cell, init_type: str = "normal", init_gain: float = 0.02) -> nn.Cell:
    """Initialise as pytorch-CycleGAN-and-pix2pix does: conv weights by `init_type`,
    biases zero, BatchNorm gamma ~ N(1, init_gain) and beta zero."""
    conv_init = _conv_initializer(init_type, init_gain)
    for _, cell in net.cells_and_names():
        if isinstance(cell, (nn.Conv2d, nn.Conv2dTranspose)):
            cell.weight.set_data(init.initializer(conv_init, cell.weight.shape, ms.float32))
            if cell.bias is not None:
                cell.bias.set_data(init.initializer("zeros", cell.bias.shape, ms.float32))
        elif isinstance(cell, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            gamma = init.Normal(sigma=init_gain, mean=1.0)
            cell.gamma.set_data(init.initializer(gamma, cell.gamma.shape, ms.float32))
            cell.beta.set_data(init.initializer("zeros", cell.beta.shape, ms.float32))
    return net


def count_params(net: nn.Cell) -> int:
    return sum(p.size for p in net.trainable_params())
