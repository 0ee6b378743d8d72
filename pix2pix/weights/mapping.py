"""Published weights onto our networks: the file's tensors, by its name table, onto our cells in order,
with each publisher's differences made good (BGR inputs, the ModelZoo's skip order and missing biases)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pix2pix import checkpoint
from pix2pix.errors import Pix2PixError
from pix2pix.weights.names import OUR_LEAVES
from pix2pix.weights.published import PUBLISHERS, ROLE_NAMES, Published, describe, is_ours, leaves, state_dict

if TYPE_CHECKING:
    from mindspore import nn

log = logging.getLogger(__name__)

# The ModelZoo's U-Net concatenates (up path, skip), ours and the reference (skip, up path): the input
# channels of every transposed conv but the innermost come in the other order. Its outermost transposed
# conv (G's last layer) and its D's first and last convs have no bias: ours is zero, the same function.
UP_PATH_FIRST = ("modelzoo",)
BIAS_OPTIONAL = ("modelzoo",)


def weighted_cells(net: nn.Cell) -> list[tuple[str, str, nn.Cell]]:
    """(name, kind, cell) of the network's convs, transposed convs and BatchNorms, in cell order."""
    from mindspore import nn

    found = []
    for name, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2dTranspose):
            found.append((name, "deconv", cell))
        elif isinstance(cell, nn.Conv2d):
            found.append((name, "conv", cell))
        elif isinstance(cell, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            found.append((name, "norm", cell))
    return found


def pairs(pub: Published, net: nn.Cell) -> list[tuple[str, str, tuple[int, ...]]]:
    """(our parameter name, the file's tensor name, our shape) for every parameter of `net`; one line
    naming the first tensor that differs (and the overrides that would fit) when the networks differ."""
    ours = weighted_cells(net)
    rows = [row for row in pub.table.rows if row.kind != "norm" or any(kind == "norm" for _, kind, _ in ours)]
    fit = " ".join(pub.implied)
    if [row.kind for row in rows] != [kind for _, kind, _ in ours]:
        raise Pix2PixError(
            f"{pub.path}: holds a {pub.table.network} {ROLE_NAMES[pub.role]}, and the model config builds another "
            f"network ({len(ours)} weighted layers, the file's {len(rows)}): use {fit}"
        )
    found, used = [], set()
    for index, ((cell_name, kind, cell), row) in enumerate(zip(ours, rows)):
        at_an_end = index in (0, len(rows) - 1)
        module = row.names[pub.naming]
        for ours_leaf, file_leaf in zip(OUR_LEAVES[kind], leaves(row, pub.framework)):
            param = getattr(cell, ours_leaf, None)
            source = f"{module}.{file_leaf}"
            if param is None:
                continue
            if source not in pub.shapes and ours_leaf == "bias" and pub.naming in BIAS_OPTIONAL and at_an_end:
                found.append((f"{cell_name}.{ours_leaf}", "", tuple(param.shape)))  # zero
                continue
            if source not in pub.shapes:
                raise Pix2PixError(f"{pub.path}: lacks {source}, which the model config's network has: use {fit}")
            shape, expected = tuple(pub.shapes[source]), tuple(param.shape)
            if shape != expected:
                wanted = _expected(kind, expected, shape)
                raise Pix2PixError(f"{pub.path}: {source} has shape {shape}, {wanted}: use {fit}")
            found.append((f"{cell_name}.{ours_leaf}", source, expected))
            used.add(source)
    extra = [name for name in pub.shapes if name not in used]
    if extra:
        raise Pix2PixError(f"{pub.path}: holds {extra[0]}, which the model config's network lacks: use {fit}")
    return found


def _expected(kind: str, expected: tuple, shape: tuple) -> str:
    if kind == "deconv" and shape[:2] == expected[1::-1] and shape[0] != shape[1]:
        return f"a transposed convolution's weight is (in, out, kh, kw) = {expected}: this one is stored (out, in, ...)"
    return f"the model config's network expects {expected}"


def weights_for(pub: Published, net: nn.Cell) -> dict[str, np.ndarray]:
    """Our parameter names (as net.parameters_and_names gives them) -> float32 arrays from the file."""
    mapping = pairs(pub, net)
    wanted = {pub.sources[source] for _, source, _ in mapping if source}
    state = state_dict(pub.path) if pub.framework == "torch" else _mindspore_state(pub.path, wanted)
    arrays = {}
    for ours, source, shape in mapping:
        arrays[ours] = np.asarray(state[pub.sources[source]], np.float32) if source else np.zeros(shape, np.float32)
    cells = weighted_cells(net)
    if pub.naming in UP_PATH_FIRST:
        deconvs = [name for name, kind, _ in cells if kind == "deconv"]
        for name in deconvs[1:]:  # each takes cat(up, skip) there, cat(skip, up) here
            weight = arrays[f"{name}.weight"]
            half = weight.shape[0] // 2
            arrays[f"{name}.weight"] = np.concatenate([weight[half:], weight[:half]])
    if pub.bgr:
        _flip_to_rgb(arrays, cells, pub.role)
    return arrays


def _mindspore_state(path: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    return {name: param.asnumpy() for name, param in checkpoint.load(path).items() if name in wanted}


def _flip_to_rgb(arrays: dict[str, np.ndarray], cells: list, role: str) -> None:
    """Reverse the colour channels where the network meets images: the first layer's input channels (G: 3,
    D: A then B, 3 each) and G's last layer's output channels."""
    first_name, first_kind, _ = cells[0]
    weight = arrays[f"{first_name}.weight"]
    order = [2, 1, 0] if role == "G" else [2, 1, 0, 5, 4, 3]
    in_axis = 0 if first_kind == "deconv" else 1
    if weight.shape[in_axis] == len(order):
        arrays[f"{first_name}.weight"] = np.take(weight, order, axis=in_axis)
    last_name, last_kind, _ = cells[-1]
    out_axis = 1 if last_kind == "deconv" else 0
    if role == "G" and arrays[f"{last_name}.weight"].shape[out_axis] == 3:
        arrays[f"{last_name}.weight"] = np.take(arrays[f"{last_name}.weight"], [2, 1, 0], axis=out_axis)
        if f"{last_name}.bias" in arrays:
            arrays[f"{last_name}.bias"] = arrays[f"{last_name}.bias"][[2, 1, 0]]


def load_into(net: nn.Cell, path: Path, role: str = "G") -> dict[str, int]:
    """Set `net`'s weights from `path`: our checkpoint (its G. or D. entries) or a published file. Returns the
    checkpoint's epoch and global_step (none for a published or converted file)."""
    from mindspore import Tensor

    if is_ours(path):
        if role == "G":
            return checkpoint.restore_generator(net, path)
        checkpoint.restore(checkpoint.network_state("D", net), checkpoint.load(path), path)
        return {}
    pub = describe(path, role)
    arrays = weights_for(pub, net)
    params = dict(net.parameters_and_names())
    for name, array in arrays.items():
        params[name].set_data(Tensor(array))
    log.info("%s: %d tensors read (%s, %s names)", path, len(arrays), pub.container, PUBLISHERS[pub.naming])
    return {}
