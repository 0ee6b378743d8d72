"""Every task by name (`task=NAME`): the module and function that run it, imported when it runs (an eval
loads no training code, a download no networks). Each task module reads the whole config; nothing below does."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable

from omegaconf import DictConfig

from pix2pix.choices import check_task
from pix2pix.errors import Pix2PixError

log = logging.getLogger(__name__)

# Each returns what a sweeper optimises, or None: a training run's `optimized_metric`, the mean L1
# of an eval, the median ms/step of a benchmark.
REGISTRY = {
    "train": "pix2pix.tasks.train:run",
    "eval": "pix2pix.tasks.evaluate:run",
    "predict": "pix2pix.tasks.predict:run",
    "export": "pix2pix.tasks.export:run",
    "convert": "pix2pix.tasks.convert:run",
    "benchmark": "pix2pix.tasks.benchmark:run",
    "download": "pix2pix.tasks.datasets:download",
    "inspect": "pix2pix.tasks.datasets:inspect",
    "combine": "pix2pix.tasks.datasets:combine",
}


def task_function(task: str) -> Callable[[DictConfig], float | None]:
    check_task(task)
    module, name = REGISTRY[task].split(":")
    return getattr(importlib.import_module(module), name)


def run(cfg: DictConfig) -> float | None:
    """Run `cfg.task`; a Pix2PixError becomes one logged line and exit status 2."""
    logging.raiseExceptions = False  # a full disk under launch.log must not print a traceback per line
    try:
        return task_function(cfg.task)(cfg)
    except Pix2PixError as err:
        log.error("%s", err)
        sys.exit(2)
