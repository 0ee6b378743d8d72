"""Writing a file so that no reader ever sees it half-written: a temporary name, then a rename."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image


def _temporary(path: Path) -> Path:
    """A temporary name beside `path`, its own per process: two processes writing the same file at
    once (sweep jobs, data-parallel workers) never write into each other's temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def write_text(path: Path, text: str) -> Path:
    tmp = _temporary(path)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def save_image(path: Path, image: Image.Image, **save_args) -> Path:
    """`image.save` to `path` atomically; pass `format=` (the temporary name has no image suffix)."""
    tmp = _temporary(path)
    image.save(tmp, **save_args)
    tmp.replace(path)
    return path
