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

from mindspore import nn
from omegaconf import DictConfig, open_dict

from pix2pix.config.compose import compose
from pix2pix.config.implied import resolve_trained_run
from pix2pix.data.preprocess import Preprocess
from pix2pix.infer import restore
from pix2pix.infer.restore import start_generator
from pix2pix.infer.translator import Translator
from pix2pix.runs import TrainedRun

__all__ = ["Translator", "build_generator", "load_generator", "open_run"]


def build_generator(cfg: DictConfig, checkpoint_file: str | Path) -> tuple[nn.Cell, dict[str, int]]:
    """The bare generator (an nn.Cell) that `cfg.model.generator` describes, with the checkpoint's weights;
    returns it with the checkpoint's epoch and global_step."""
    return restore.build_generator(cfg.model.generator, Path(checkpoint_file))


def open_run(path: str | Path, overrides: Sequence[str] = (), task: str = "predict") -> TrainedRun:
    """The checkpoint at `path` (run folder or file) and its effective config, without starting Hydra."""
    current = compose([f"task={task}", *overrides])
    with open_dict(current):
        current.ckpt = str(path)
    return resolve_trained_run(current, list(overrides))


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
    fit: resize (to the scale the run trained at, and back) or pad (full resolution).
    device: auto, cpu, gpu or ascend (sets MindSpore's context). seed: fixes paper mode's dropout.
    """
    run = open_run(path, overrides)
    generator, _, _ = start_generator(run.cfg.model.generator, run.checkpoint, {"target": device}, seed)
    preprocess = Preprocess.from_config(run.cfg.dataset, run.cfg.model.generator)
    return Translator(generator, run.cfg.model.input_nc, preprocess.crop, mode, fit, preprocess)
