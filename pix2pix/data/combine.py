"""Aligned A|B files from two folders of matching file names (the reference repository's
combine_A_and_B): A/train/1.jpg + B/train/1.jpg -> OUT/train/1.jpg with A on the left.

Unmatched names stop it before anything is decoded; a file that cannot be read or a pair of two
sizes stops it with the file named, and nothing appears at the output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from pix2pix.data.aligned import IMAGE_SUFFIXES
from pix2pix.data.images import DEFAULT_MAX_PIXELS, read_image, rgb
from pix2pix.errors import Pix2PixError
from pix2pix.track.files import natural_key, real, result_names, save_image, write_failed

JPEG_QUALITY = 95


def images_under(folder: Path, key: str) -> dict[Path, Path]:
    """Image files below `folder` by their path relative to it."""
    if not folder.is_dir():
        raise Pix2PixError(f"{key}={folder}: no such folder")
    files = {
        p.relative_to(folder): p for p in folder.rglob("*") if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES
    }
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


def refuse_overlap(a: Path, b: Path, output: Path) -> None:
    """The output must be a new (or empty) folder of its own: never A, B or a folder inside them."""
    target = real(output)
    for key, folder in (("combine.a", a), ("combine.b", b)):
        source = real(folder)
        if target.is_relative_to(source):
            raise Pix2PixError(
                f"combine.output={output} is {'' if target == source else 'inside '}{key}={folder}; writing there "
                "would mix pairs into (or replace) the inputs: choose a new folder"
            )
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise Pix2PixError(
            f"combine.output={output} exists and is not an empty folder; choose a new folder or empty it"
        )


def combine_folders(a: Path, b: Path, output: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Write OUT/<relative path>.jpg = [A | B] for every name in both folders; returns the count.

    Every pair is decoded fully before it is written, into a temporary folder beside `output` that is
    renamed into place once all are written: a bad file or a full disk leaves no half-made output."""
    refuse_overlap(a, b, output)
    files_a, files_b = images_under(a, "combine.a"), images_under(b, "combine.b")
    unmatched(set(files_a), set(files_b), f"combine.a={a}", f"combine.b={b}")
    unmatched(set(files_b), set(files_a), f"combine.b={b}", f"combine.a={a}")
    names = sorted(files_a, key=lambda p: natural_key(p))
    targets = [name.parent / f"{stem}.jpg" for name, stem in zip(names, result_names(names))]
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        for name, target in zip(names, targets):
            img_a, img_b = (rgb(read_image(files[name], max_pixels).image) for files in (files_a, files_b))
            if img_a.size != img_b.size:
                raise Pix2PixError(
                    f"combine: {name} is {img_a.size[0]}x{img_a.size[1]} in A but {img_b.size[0]}x{img_b.size[1]} "
                    "in B; A and B of a pair must have the same size; nothing was written"
                )
            pair = np.concatenate([np.asarray(img_a), np.asarray(img_b)], axis=1)
            save_image(tmp / target, Image.fromarray(pair), format="JPEG", quality=JPEG_QUALITY)
        try:
            if output.is_dir():
                output.rmdir()  # empty (checked above)
            os.replace(tmp, output)
        except OSError as err:
            raise write_failed(output, err, "putting the pairs in place") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(names)
