"""task=export: write the generator as MINDIR, ONNX or AIR into `<run>/export/` and check the file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from pix2pix.backend.runtime import resolve_device
from pix2pix.data.sizes import height_width
from pix2pix.errors import Pix2PixError
from pix2pix.infer.formats import export_generator, verify_export
from pix2pix.infer.restore import start_generator
from pix2pix.runs import TrainedRun
from pix2pix.tasks.common import trained_run
from pix2pix.track.files import write_text

log = logging.getLogger(__name__)

VERIFY_BATCH = 2  # checks the dynamic batch dimension too


def run(cfg: DictConfig) -> None:
    export(trained_run(cfg))


def export(run: TrainedRun) -> dict:
    cfg = run.cfg
    fmt = cfg.export.format
    device = resolve_device(cfg.device.target) if fmt == "AIR" else None  # before anything is built
    if fmt == "AIR" and device != "ascend":
        raise Pix2PixError(
            f"export.format=AIR needs the Ascend backend (CANN), and this run is on {device}; "
            "export MINDIR or ONNX here, or run with device=ascend on an Ascend machine"
        )
    generator, meta, _ = start_generator(cfg.model.generator, run.checkpoint, cfg.device, cfg.seed)
    shape = (cfg.model.input_nc, *height_width(cfg.dataset.crop_size, "dataset.crop_size"))
    path = export_generator(generator, fmt, Path(cfg.paths.output_dir) / cfg.export.file_name, shape)
    batch = np.random.default_rng(cfg.seed).uniform(-1, 1, (VERIFY_BATCH, *shape)).astype(np.float32)
    diff = verify_export(path, fmt, generator, batch, cfg.export.tolerance)
    checked = "not run here" if diff is None else f"max abs difference {diff:.3g} on a batch of {VERIFY_BATCH}"
    log.info("exported %s (%.1f MB, input [batch, %d, %d, %d]): %s", path, path.stat().st_size / 1e6, *shape, checked)
    summary = {
        "file": str(path),
        "format": fmt,
        "input_shape": ["batch", *shape],
        "max_abs_diff": diff,
        "checkpoint": str(run.checkpoint),
        **meta,
    }
    write_text(path.parent / f"{path.name}.json", json.dumps(summary, indent=2) + "\n")
    return summary
