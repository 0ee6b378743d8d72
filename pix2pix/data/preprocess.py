"""How a pair's halves are brought to the network's input: the reference repository's --preprocess
modes (pytorch-CycleGAN-and-pix2pix), each a resize step, then a crop or a fit to the network's size.

Training draws one random crop position and flip per pair and applies it to A and B alike; validation,
eval and predict use the deterministic form (the crop modes as the reference tests them: load_size
taken as crop_size, a centre crop; the others exactly as trained, without the flip).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pix2pix.data.sizes import height_width, input_multiple
from pix2pix.errors import Pix2PixError

# dataset.preprocess: the mode and what it does, one line each (the README's table comes from these).
PREPROCESS_MODES = {
    "resize_and_crop": "resize to load_size, random crop to crop_size (the paper's jitter; the default)",
    "crop": "random crop to crop_size at the image's own scale",
    "scale_width": "width to load_size, height keeps the aspect ratio, then fitted to the network",
    "scale_width_and_crop": "width to load_size, height keeps the aspect ratio, random crop to crop_size",
    "scale_shortside_and_crop": "shorter side to load_size, aspect ratio kept, random crop to crop_size",
    "none": "the image's own size, fitted to the network (dataset.fit: pad or resize)",
}
# dataset.fit: how `scale_width` and `none` reach a size the network takes (a multiple of its input_multiple).
FITS = {
    "pad": "mirror-pad right and bottom to the next multiple (the smallest change; the loss sees the border too)",
    "resize": "bicubic resize to the nearest multiple (the reference's make_power_2)",
}

Size = tuple[int, int]  # (width, height), as PIL writes it


@dataclass(frozen=True)
class Jitter:
    """One random crop position and flip, applied identically to A and B."""

    x: int
    y: int
    flip: bool


@dataclass(frozen=True)
class Preprocess:
    """One dataset's preprocessing: `load` and `crop` are (height, width); `multiple` is what each side of
    G's input must divide by."""

    mode: str = "resize_and_crop"
    load: tuple[int, int] = (286, 286)
    crop: tuple[int, int] = (256, 256)
    multiple: int = 1
    fit: str = "pad"

    def __post_init__(self):
        if self.mode not in PREPROCESS_MODES:
            raise Pix2PixError(f"dataset.preprocess={self.mode}: use one of {', '.join(PREPROCESS_MODES)}")
        if self.fit not in FITS:
            raise Pix2PixError(f"dataset.fit={self.fit}: use one of {', '.join(FITS)}")

    @classmethod
    def from_config(cls, dataset: Mapping, generator: Mapping) -> Preprocess:
        """A run's preprocessing from its `dataset` and `model.generator` config (a run recorded before
        dataset.preprocess existed trained with resize_and_crop)."""
        return cls(
            dataset.get("preprocess", "resize_and_crop"),
            height_width(dataset["load_size"], "dataset.load_size"),
            height_width(dataset["crop_size"], "dataset.crop_size"),
            input_multiple(generator),
            dataset.get("fit", "pad"),
        )

    @property
    def crops(self) -> bool:
        return self.mode.endswith("crop")

    def scaled(self, size: Size, train: bool) -> Size:
        """The size of the resize step, before the crop or the fit."""
        w, h = size
        load_h, load_w = self.load if train or not self.crops else self.crop
        crop_h, crop_w = self.crop
        if self.mode == "resize_and_crop":
            return load_w, load_h
        if self.mode.startswith("scale_width"):
            return load_w, max(int(load_w * h / w), crop_h if self.crops else 1)
        if self.mode == "scale_shortside_and_crop":
            scale = max(min(load_h, load_w) / min(w, h), crop_h / h, crop_w / w)
            return max(crop_w, round(w * scale)), max(crop_h, round(h * scale))
        return w, h  # crop, none

    def fitted(self, size: Size) -> Size:
        """`size` made a multiple of `multiple` on both sides, as dataset.fit says."""
        m = self.multiple
        if self.fit == "pad":
            return tuple(max(m, -(-side // m) * m) for side in size)
        return tuple(max(m, round(side / m) * m) for side in size)

    def output_size(self, size: Size, train: bool = True) -> Size:
        """The (width, height) of the array an image of `size` becomes."""
        if self.crops:
            return self.crop[1], self.crop[0]
        return self.fitted(self.scaled(size, train))

    def content_size(self, size: Size) -> Size:
        """The part of the deterministic output that is the image (the rest is padding): what eval scores."""
        if self.crops or self.fit == "resize":
            return self.output_size(size, train=False)
        return self.scaled(size, train=False)

    def check_fits(self, size: Size, where: str) -> None:
        """The crop mode crops at the image's own scale: one line when a half is smaller than the crop."""
        w, h = size
        if self.mode == "crop" and (w < self.crop[1] or h < self.crop[0]):
            raise Pix2PixError(
                f"{where}: halves of {w}x{h} (width x height) are smaller than dataset.crop_size "
                f"{self.crop[0]}x{self.crop[1]} (height x width), and dataset.preprocess=crop does not resize; "
                "use dataset.preprocess=resize_and_crop or a smaller dataset.crop_size"
            )

    def draw(self, rng: np.random.Generator, size: Size, flip: bool) -> Jitter:
        """The random part of one training pair: a crop position (crop modes) and a flip."""
        w, h = self.scaled(size, train=True)
        crop_h, crop_w = self.crop if self.crops else (h, w)
        x, y = int(rng.integers(0, w - crop_w + 1)), int(rng.integers(0, h - crop_h + 1))
        return Jitter(x, y, flip and bool(rng.random() < 0.5))

    def apply(self, img: Image.Image, jitter: Jitter | None) -> np.ndarray:
        """One half as a CHW float32 array in [-1, 1]: with `jitter` (training), or deterministic (None)."""
        scaled = self.scaled(img.size, train=jitter is not None)
        if scaled != img.size:
            img = img.resize(scaled, Image.BICUBIC)
        if self.crops:
            crop_h, crop_w = self.crop
            x, y = (jitter.x, jitter.y) if jitter else ((scaled[0] - crop_w) // 2, (scaled[1] - crop_h) // 2)
            img = img.crop((x, y, x + crop_w, y + crop_h))
        elif self.fit == "resize" and self.fitted(scaled) != scaled:
            img = img.resize(self.fitted(scaled), Image.BICUBIC)
        if jitter and jitter.flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        array = np.asarray(img, dtype=np.uint8)
        if not self.crops and self.fit == "pad":
            target_w, target_h = self.fitted(scaled)
            h, w = array.shape[:2]
            array = np.pad(array, ((0, target_h - h), (0, target_w - w), (0, 0)), mode="symmetric")
        return to_array(array)

    def describe(self) -> str:
        """The log's line for this preprocessing."""
        text = f"dataset.preprocess={self.mode}: {PREPROCESS_MODES[self.mode]}"
        if not self.crops:
            text += f"; dataset.fit={self.fit}: {FITS[self.fit]} of {self.multiple}"
        return text


def to_array(img: Image.Image | np.ndarray) -> np.ndarray:
    """HWC uint8 -> CHW float32 in [-1, 1]."""
    return (np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 127.5) - 1.0
