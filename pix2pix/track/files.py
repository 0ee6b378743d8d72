"""Writing a file so that no reader ever sees it half-written: a temporary name, then a rename."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.partial")


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
