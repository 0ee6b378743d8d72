"""One module per task; `run_task` is the only code that reads the whole config."""

from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from pix2pix.errors import Pix2PixError

log = logging.getLogger(__name__)

TASKS = ("train",)


def run_task(cfg: DictConfig) -> float | None:
    """Run `cfg.task`; a Pix2PixError becomes one logged line and exit status 2.

    Returns the validation metric (for sweepers) where the task has one.
    """
    try:
        if cfg.task == "train":
            from pix2pix.tasks.train import train

            return train(cfg)["val_L1"]
        raise Pix2PixError(f"task={cfg.task}: unknown task; use one of {', '.join(TASKS)}")
    except Pix2PixError as err:
        log.error("%s", err)
        sys.exit(2)
