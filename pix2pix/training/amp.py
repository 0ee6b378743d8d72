"""Mixed precision for the train step: MindSpore's AMP levels on G and D, and dynamic loss scaling.

O1 runs the white-listed operators (the convolutions) in float16; O2 all but BatchNorm; O3 everything.
The weights stay float32 (each float16 operator casts them on the fly), so checkpoints are float32
at every level. The loss is multiplied by a scale before the gradients are taken and the gradients
divided by it after, so that small float16 gradients do not flush to zero; a step whose gradients
overflow is skipped and the scale halved, and after `window` good steps in a row it doubles.
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from pix2pix.choices import AMP_LEVELS, check_choice

AMP_SCOPE = {  # what runs in float16 at each level, for the log
    "O1": "convolutions",
    "O2": "all but BatchNorm",
    "O3": "everything",
}


def mixed_precision(net: nn.Cell, level: str) -> nn.Cell:
    """`net` at AMP `level` (O0: unchanged). Each float16 part is wrapped in a cast back to float32 whose
    child is `_backbone` (checkpoint.network_state leaves that level out of the names).

    O1 is done here, not by MindSpore's auto_mixed_precision: that rewrites the network's source into
    ./rewritten_network/ and imports it from there (code written to, and run from, the current folder)."""
    check_choice("amp", level, AMP_LEVELS)
    if level == "O0":
        return net
    if level == "O1":
        return float16_convolutions(net)
    return ms.amp.auto_mixed_precision(net, level, dtype=ms.float16)


class Float16(nn.Cell):
    """`cell` in float16, its output cast back to float32 (O1: the white-listed operators alone)."""

    def __init__(self, cell: nn.Cell):
        super().__init__(auto_prefix=False)
        self._backbone = cell.to_float(ms.float16)

    def construct(self, x):
        return self._backbone(x).astype(ms.float32)


def float16_convolutions(net: nn.Cell) -> nn.Cell:
    """Every convolution and transposed convolution of `net` wrapped in Float16, in place."""
    changed = False
    for name, child in net.name_cells().items():
        if isinstance(child, (nn.Conv2d, nn.Conv2dTranspose)):
            net._cells[name] = Float16(child)  # as MindSpore's own AMP swaps cells (amp._auto_black_list)
            changed = True
        elif child is not net:
            float16_convolutions(child)
    if changed and isinstance(net, nn.SequentialCell):
        net.cell_list = list(net.cells())
    return net


class DynamicLossScale(nn.Cell):
    """The loss scale and its counters, as Parameters: they live in the compiled step and its checkpoint
    (config.checks.validate checks the loss_scale keys)."""

    def __init__(self, initial: float = 2.0**16, factor: float = 2.0, window: int = 1000):
        super().__init__()
        self.scale = Parameter(Tensor(initial, ms.float32), name="scale", requires_grad=False)
        self.good_steps = Parameter(Tensor(0, ms.int32), name="good_steps", requires_grad=False)
        self.skipped_steps = Parameter(Tensor(0, ms.int32), name="skipped_steps", requires_grad=False)
        self.factor = factor
        self.window = window

    def unscale(self, grads: tuple, scale: Tensor) -> tuple:
        return tuple(grad / scale for grad in grads)

    def construct(self, finite: Tensor) -> Tensor:
        """After a step: halve on overflow (not below 1), double after `window` finite steps in a row."""
        scale = self.scale
        good = ops.select(finite, self.good_steps + 1, ops.zeros_like(self.good_steps))
        grow = good >= self.window
        grown = ops.select(grow, scale * self.factor, scale)
        new_scale = ops.select(finite, grown, ops.maximum(scale / self.factor, ops.ones_like(scale)))
        ops.assign(self.good_steps, ops.select(grow, ops.zeros_like(good), good))
        ops.assign_add(self.skipped_steps, ops.logical_not(finite).astype(ms.int32))
        return ops.assign(self.scale, new_scale)


def all_finite(grads: tuple) -> Tensor:
    """Whether every gradient is free of Inf and NaN, as one boolean scalar."""
    return ops.stack([ops.isfinite(grad).all() for grad in grads]).all()


class Snapshot(nn.Cell):
    """A copy of some Parameters, saved at the start of a step and put back when the step is skipped."""

    def __init__(self, params: list[Parameter]):
        super().__init__()
        self.params = ms.ParameterTuple(params)
        self.copies = ms.ParameterTuple(
            Parameter(p.data.copy(), name=f"snapshot.{i}", requires_grad=False) for i, p in enumerate(params)
        )

    def save(self) -> Tensor:
        for param, copy in zip(self.params, self.copies):
            ops.assign(copy, param)
        return Tensor(True)

    def restore(self) -> Tensor:
        for param, copy in zip(self.params, self.copies):
            ops.assign(param, copy)
        return Tensor(True)
