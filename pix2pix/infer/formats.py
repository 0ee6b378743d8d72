"""Exporting the generator (MINDIR, ONNX, AIR) with a dynamic batch dimension, and checking
the written file against the live network.

The exported network is the deterministic generator (running statistics, no dropout): the
same function as eval.mode=deterministic.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn

from pix2pix.choices import EXPORT_FORMATS, check_choice
from pix2pix.errors import Pix2PixError
from pix2pix.track.files import write_failed

log = logging.getLogger(__name__)

SUFFIX = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
BATCH_DIM = "batch"


def export_generator(generator: nn.Cell, fmt: str, path: Path, input_shape: tuple[int, int, int]) -> Path:
    """Write `generator` (in inference mode) to `path` + the format's suffix, atomically.

    MINDIR takes a dynamic batch directly; MindSpore's ONNX writer refuses dynamic shapes, so the
    ONNX file is written for batch 1 and its batch dimension made symbolic (see make_onnx_batch_dynamic).
    AIR (Ascend only) keeps batch 1, as the ModelZoo's export.
    """
    check_choice("export.format", fmt, EXPORT_FORMATS)
    if fmt == "ONNX":
        onnx_module()  # a missing package is reported before the export starts
    generator.set_train(False)
    final = path.with_suffix(SUFFIX[fmt])
    final.parent.mkdir(parents=True, exist_ok=True)
    stem = final.parent / f".{final.stem}_partial_{os.getpid()}"
    written = stem.parent / (stem.name + SUFFIX[fmt])  # ms.export appends the suffix
    if fmt == "MINDIR":
        example = ms.Tensor(shape=[None, *input_shape], dtype=ms.float32)
    else:
        example = ms.Tensor(np.zeros((1, *input_shape), np.float32))
    try:
        ms.export(generator, example, file_name=str(stem), file_format=fmt)
        written.chmod(0o644)  # MindSpore writes it read-only; the ONNX fix rewrites it
        if fmt == "ONNX":
            make_onnx_batch_dynamic(written)
        os.replace(written, final)
    except OSError as err:
        raise write_failed(final, err, "exporting") from None
    finally:
        written.unlink(missing_ok=True)
    return final


def onnx_module():
    try:
        import onnx
    except ImportError:
        raise Pix2PixError(
            "export.format=ONNX needs the onnx package: pip install -e '.[onnx]' (or pip install onnx onnxruntime)"
        ) from None
    return onnx


def make_onnx_batch_dynamic(path: Path) -> None:
    """Give the ONNX graph a symbolic batch dimension.

    MindSpore 2.10 writes ConvTranspose's `output_shape` as all four NCHW dims; ONNX defines it as
    the spatial dims only, and onnxruntime refuses the file. Keeping the last two fixes that and
    frees the batch dimension, which nothing else in the graph fixes (convolutions, batch norm,
    activations and concatenation on the channel axis).
    """
    onnx = onnx_module()
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "ConvTranspose":
            for attr in node.attribute:
                if attr.name == "output_shape" and len(attr.ints) == 4:
                    del attr.ints[:2]
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    del model.graph.value_info[:]  # shapes inferred for batch 1; onnxruntime infers them again
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def run_exported(path: Path, fmt: str, batch: np.ndarray) -> np.ndarray | None:
    """The exported file's output for `batch`; None where this machine cannot run that format."""
    if fmt == "MINDIR":
        return nn.GraphCell(ms.load(str(path)))(ms.Tensor(batch)).asnumpy()
    if fmt == "ONNX":
        try:
            import onnxruntime
        except ImportError:
            log.warning("onnxruntime is not installed: %s was not run (pip install onnxruntime to check it)", path)
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: batch})[0]
    return None


def verify_export(path: Path, fmt: str, generator: nn.Cell, batch: np.ndarray, tolerance: float) -> float | None:
    """Max abs difference between the file and the live network on `batch`; an error above `tolerance`."""
    generator.set_train(False)
    expected = generator(ms.Tensor(batch)).asnumpy()
    actual = run_exported(path, fmt, batch)
    if actual is None:
        return None
    if actual.shape != expected.shape:
        raise Pix2PixError(f"{path}: gives shape {actual.shape} for input {batch.shape}, expected {expected.shape}")
    diff = float(np.abs(actual - expected).max())
    if not diff <= tolerance:
        raise Pix2PixError(
            f"{path}: differs from the live generator by {diff:.3g} (export.tolerance={tolerance}); "
            "the exported file is not trustworthy"
        )
    return diff
