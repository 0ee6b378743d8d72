"""Plain images of any size and channel count in and out of a generator.

An image is brought to what the network accepts and the result back to the original size:
- fit=resize: bicubic resize to the training crop size (the scale the generator learned), and back;
- fit=pad: reflect-pad right and bottom to a multiple of the generator's `input_multiple`, run at
  full resolution, crop back.
Grayscale or palette input is converted to the generator's channels; an alpha channel is put back
onto the output unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pix2pix.config import PREDICT_FITS
from pix2pix.data.aligned import IMAGE_SUFFIXES, natural_key, to_array
from pix2pix.errors import Pix2PixError
from pix2pix.track.files import save_image
from pix2pix.track.samples import to_uint8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """One image as the network takes it (CHW in [-1, 1]) and what is needed to undo the fitting."""

    array: np.ndarray
    size: tuple[int, int]  # original (width, height)
    alpha: Image.Image | None


def prepare_image(img: Image.Image, input_nc: int, crop_size: int, multiple: int, fit: str) -> Prepared:
    if fit not in PREDICT_FITS:
        raise Pix2PixError(f"predict.fit={fit!r}: use resize or pad")
    if "A" in img.getbands():
        alpha = img.getchannel("A")
    elif "transparency" in img.info:  # a palette or tRNS transparency
        alpha = img.convert("RGBA").getchannel("A")
    else:
        alpha = None
    mode = "L" if input_nc == 1 else "RGB"
    pixels = img.convert(mode)
    if fit == "resize":
        pixels = pixels.resize((crop_size, crop_size), Image.BICUBIC)
    array = np.asarray(pixels, dtype=np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if fit == "pad":
        h, w = array.shape[:2]
        target_h, target_w = (max(multiple, -(-n // multiple) * multiple) for n in (h, w))
        array = np.pad(array, ((0, target_h - h), (0, target_w - w), (0, 0)), mode="symmetric")
    return Prepared(array=to_array(array), size=img.size, alpha=alpha)


def restore_image(output: np.ndarray, prepared: Prepared, fit: str) -> Image.Image:
    """The generator's CHW output in [-1, 1] as an image of the original size (and alpha)."""
    pixels = to_uint8(output[None])[0]
    width, height = prepared.size
    if fit == "pad":
        pixels = pixels[:height, :width]
    img = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    if img.size != prepared.size:
        img = img.resize(prepared.size, Image.BICUBIC)
    if prepared.alpha is not None:
        img.putalpha(prepared.alpha)
    return img


def image_files(source: Path, exclude: Path | None = None) -> list[Path]:
    """`source` itself, or the images under the folder `source` (recursively, naturally sorted)."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise Pix2PixError(f"predict.input={source}: no such file or folder")
    exclude = exclude.resolve() if exclude else None
    files = [
        p
        for p in source.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not (exclude and p.resolve().is_relative_to(exclude))
    ]
    if not files:
        raise Pix2PixError(f"predict.input={source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return sorted(files, key=lambda p: [*p.relative_to(source).parent.parts, *natural_key(p)])


def output_path(file: Path, source: Path, output: Path) -> Path:
    """Where the translation of `file` goes: the same relative path under `output`, as PNG."""
    relative = Path(file.name) if source.is_file() else file.relative_to(source)
    return (output / relative).with_suffix(".png")


def translate_files(
    files: list[Path],
    source: Path,
    output: Path,
    translate: Callable[[Image.Image], Image.Image],
    progress: Callable[[Iterator[Path]], Iterator[Path]] = iter,
) -> tuple[int, list[str]]:
    """Translate and write one file at a time (memory stays flat for any number of files).

    A file that cannot be read is skipped with a warning; returns (written, problems).
    """
    written, problems = 0, []
    for file in progress(iter(files)):
        try:
            with Image.open(file) as img:
                img.load()
                result = translate(img)
        except (OSError, SyntaxError, ValueError) as err:
            problems.append(f"{file}: {err}")
            log.warning("skipped %s: not a readable image (%s)", file, err)
            continue
        save_image(output_path(file, source, output), result, format="PNG")
        written += 1
    return written, problems
