"""task=download, task=inspect and task=combine: getting data ready before any training."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from pix2pix.data.combine import combine_folders
from pix2pix.data.inspect import dataset_splits, inspect_split, preview
from pix2pix.errors import Pix2PixError
from pix2pix.tasks.common import build_dataset

log = logging.getLogger(__name__)


def download(cfg: DictConfig) -> None:
    """Fetch, verify and extract `dataset=NAME` into dataset.root."""
    data = build_dataset(cfg)
    root = data.fetch(progress_bar=cfg.logging.progress_bar and sys.stderr.isatty())
    splits = ", ".join(
        f"{name} ({sum(1 for p in folder.iterdir() if p.is_file())})" for name, folder in dataset_splits(root)
    )
    log.info("dataset=%s is ready in %s: %s", data.name, root, splits)


def inspect(cfg: DictConfig) -> None:
    """Report every split of dataset.root and write a preview of a few training pairs."""
    data = build_dataset(cfg)
    data.ensure_present()
    reports = [inspect_split(name, folder, data.max_pixels) for name, folder in dataset_splits(data.root)]
    for report in reports:
        for line in report.lines():
            (log.warning if line.startswith("  ") else log.info)("%s", line)
    first = next(
        (r for r in reports if r.name == data.train_dir.name and r.good), next((r for r in reports if r.good), None)
    )
    if first is None:
        raise Pix2PixError(f"{data.root}: no readable A|B pair in any split")
    path = preview(
        first.good[: cfg.inspect.num_preview],
        data.direction,
        Path(cfg.paths.output_dir) / f"preview_{data.name}_{data.direction}.png",
        min(data.crop_size),
        data.max_pixels,
    )
    log.info(
        "preview of %s (direction=%s: G input on the left, target on the right): %s", first.name, data.direction, path
    )


def combine(cfg: DictConfig) -> None:
    """Join A_DIR/x and B_DIR/x into OUTPUT/x (A | B), split folders kept."""
    missing = [key for key in ("a", "b", "output") if not cfg.combine[key]]
    if missing:
        raise Pix2PixError(
            f"task=combine needs combine.{missing[0]}=FOLDER (combine.a=A_DIR combine.b=B_DIR combine.output=AB_DIR)"
        )
    a, b, output = (Path(cfg.combine[k]).expanduser().absolute() for k in ("a", "b", "output"))
    count = combine_folders(a, b, output, cfg.data.max_pixels)
    log.info("wrote %d aligned A|B pairs to %s (A: %s on the left, B: %s on the right)", count, output, a, b)
