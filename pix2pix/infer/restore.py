"""A trained generator ready to run: the device set up, the seed fixed, the network built and its
weights restored. Eval, predict, export and the Python API start the same way, here."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hydra.utils import instantiate
from mindspore import nn

from pix2pix.backend.runtime import seed_everything, setup_device
from pix2pix.weights.mapping import load_into


def build_generator(generator_cfg: Mapping, checkpoint_file: Path) -> tuple[nn.Cell, dict[str, int]]:
    """The generator `generator_cfg` describes (a `_target_` node), with the weights of the checkpoint (ours, or
    a published file); returns it with the checkpoint's epoch and global_step (a published file: none)."""
    generator = instantiate(generator_cfg)
    return generator, load_into(generator, checkpoint_file, "G")


def start_generator(
    generator_cfg: Mapping, checkpoint_file: Path, device: Mapping, seed: int | None
) -> tuple[nn.Cell, dict[str, int], str]:
    """Set up `device` (the device group's keys), seed the random streams (None: leave them), build and
    restore; the generator, the checkpoint's epoch and step, and the device name."""
    name = setup_device(**device)
    if seed is not None:
        seed_everything(seed)
    generator, meta = build_generator(generator_cfg, checkpoint_file)
    return generator, meta, name
