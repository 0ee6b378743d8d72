"""Looking at a dataset before a long run: per split, file count, image sizes, corrupt and odd
files; and a preview of pairs labelled the way `dataset.direction` will feed them to G."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pix2pix.data.aligned import IMAGE_SUFFIXES, NotAPair, as_pair, open_pair, split_pair
from pix2pix.data.images import DEFAULT_MAX_PIXELS, UnreadableImage, conversion_note, read_image
from pix2pix.errors import Pix2PixError
from pix2pix.track.files import natural_key, save_image

LABEL_HEIGHT = 22


@dataclass
class SplitReport:
    name: str
    folder: Path
    sizes: Counter = field(default_factory=Counter)
    good: list[Path] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    odd: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common(5))
        more = f" and {len(self.sizes) - 5} more sizes" if len(self.sizes) > 5 else ""
        out = [f"{self.name}: {len(self.good)} pairs in {self.folder}; sizes {sizes or 'none'}{more}"]
        out += [f"  corrupt: {line}" for line in self.corrupt]
        out += [f"  odd: {line}" for line in self.odd]
        return out


def inspect_split(name: str, folder: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> SplitReport:
    """Open every file of one split; nothing stops at the first problem."""
    report = SplitReport(name, folder)
    entries = (p for p in folder.iterdir() if not p.is_dir())  # a link loop or a FIFO is reported too
    for path in sorted(entries, key=natural_key):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            report.odd.append(f"{path.name}: not an image file ({path.suffix or 'no suffix'}); it is ignored")
            continue
        try:
            decoded = read_image(path, max_pixels)
            size = as_pair(path, decoded).size
        except UnreadableImage as err:
            report.corrupt.append(str(err).replace(f"{path}: ", f"{path.name}: ", 1))
            continue
        except NotAPair as err:
            report.odd.append(str(err).replace(f"{path}: ", f"{path.name}: ", 1))
            continue
        report.sizes[size] += 1
        report.good.append(path)
        note = conversion_note(decoded, "RGB")
        if note:
            report.odd.append(f"{path.name}: {note}")
        elif size[0] != 2 * size[1]:
            report.odd.append(f"{path.name}: halves are {size[0] // 2}x{size[1]}, not square; resized to square")
    return report


def dataset_splits(root: Path) -> list[tuple[str, Path]]:
    if not root.is_dir():
        raise Pix2PixError(f"{root}: no such dataset folder; download it (task=download) or set dataset.root")
    splits = sorted((p.name, p) for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not splits:
        raise Pix2PixError(f"{root}: no split folders (train/, val/, test/) in it")
    return splits


def labelled(img: Image.Image, text: str, size: int) -> np.ndarray:
    """`img` resized to size x size under a white band with `text`."""
    canvas = Image.new("RGB", (size, size + LABEL_HEIGHT), "white")
    canvas.paste(img.resize((size, size), Image.BICUBIC), (0, LABEL_HEIGHT))
    ImageDraw.Draw(canvas).text((4, 4), text, fill="black")
    return np.asarray(canvas)


def preview(
    files: list[Path], direction: str, path: Path, size: int = 256, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Path:
    """Rows of (what G gets | what G must produce) for `files`, labelled with the half each comes from."""
    source, target = ("A, left half", "B, right half") if direction == "AtoB" else ("B, right half", "A, left half")
    rows = []
    for file in files:
        g_input, g_target = split_pair(open_pair(file, max_pixels=max_pixels), direction)
        rows.append(
            np.concatenate(
                [
                    labelled(g_input, f"G input: {source} ({file.name})", size),
                    labelled(g_target, f"target: {target}", size),
                ],
                axis=1,
            )
        )
    return save_image(path, Image.fromarray(np.concatenate(rows, axis=0)), format="PNG")
