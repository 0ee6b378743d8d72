"""Aligned A|B files from two folders of matching file names (the reference repository's
combine_A_and_B): A/train/1.jpg + B/train/1.jpg -> OUT/train/1.jpg with A on the left.

Every pair is checked before anything is written: unmatched names and size mismatches stop it
with the first offending file named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pix2pix.data.aligned import IMAGE_SUFFIXES, natural_key
from pix2pix.errors import Pix2PixError
from pix2pix.track.files import save_image

JPEG_QUALITY = 95


def images_under(folder: Path, key: str) -> dict[Path, Path]:
    """Image files below `folder` by their path relative to it."""
    if not folder.is_dir():
        raise Pix2PixError(f"{key}={folder}: no such folder")
    files = {p.relative_to(folder): p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    if not files:
        raise Pix2PixError(f"{key}={folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return files


def unmatched(names: set[Path], other: set[Path], side: str, other_side: str) -> None:
    if names - other:
        missing = sorted(names - other, key=lambda p: natural_key(p))
        raise Pix2PixError(
            f"combine: {len(missing)} files in {side} have no file of the same name in {other_side} "
            f"(first: {missing[0]}); A and B must hold the same file names"
        )


def image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError, ValueError) as err:
        raise Pix2PixError(f"{path}: corrupt or not an image ({err}); replace or delete the file") from None


def combine_folders(a: Path, b: Path, output: Path) -> int:
    """Write OUT/<relative path>.jpg = [A | B] for every name in both folders; returns the count."""
    files_a, files_b = images_under(a, "combine.a"), images_under(b, "combine.b")
    unmatched(set(files_a), set(files_b), f"combine.a={a}", f"combine.b={b}")
    unmatched(set(files_b), set(files_a), f"combine.b={b}", f"combine.a={a}")
    names = sorted(files_a, key=lambda p: natural_key(p))
    for name in names:
        size_a, size_b = image_size(files_a[name]), image_size(files_b[name])
        if size_a != size_b:
            raise Pix2PixError(
                f"combine: {name} is {size_a[0]}x{size_a[1]} in A but {size_b[0]}x{size_b[1]} in B; "
                "A and B of a pair must have the same size"
            )
    for name in names:
        with Image.open(files_a[name]) as img_a, Image.open(files_b[name]) as img_b:
            pair = np.concatenate([np.asarray(img_a.convert("RGB")), np.asarray(img_b.convert("RGB"))], axis=1)
        save_image((output / name).with_suffix(".jpg"), Image.fromarray(pair), format="JPEG", quality=JPEG_QUALITY)
    return len(names)
