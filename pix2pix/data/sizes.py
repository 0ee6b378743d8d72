"""The size rules of an aligned pair's halves, without MindSpore: the config checks them before a run
(pix2pix.config.checks) and AlignedData when it is built.

A size is `256` (a square) or `[256, 512]` (height, width), as dataset.load_size and dataset.crop_size take it.
"""

from __future__ import annotations

from collections.abc import Mapping

from pix2pix.errors import Pix2PixError

SIZE_KEYS = ("dataset.load_size", "dataset.crop_size")  # each an int or [height, width]


def height_width(value: object, key: str) -> tuple[int, int]:
    """`256` -> (256, 256); `[256, 512]` -> (256, 512); anything else one line naming `key`."""
    if isinstance(value, int) and not isinstance(value, bool):
        sides = (value, value)
    elif isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        sides = tuple(value)
    else:
        sides = ()
    if len(sides) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sides):
        raise Pix2PixError(f"{key}={value}: use a positive integer (a square) or [height, width], e.g. [256, 512]")
    return sides


def as_config(hw: tuple[int, int]) -> str:
    """The value to write on the command line: 256 for a square, [256,512] otherwise."""
    return str(hw[0]) if hw[0] == hw[1] else f"[{hw[0]},{hw[1]}]"


def check_sizes(load_size: object, crop_size: object, preprocess: str = "resize_and_crop") -> None:
    """resize_and_crop resizes each half to load_size and crops crop_size from it, so the crop must fit
    on both sides (scale_width_and_crop: across the width; the other modes make their own room)."""
    load, crop = height_width(load_size, "dataset.load_size"), height_width(crop_size, "dataset.crop_size")
    if preprocess == "scale_width_and_crop" and crop[1] > load[1]:
        raise Pix2PixError(
            f"dataset.crop_size={as_config(crop)} is wider than dataset.load_size={as_config(load)}, the width "
            f"dataset.preprocess=scale_width_and_crop scales to; set dataset.load_size >= {crop[1]}"
        )
    if preprocess == "resize_and_crop" and (crop[0] > load[0] or crop[1] > load[1]):
        short = min(load)
        fitting = tuple(max(c, round(short * c / min(crop))) for c in crop)
        raise Pix2PixError(
            f"dataset.crop_size={as_config(crop)} is larger than dataset.load_size={as_config(load)}; "
            f"set dataset.crop_size <= dataset.load_size on both sides (e.g. dataset.load_size={as_config(fitting)})"
        )


def input_multiple(generator: Mapping) -> int:
    """What each side of G's input must divide by: 2**num_downs for the U-Net, 4 for the ResNet."""
    return 2 ** generator["num_downs"] if "num_downs" in generator else 4


def check_network_sizes(crop_size: object, generator: Mapping, discriminator: Mapping) -> None:
    """The U-Net halves each side num_downs times, the ResNet twice; the PatchGAN needs room for its layers."""
    crop = height_width(crop_size, "dataset.crop_size")
    multiple = input_multiple(generator)
    if any(side % multiple for side in crop):
        nearest = tuple(max(multiple, round(side / multiple) * multiple) for side in crop)
        if "num_downs" in generator:
            downs = generator["num_downs"]
            raise Pix2PixError(
                f"model.generator.num_downs={downs} halves the image {downs} times, so each side of "
                f"dataset.crop_size must be a multiple of {multiple} (it is {as_config(crop)}); use "
                f"dataset.crop_size={as_config(nearest)} or a U-Net of another depth "
                "(model/generator=unet_128 for 128, unet_512 for 512)"
            )
        raise Pix2PixError(
            f"dataset.crop_size={as_config(crop)}: the ResNet generator needs each side a multiple of 4; "
            f"use dataset.crop_size={as_config(nearest)}"
        )
    if "n_layers" in discriminator:
        smallest = 3 * 2 ** discriminator["n_layers"]  # n stride-2 convs, then two stride-1 convs
        if min(crop) < smallest:
            raise Pix2PixError(
                f"model.discriminator.n_layers={discriminator['n_layers']} needs both sides of dataset.crop_size "
                f">= {smallest} (it is {as_config(crop)}); lower n_layers or raise crop_size"
            )
