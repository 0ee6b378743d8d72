"""Plain images of any size and channel count in and out of a generator.

An image is brought to what the network accepts and the result back to the original size:
- fit=resize: bicubic resize to the scale the generator learned (the training crop size, or the run's
  dataset.preprocess resize), mirror-padded to a multiple of its `input_multiple` where needed, and back;
- fit=pad: mirror-pad right and bottom to a multiple of the generator's `input_multiple`, run at
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
from mindspore import nn
from PIL import Image

from pix2pix.choices import PREDICT_FITS, VAL_MODES, check_choice
from pix2pix.data.aligned import IMAGE_SUFFIXES
from pix2pix.data.images import DEFAULT_MAX_PIXELS, UnreadableImage, conversion_note, read_image
from pix2pix.data.preprocess import Preprocess, to_array
from pix2pix.data.sizes import height_width
from pix2pix.errors import Pix2PixError
from pix2pix.infer.generate import Inference
from pix2pix.track.files import natural_key, real, result_names, save_image
from pix2pix.track.samples import to_uint8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """One image as the network takes it (CHW in [-1, 1]) and what is needed to undo the fitting."""

    array: np.ndarray
    size: tuple[int, int]  # original (width, height)
    content: tuple[int, int]  # (width, height) of the array's image part; the rest is padding
    alpha: Image.Image | None


def prepare_image(
    img: Image.Image,
    input_nc: int,
    crop_size: int | tuple[int, int],
    multiple: int,
    fit: str,
    preprocess: Preprocess | None = None,
) -> Prepared:
    """fit=resize: to the scale the run trained at (`preprocess`'s deterministic resize; without one, to
    crop_size, an int or (height, width)); then (and for fit=pad, only) mirror-padded to `multiple`."""
    if "A" in img.getbands():
        alpha = img.getchannel("A")
    elif "transparency" in img.info:  # a palette or tRNS transparency
        alpha = img.convert("RGBA").getchannel("A")
    else:
        alpha = None
    mode = "L" if input_nc == 1 else "RGB"
    pixels = img.convert(mode)
    if fit == "resize":
        crop_h, crop_w = height_width(crop_size, "crop_size")
        target = preprocess.scaled(img.size, train=False) if preprocess else (crop_w, crop_h)
        if target != pixels.size:
            pixels = pixels.resize(target, Image.BICUBIC)
    array = np.asarray(pixels, dtype=np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    h, w = array.shape[:2]
    target_h, target_w = (max(multiple, -(-n // multiple) * multiple) for n in (h, w))
    array = np.pad(array, ((0, target_h - h), (0, target_w - w), (0, 0)), mode="symmetric")
    return Prepared(array=to_array(array), size=img.size, content=(w, h), alpha=alpha)


def restore_image(output: np.ndarray, prepared: Prepared) -> Image.Image:
    """The generator's CHW output in [-1, 1] as an image of the original size (and alpha)."""
    pixels = to_uint8(output[None])[0]
    width, height = prepared.content
    pixels = pixels[:height, :width]
    img = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    if img.size != prepared.size:
        img = img.resize(prepared.size, Image.BICUBIC)
    if prepared.alpha is not None:
        img.putalpha(prepared.alpha)
    return img


def image_files(source: Path, exclude: Path | None = None) -> list[Path]:
    """`source` itself, or the images under the folder `source` (recursively, naturally sorted), leaving
    out the folder `exclude` when it lies inside `source` (the results of an earlier run)."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise Pix2PixError(f"predict.input={source}: no such file or folder")
    skip = real(exclude) if exclude is not None else None
    if skip is not None and (skip == real(source) or not skip.is_relative_to(real(source))):
        skip = None  # the input folder itself, or outside it: nothing to leave out
    files = [
        p
        for p in source.rglob("*")
        # not p.is_dir(): a link loop or a FIFO is listed, then skipped with a warning, not left out silently
        if p.suffix.lower() in IMAGE_SUFFIXES and not (skip and real(p).is_relative_to(skip)) and not p.is_dir()
    ]
    if not files:
        raise Pix2PixError(f"predict.input={source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return sorted(files, key=lambda p: [*p.relative_to(source).parent.parts, *natural_key(p)])


def output_paths(files: list[Path], source: Path, output: Path) -> list[Path]:
    """Where each translation goes: the same relative path under `output`, as PNG; the source extension
    stays in the name where two inputs of a folder share a stem (a.jpg, a.png -> a.jpg.png, a.png.png).
    A result that would replace one of the inputs is refused, before anything is translated."""
    relative = [Path(file.name) if source.is_file() else file.relative_to(source) for file in files]
    paths = [output / rel.parent / f"{name}.png" for rel, name in zip(relative, result_names(relative))]
    inputs = {same_file_key(file): file for file in files}
    for path in paths:
        clash = inputs.get(same_file_key(path))
        if clash is not None:
            raise Pix2PixError(
                f"predict.output={output}: the result for {clash} would replace that input; choose another "
                "predict.output (by default results go to <run>/predict/images)"
            )
    return paths


def same_file_key(path: Path) -> tuple:
    """What identifies a file on disk (so a link or a hard link to an input counts as that input)."""
    try:
        info = path.stat()
        return ("inode", info.st_dev, info.st_ino)
    except OSError:
        return ("path", str(real(path)))


def translate_files(
    files: list[Path],
    outputs: list[Path],
    translate: Callable[[Image.Image], Image.Image],
    progress: Callable[[Iterator], Iterator] = iter,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, list[str]]:
    """Translate and write one file at a time (memory stays flat for any number of files).

    A file that cannot be read (corrupt, not an image, over data.max_pixels) is skipped with a warning;
    returns (written, problems).
    """
    written, problems = 0, []
    for file, output in progress(zip(files, outputs)):
        try:
            decoded = read_image(file, max_pixels)
        except UnreadableImage as err:
            problems.append(str(err))
            log.warning("skipped %s", err)
            continue
        note = conversion_note(decoded)
        if note:
            log.warning("%s: %s", file, note)
        save_image(output, translate(decoded.image), format="PNG")
        written += 1
    return written, problems


class Translator:
    """A trained generator with the settings to apply it to whole images of any size."""

    def __init__(
        self,
        generator: nn.Cell,
        input_nc: int,
        crop_size: int | tuple[int, int],
        mode: str = "paper",
        fit: str = "resize",
        preprocess: Preprocess | None = None,
    ):
        """crop_size: the training crop (an int, or (height, width)); `preprocess`: the run's dataset
        preprocessing, whose deterministic resize fit=resize applies (AlignedData.preprocess). The
        generator's weights are taken as they are now (infer.generate.Inference)."""
        check_choice("mode", mode, VAL_MODES)
        check_choice("fit", fit, PREDICT_FITS)
        self.generator = generator
        self.input_nc = input_nc
        self.crop_size = crop_size
        self.mode = mode
        self.fit = fit
        self.preprocess = preprocess
        self.inference = Inference(generator, mode, batch_size=None)

    def generate(self, batch: np.ndarray) -> np.ndarray:
        """The network itself: float32 NCHW in [-1, 1] -> NCHW in [-1, 1]; deterministic mode runs
        the whole batch at once, paper mode one image at a time (its batch statistics are per image)."""
        return self.inference(np.ascontiguousarray(batch, dtype=np.float32))

    def translate_image(self, img: Image.Image) -> Image.Image:
        multiple = getattr(self.generator, "input_multiple", 1)
        prepared = prepare_image(img, self.input_nc, self.crop_size, multiple, self.fit, self.preprocess)
        output = self.generate(prepared.array[None])[0]
        return restore_image(output, prepared)

    def __call__(self, image: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
        """PIL image -> PIL image; uint8 HxW / HxWxC array -> uint8 array; the original size either way."""
        if isinstance(image, Image.Image):
            return self.translate_image(image)
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            raise ValueError(
                f"expected a uint8 HxW or HxWxC image array, got {array.dtype} of shape {array.shape}; "
                "use generate() for float NCHW batches"
            )
        return np.asarray(self.translate_image(Image.fromarray(array)))
