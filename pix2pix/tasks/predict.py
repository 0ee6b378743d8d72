"""task=predict: translate plain images (a file or a folder, any size) with a trained generator."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from omegaconf import DictConfig
from tqdm import tqdm

from pix2pix.data.preprocess import Preprocess
from pix2pix.errors import Pix2PixError
from pix2pix.infer.restore import start_generator
from pix2pix.infer.translator import Translator, image_files, output_paths, translate_files
from pix2pix.runs import TrainedRun
from pix2pix.tasks.common import trained_run

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> None:
    predict(trained_run(cfg))


def predict(run: TrainedRun) -> dict:
    cfg = run.cfg
    if not cfg.predict.input:
        raise Pix2PixError("task=predict needs predict.input=IMAGE_OR_FOLDER")
    source = Path(cfg.predict.input).expanduser().absolute()
    output = Path(cfg.predict.output).expanduser().absolute()
    files = image_files(source, exclude=output)
    outputs = output_paths(files, source, output)
    generator, meta, device = start_generator(cfg.model.generator, run.checkpoint, cfg.device, cfg.seed)
    preprocess = Preprocess.from_config(cfg.dataset, cfg.model.generator)
    translator = Translator(
        generator, cfg.model.input_nc, preprocess.crop, cfg.predict.mode, cfg.predict.fit, preprocess
    )
    log.info(
        "translating %d images from %s with %s (epoch %s), fit %s, %s mode, device %s -> %s",
        len(files),
        source,
        run.checkpoint,
        meta.get("epoch", "?"),
        cfg.predict.fit,
        cfg.predict.mode,
        device,
        output,
    )
    show = cfg.logging.progress_bar and sys.stderr.isatty()
    started = time.perf_counter()
    written, problems = translate_files(
        files,
        outputs,
        translator.translate_image,
        progress=lambda it: tqdm(it, total=len(files), desc="predict", disable=not show),
        max_pixels=cfg.data.max_pixels,
    )
    seconds = time.perf_counter() - started
    if not written:
        raise Pix2PixError(f"predict.input={source}: none of the {len(files)} files could be read")
    log.info("wrote %d images to %s in %.1f s (%.2f img/s)", written, output, seconds, written / seconds)
    if problems:
        log.warning("%d files skipped (see the warnings above)", len(problems))
    return {"written": written, "skipped": len(problems), "output": str(output)}
