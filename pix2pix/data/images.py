"""Reading any image file from a user's disk into 8-bit pixels, the one way every task does it.

Images are data from anywhere, so reading one never runs away with memory or stops a task with a
traceback: a file with more than `data.max_pixels` pixels (a decompression bomb: a few hundred bytes
of PNG can declare 20000x10000) is refused from its header, before any pixel is decoded, and every
failure to decode is one UnreadableImage that names the file. The conversions, as the README states:

- EXIF orientation is applied (a phone photo stored sideways comes out upright);
- 16-bit integer images (I;16, and I, as which older Pillows open 16-bit PNGs) are scaled to 8 bits
  (value * 255 / 65535, values outside 0..65535 clipped), not clipped at 255; float images (F) are
  clipped to 0..255; 1-bit images become L;
- CMYK, YCbCr, LAB and HSV become RGB; palette images become RGBA when they carry transparency,
  else RGB; LA stays LA (gray with alpha);
- an animated image (GIF, APNG, WebP) gives its first frame;
- a file is decoded only as JPEG, PNG, BMP, WebP, GIF or TIFF, and only if it is a plain file.
The result is L, LA, RGB or RGBA; `rgb()` drops alpha for training, which has no use for it.
"""

from __future__ import annotations

import os
import stat
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pix2pix.errors import Pix2PixError

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own warning threshold (about 9459 x 9459)
PILLOW_PIXEL_LIMIT = 2 * DEFAULT_MAX_PIXELS  # Pillow refuses larger images itself
OUTPUT_MODES = ("L", "LA", "RGB", "RGBA")
# What the image suffixes are: a file is decoded only as one of these, whatever it holds (Pillow would
# otherwise open, say, a PostScript file named .png as EPS and hand it to Ghostscript).
FORMATS = ("JPEG", "MPO", "PNG", "BMP", "WEBP", "GIF", "TIFF")
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)


class UnreadableImage(Pix2PixError):
    """A file that is not an image that can be read here (corrupt, truncated, too large, not an image)."""


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # fully decoded, upright, in one of OUTPUT_MODES
    mode: str  # the file's own mode (e.g. "I;16", "CMYK", "P")
    frames: int = 1


def eight_bit(img: Image.Image) -> Image.Image:
    """`img` in one of OUTPUT_MODES, scaling high bit depths instead of clipping them."""
    mode = img.mode
    if mode in OUTPUT_MODES:
        return img
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I (16-bit PNGs open as either)
        pixels = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(pixels * (255 / 65535)), 0, 255).astype(np.uint8), "L")
    if mode == "F":
        return Image.fromarray(np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8), "L")
    if mode == "1":
        return img.convert("L")
    if mode in ("P", "PA"):
        return img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
    if mode in ("La",):
        return img.convert("LA")
    if mode in ("RGBa",):
        return img.convert("RGBA")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


def upright(img: Image.Image) -> Image.Image:
    """A copy of `img` turned as its EXIF orientation says (a damaged EXIF block is ignored)."""
    try:
        return ImageOps.exif_transpose(img) or img.copy()
    except Exception:  # noqa: BLE001 - a broken EXIF tag must not make a readable image unreadable
        return img.copy()


def formats() -> tuple[str, ...]:
    """FORMATS that this Pillow can read (its plugins loaded: Image.open with `formats` expects them)."""
    Image.init()
    return tuple(name for name in FORMATS if name in Image.OPEN)


def open_regular(path: Path):
    """`path` opened for reading if it is a plain file: never blocks on a FIFO or reads a device (opened
    without waiting, then checked on the descriptor itself, so nothing can be swapped in between)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnreadableImage(f"{path}: not a plain file (a folder, FIFO or device); remove it from the images")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode `path` fully (see the module docstring); UnreadableImage names the file and what to do."""
    try:
        with open_regular(path) as file, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides
            with Image.open(file, formats=formats()) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise UnreadableImage(
                        f"{path}: {width}x{height} is {width * height:,} pixels, over data.max_pixels={max_pixels:,} "
                        "(a guard against decompression bombs); raise data.max_pixels if the image is genuine, "
                        "or replace or delete the file"
                    )
                mode, frames = img.mode, getattr(img, "n_frames", 1)
                img.load()  # the first frame
                image = eight_bit(upright(img))
    except UnreadableImage:
        raise
    except Image.DecompressionBombError:
        raise UnreadableImage(
            f"{path}: more than {PILLOW_PIXEL_LIMIT:,} pixels (Pillow's own limit), over data.max_pixels="
            f"{max_pixels:,} (a guard against decompression bombs); replace or delete the file"
        ) from None
    except OSError as err:
        if err.errno is not None:  # the file system's refusal: permissions, a link loop, a dangling link
            raise UnreadableImage(f"{path}: cannot be read ({err.strerror}); fix or remove the file") from None
        raise UnreadableImage(f"{path}: corrupt, truncated or not an image ({err}); replace or delete it") from None
    except DECODE_ERRORS as err:
        reason = str(err).strip() or type(err).__name__
        raise UnreadableImage(f"{path}: corrupt, truncated or not an image ({reason}); replace or delete it") from None
    return Decoded(image, mode, frames)


def rgb(img: Image.Image) -> Image.Image:
    """An 8-bit image as RGB, alpha dropped (the reference's convert('RGB'))."""
    return img if img.mode == "RGB" else img.convert("RGB")


def conversion_note(decoded: Decoded, to: str | None = None) -> str | None:
    """What reading (and then converting to the mode `to`) did to the file's pixels, for a warning;
    None when nothing did."""
    notes = []
    final = to or decoded.image.mode
    if decoded.mode != final:
        notes.append(f"{decoded.mode} image converted to {final}")
    if decoded.frames > 1:
        notes.append(f"animated ({decoded.frames} frames): the first frame is used")
    return "; ".join(notes) or None
