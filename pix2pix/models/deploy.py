"""Inference copies of a generator: the same function, cheaper layers, weights of its own.

A Translator, an eval or a predict run applies one set of weights for its whole life, so it can run a
copy rebuilt for inference (as MMEngine's `switch_to_deploy` or RepVGG's re-parameterisation do):
- each 4x4 stride-2 transposed convolution (the U-Net's decoder) becomes four 2x2 stride-1
  convolutions whose outputs interleave (PhaseConvTranspose). oneDNN runs a transposed convolution as
  the backward-data pass of a convolution, several times slower on the CPU than forward convolutions
  doing the same arithmetic;
- deterministic mode: each BatchNorm is folded into the convolution before it (the running statistics
  are constants) and dropout is left out.
The copy holds copies of the weights, never the generator's own Parameters: training the generator
afterwards does not change the copy, so nothing needs checking per call.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from pix2pix.models.generator import Chain, Residual, UNet

BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)
SUBPIXEL_MAX_CHANNELS = 4  # a transposed convolution with this many outputs or fewer runs as SubPixelConvTranspose


class NotDeployable(Exception):
    """The generator has a layer with weights that inference_copy does not know how to copy."""


def constant(value: np.ndarray) -> ms.Tensor:
    return ms.Tensor(np.ascontiguousarray(value, dtype=np.float32))


def phase_kernels(weight: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """The 2x2 forward-convolution kernel (out, in, 2, 2) of each output phase (a, b) of a 4x4 stride-2 pad-1
    transposed convolution with weight (in, out, 4, 4).

    Output row 2m + a takes input rows m - 1 + a and m + a through kernel rows 3 - a and 1 - a (a = 0, 1),
    and likewise for columns: phase (a, b) is a forward convolution with kernel w[:, :, 3-a::-2, 3-b::-2]
    (input and output channels swapped), padded (1 - a, a) above and below and (1 - b, b) left and right.
    """
    return {(a, b): weight[:, :, 3 - a :: -2, 3 - b :: -2].transpose(1, 0, 2, 3) for a in (0, 1) for b in (0, 1)}


def interleave(phases, n: int, c: int, h: int, w: int):
    """out[:, :, 2m + a, 2k + b] = phase (a, b)[:, :, m, k], from the phases side by side on the channel axis
    (order (0, 0), (0, 1), (1, 0), (1, 1)): one transpose (MindSpore's CPU Stack copies element by element
    along the last axis, 3-4x slower for the same interleave)."""
    return phases.reshape(n, 2, 2, c, h, w).transpose(0, 3, 4, 1, 5, 2).reshape(n, c, 2 * h, 2 * w)


def conv2d(in_ch: int, out_ch: int, kernel: np.ndarray, bias: np.ndarray | None, padding) -> nn.Conv2d:
    return nn.Conv2d(
        in_ch,
        out_ch,
        kernel.shape[2:],
        pad_mode="pad",
        padding=padding,
        has_bias=bias is not None,
        weight_init=constant(kernel),
        bias_init=None if bias is None else constant(bias),
    )


class PhaseConvTranspose(nn.Cell):
    """ConvTranspose(kernel 4, stride 2, padding 1) as four 2x2 stride-1 convolutions, one per output phase
    (phase_kernels), whose results interleave into the doubled output. Same sums, in another order: equal
    to rounding."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None):
        super().__init__()
        in_ch, out_ch = weight.shape[:2]
        self.phases = nn.CellList(
            [conv2d(in_ch, out_ch, k, bias, (1 - a, a, 1 - b, b)) for (a, b), k in phase_kernels(weight).items()]
        )

    def construct(self, x):
        phases = [phase(x) for phase in self.phases]
        n, c, h, w = phases[0].shape
        return interleave(ops.cat(phases, 1), n, c, h, w)


class SubPixelConvTranspose(nn.Cell):
    """The same transposed convolution as one 3x3 convolution with the four phases' outputs side by side
    (phase (a, b)'s 2x2 kernel at rows a..a+1, columns b..b+1 of the 3x3, zeros elsewhere), then the
    interleave. 2.25x the multiplications of PhaseConvTranspose, but one pass over the input instead of
    four: faster where the outputs are few (the U-Net's last layer: 3 channels, which CPU kernels pad to
    8 or 16 per convolution)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None):
        super().__init__()
        in_ch, out_ch = weight.shape[:2]
        kernel = np.zeros((4, out_ch, in_ch, 3, 3), weight.dtype)
        for p, ((a, b), k) in enumerate(phase_kernels(weight).items()):
            kernel[p, :, :, a : a + 2, b : b + 2] = k
        both = None if bias is None else np.tile(bias, 4)
        self.conv = conv2d(in_ch, 4 * out_ch, kernel.reshape(4 * out_ch, in_ch, 3, 3), both, 1)

    def construct(self, x):
        n, _, h, w = x.shape
        y = self.conv(x)
        return interleave(y, n, y.shape[1] // 4, h, w)


def is_phase_decomposable(cell: nn.Conv2dTranspose) -> bool:
    return (
        cell.kernel_size == (4, 4)
        and cell.stride == (2, 2)
        and cell.pad_mode == "pad"
        and (cell.padding_top, cell.padding_bottom, cell.padding_left, cell.padding_right) == (1, 1, 1, 1)
        and cell.dilation == (1, 1)
        and cell.group == 1
        and cell.output_padding == 0
    )


def conv_copy(cell: nn.Conv2d | nn.Conv2dTranspose, norm: nn.Cell | None = None) -> nn.Cell:
    """A copy of the convolution with `norm` (a BatchNorm in inference mode) folded in."""
    weight = cell.weight.asnumpy().astype(np.float64)
    bias = cell.bias.asnumpy().astype(np.float64) if cell.bias is not None else None
    transposed = isinstance(cell, nn.Conv2dTranspose)
    if norm is not None:
        scale = norm.gamma.asnumpy() / np.sqrt(norm.moving_variance.asnumpy().astype(np.float64) + norm.eps)
        shift = norm.beta.asnumpy() - norm.moving_mean.asnumpy() * scale
        weight = weight * (scale[None, :, None, None] if transposed else scale[:, None, None, None])
        bias = shift if bias is None else bias * scale + shift
    if transposed and is_phase_decomposable(cell):
        form = SubPixelConvTranspose if cell.out_channels <= SUBPIXEL_MAX_CHANNELS else PhaseConvTranspose
        return form(weight, bias)
    kind = nn.Conv2dTranspose if transposed else nn.Conv2d
    extra = {"output_padding": cell.output_padding} if transposed else {}
    return kind(
        cell.in_channels,
        cell.out_channels,
        cell.kernel_size,
        stride=cell.stride,
        pad_mode=cell.pad_mode,
        padding=cell.padding,
        dilation=cell.dilation,
        group=cell.group,
        has_bias=bias is not None,
        weight_init=constant(weight),
        bias_init=None if bias is None else constant(bias),
        **extra,
    )


def norm_copy(cell: nn.Cell) -> nn.Cell:
    if isinstance(cell, BATCH_NORMS):
        return nn.BatchNorm2d(
            cell.num_features,
            eps=cell.eps,
            gamma_init=constant(cell.gamma.asnumpy()),
            beta_init=constant(cell.beta.asnumpy()),
            moving_mean_init=constant(cell.moving_mean.asnumpy()),
            moving_var_init=constant(cell.moving_variance.asnumpy()),
        )
    return nn.GroupNorm(
        cell.num_groups,
        cell.num_channels,
        eps=cell.eps,
        affine=cell.affine,
        gamma_init=constant(cell.gamma.asnumpy()),
        beta_init=constant(cell.beta.asnumpy()),
    )


def flattened(cell: nn.SequentialCell) -> list[nn.Cell]:
    layers = []
    for layer in cell.cells():
        layers += flattened(layer) if isinstance(layer, nn.SequentialCell) else [layer]
    return layers


def sequence_copy(layers: list[nn.Cell], deterministic: bool) -> list[nn.Cell]:
    """Layer by layer; in deterministic mode a BatchNorm right after a convolution is folded into it."""
    out, i = [], 0
    while i < len(layers):
        layer = layers[i]
        following = layers[i + 1] if i + 1 < len(layers) else None
        if deterministic and isinstance(layer, (nn.Conv2d, nn.Conv2dTranspose)) and isinstance(following, BATCH_NORMS):
            out.append(conv_copy(layer, following))
            i += 2
            continue
        if not (deterministic and isinstance(layer, nn.Dropout)):
            out.append(layer_copy(layer, deterministic))
        i += 1
    return out


def layer_copy(cell: nn.Cell, deterministic: bool) -> nn.Cell:
    if isinstance(cell, UNet):
        down = [layer_copy(block, deterministic) for block in cell.down]
        up = [layer_copy(block, deterministic) for block in cell.up]
        return UNet(down, up, cell.input_multiple)
    if isinstance(cell, Chain):
        return Chain(sequence_copy(flattened(cell.model), deterministic), cell.input_multiple)
    if isinstance(cell, Residual):
        return Residual(layer_copy(cell.block, deterministic))
    if isinstance(cell, nn.SequentialCell):
        return nn.SequentialCell(sequence_copy(flattened(cell), deterministic))
    if isinstance(cell, (nn.Conv2d, nn.Conv2dTranspose)):
        return conv_copy(cell)
    if isinstance(cell, (*BATCH_NORMS, nn.GroupNorm)):
        return norm_copy(cell)
    if isinstance(cell, nn.Dropout):
        return nn.Dropout(p=cell.p)
    if not list(cell.get_parameters()) and not list(cell.cells()):
        return cell  # activations and padding hold nothing: shared
    raise NotDeployable(type(cell).__name__)


def inference_copy(generator: nn.Cell, deterministic: bool) -> nn.Cell | None:
    """A copy of `generator` for inference with its current weights (run it with set_train(not deterministic):
    paper mode keeps BatchNorm's batch statistics and dropout); None for a generator of unknown layers."""
    try:
        return layer_copy(generator, deterministic)
    except NotDeployable:
        return None
