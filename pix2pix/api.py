"""Use a trained generator from other code.

    from pix2pix.api import load_generator

    translate = load_generator("outputs/2026-11-25/10-00-00", mode="deterministic")
    photo = translate(Image.open("labels.png"))       # PIL in, PIL out (same size)
    array = translate(np.asarray(img))                 # uint8 HxW or HxWxC in, uint8 out
    batch = translate.generate(nchw)                   # float32 NCHW in [-1, 1], the raw network

A run folder brings its own config; a loose .ckpt file takes the model config from `overrides`
(e.g. ["model/generator=unet_128"]), the same overrides as on the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from mindspore import nn
from omegaconf import DictConfig, open_dict
from PIL import Image

from pix2pix.backend.runtime import seed_everything, setup_device
from pix2pix.checkpoint import restore_generator
from pix2pix.config.checks import CONF_DIR, PREDICT_FITS, VAL_MODES, register_resolvers
from pix2pix.infer.generate import generate
from pix2pix.infer.translator import prepare_image, restore_image
from pix2pix.runs import TrainedRun, open_trained_run


def build_generator(cfg: DictConfig, checkpoint_file: Path) -> tuple[nn.Cell, dict[str, int]]:
    """The generator that `cfg.model.generator` describes, with the checkpoint's weights;
    returns it with the checkpoint's epoch and global_step."""
    generator = instantiate(cfg.model.generator)
    meta = restore_generator(generator, checkpoint_file)
    return generator, meta


class Translator:
    """A trained generator with the settings to apply it to whole images of any size."""

    def __init__(
        self,
        generator: nn.Cell,
        input_nc: int,
        crop_size: int,
        mode: str = "paper",
        fit: str = "resize",
    ):
        if mode not in VAL_MODES:
            raise ValueError(f"mode={mode!r}: use one of {', '.join(VAL_MODES)}")
        if fit not in PREDICT_FITS:
            raise ValueError(f"fit={fit!r}: use one of {', '.join(PREDICT_FITS)}")
        self.generator = generator
        self.input_nc = input_nc
        self.crop_size = crop_size
        self.mode = mode
        self.fit = fit

    def generate(self, batch: np.ndarray) -> np.ndarray:
        """The network itself: float32 NCHW in [-1, 1] -> NCHW in [-1, 1]; deterministic mode runs
        the whole batch at once, paper mode one image at a time (its batch statistics are per image)."""
        return generate(self.generator, np.ascontiguousarray(batch, dtype=np.float32), self.mode, len(batch))

    def translate_image(self, img: Image.Image) -> Image.Image:
        multiple = getattr(self.generator, "input_multiple", 1)
        prepared = prepare_image(img, self.input_nc, self.crop_size, multiple, self.fit)
        output = self.generate(prepared.array[None])[0]
        return restore_image(output, prepared, self.fit)

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


def open_run(path: str | Path, overrides: Sequence[str] = (), task: str = "predict") -> TrainedRun:
    """The checkpoint at `path` (run folder or file) and its effective config, without starting Hydra."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        current = compose(config_name="config", overrides=[f"task={task}", *overrides])
    with open_dict(current):
        current.ckpt = str(path)
    return open_trained_run(current, list(overrides))


def load_generator(
    path: str | Path,
    overrides: Sequence[str] = (),
    mode: str = "paper",
    fit: str = "resize",
    device: str = "auto",
    seed: int | None = None,
) -> Translator:
    """A Translator for the generator of a run folder or checkpoint file.

    mode: paper (dropout and batch statistics, as the paper tests) or deterministic.
    fit: resize (to the training crop size and back) or pad (full resolution).
    device: auto, cpu, gpu or ascend (sets MindSpore's context). seed: fixes paper mode's dropout.
    """
    run = open_run(path, overrides)
    setup_device(target=device)
    if seed is not None:
        seed_everything(seed)
    generator, _ = build_generator(run.cfg, run.checkpoint)
    return Translator(generator, run.cfg.model.input_nc, run.cfg.dataset.crop_size, mode=mode, fit=fit)
