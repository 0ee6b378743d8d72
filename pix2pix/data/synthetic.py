"""A built-in synthetic dataset: facade-like label maps (A) and their renderings (B).

Generated deterministically from a seed as aligned A|B JPEG files and cached, so the
quick run exercises the same loading path as real data. The translation is learnable
and structured: every label class has its own look (sky, wall texture, glass, frames,
wood, railings), with a wall colour and light that vary per image.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from pix2pix.data.aligned import AlignedData

log = logging.getLogger(__name__)

# Label classes and their colours in the label map (a CMP-facade-like palette).
BACKGROUND, WALL, WINDOW, DOOR, BALCONY, CORNICE, SILL = range(7)
LABEL_COLOURS = np.array(
    [(0, 0, 170), (13, 61, 255), (0, 170, 255), (255, 170, 0), (170, 255, 85), (255, 85, 0), (85, 255, 170)],
    dtype=np.uint8,
)
WALL_COLOURS = np.array([(214, 196, 160), (170, 84, 62), (150, 150, 146), (230, 220, 200), (196, 150, 96)])


def draw_layout(rng: np.random.Generator, size: int) -> np.ndarray:
    """A label map: a building with a cornice, a grid of windows with sills, balconies and a door."""
    lab = np.full((size, size), BACKGROUND, dtype=np.uint8)
    x0, x1 = int(size * rng.uniform(0.03, 0.18)), int(size * rng.uniform(0.82, 0.97))
    top = int(size * rng.uniform(0.05, 0.25))
    lab[top:, x0:x1] = WALL
    lab[top : top + max(2, size // 32), x0:x1] = CORNICE
    floors, cols = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    floor_h = (size - top - size // 16) / floors
    col_w = (x1 - x0) / cols
    win_w, win_h = rng.uniform(0.4, 0.7), rng.uniform(0.45, 0.7)
    door_col = int(rng.integers(0, cols))
    for f in range(floors):
        fy = top + size // 16 + f * floor_h
        ground = f == floors - 1
        if not ground and rng.random() < 0.35:
            by = int(fy + floor_h * (0.2 + win_h))
            lab[by : by + max(2, size // 40), x0 + int(col_w * 0.1) : x1 - int(col_w * 0.1)] = BALCONY
        for c in range(cols):
            cx = x0 + c * col_w
            if ground and c == door_col:
                dx, dw = int(cx + col_w * 0.2), int(col_w * 0.6)
                lab[int(fy + floor_h * 0.15) :, dx : dx + dw] = DOOR
                continue
            wx, ww = int(cx + col_w * (1 - win_w) / 2), max(2, int(col_w * win_w))
            wy, wh = int(fy + floor_h * 0.2), max(2, int(floor_h * win_h))
            lab[wy : wy + wh, wx : wx + ww] = WINDOW
            lab[wy + wh : wy + wh + max(1, size // 64), wx - 1 : wx + ww + 1] = SILL
    return lab


def render(rng: np.random.Generator, lab: np.ndarray) -> np.ndarray:
    """A photo-like rendering of a label map (HxWx3 uint8)."""
    size = lab.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    light = rng.uniform(0.8, 1.1) * (1.0 - 0.25 * xx * rng.uniform(-1, 1))[..., None]
    wall = WALL_COLOURS[rng.integers(len(WALL_COLOURS))] * light
    wall = wall + rng.normal(0, 6, (size, size, 1)) + 8 * np.sin(yy * size * 0.9)[..., None]
    out = np.empty((size, size, 3), dtype=np.float32)
    out[:] = np.stack([150 + 80 * yy, 190 + 50 * yy, 235 + 15 * yy], axis=-1)  # sky gradient
    layers = {
        WALL: wall,
        CORNICE: wall * 1.2 + 10,
        SILL: np.full_like(wall, 225),
        WINDOW: np.stack([40 + 90 * yy, 55 + 95 * yy, 70 + 110 * yy], axis=-1) * light,
        DOOR: np.stack([95 + 0 * yy, 60 + 0 * yy, 35 + 20 * xx], axis=-1) * light,
        BALCONY: np.where((np.arange(size) // max(2, size // 64)) % 2 == 0, 40.0, 110.0)[None, :, None]
        + np.zeros((size, 1, 3)),
    }
    for cls, colour in layers.items():
        mask = lab == cls
        out[mask] = colour[mask]
    # Window frames: a light border where glass meets wall.
    glass = lab == WINDOW
    edge = glass & ~(np.roll(glass, 1, 0) & np.roll(glass, -1, 0) & np.roll(glass, 1, 1) & np.roll(glass, -1, 1))
    out[edge] = 235
    img = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(radius=max(0.5, size / 400))))


def write_pair(path: Path, a: np.ndarray, b: np.ndarray) -> None:
    Image.fromarray(np.concatenate([a, b], axis=1)).save(path, quality=95)


def generate(folder: Path, image_size: int, num_train: int, num_val: int, seed: int) -> None:
    """Write `folder/{train,val}/N.jpg` into a temporary folder, then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".partial-", dir=folder.parent))
    try:
        for split, count, offset in (("train", num_train, 0), ("val", num_val, num_train)):
            (tmp / split).mkdir()
            for i in range(count):
                rng = np.random.default_rng([seed, offset + i])
                lab = draw_layout(rng, image_size)
                write_pair(tmp / split / f"{i + 1}.jpg", LABEL_COLOURS[lab], render(rng, lab))
        try:
            os.replace(tmp, folder)
        except OSError:
            if not folder.is_dir():
                raise
            # Another process (a parallel sweep job) finished the same dataset first: same seed, same files.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class SyntheticData(AlignedData):
    """AlignedData over generated facade-like pairs, cached under `root/<spec>/`."""

    def __init__(
        self,
        root: str,
        image_size: int = 256,
        num_train: int = 48,
        num_val: int = 8,
        generator_seed: int = 0,
        **kwargs,
    ):
        self.spec = dict(image_size=image_size, num_train=num_train, num_val=num_val, seed=generator_seed)
        folder = Path(root).expanduser().absolute() / f"{image_size}px-{num_train}+{num_val}-seed{generator_seed}"
        super().__init__(root=str(folder), **kwargs)

    def ensure_present(self) -> None:
        if not self.root.is_dir():
            log.info("Generating the synthetic dataset in %s", self.root)
            generate(self.root, **self.spec)
