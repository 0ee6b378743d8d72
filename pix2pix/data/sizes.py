"""The size rule of an aligned pair's halves, without MindSpore: the config checks it before a run
(pix2pix.config.checks) and AlignedData when it is built."""

from __future__ import annotations

from pix2pix.errors import Pix2PixError


def check_sizes(load_size: int, crop_size: int) -> None:
    """Each half is resized to load_size and cropped to crop_size, so the crop must fit."""
    if crop_size > load_size:
        raise Pix2PixError(
            f"dataset.crop_size={crop_size} is larger than dataset.load_size={load_size}; "
            "set dataset.crop_size <= dataset.load_size"
        )
