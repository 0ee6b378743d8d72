"""Sample grids: one row per validation image, columns input | generated | target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pix2pix.track.files import save_image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """NCHW floats in [-1, 1] -> NHWC uint8."""
    return np.clip((images.transpose(0, 2, 3, 1) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def make_grid(inputs: np.ndarray, generated: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Three NCHW batches in [-1, 1] -> one HWC uint8 image of N rows and 3 columns."""
    rows = [np.concatenate(cols, axis=1) for cols in zip(to_uint8(inputs), to_uint8(generated), to_uint8(targets))]
    return np.concatenate(rows, axis=0)


def save_png(path: Path, image: np.ndarray) -> Path:
    return save_image(path, Image.fromarray(image), format="PNG")
