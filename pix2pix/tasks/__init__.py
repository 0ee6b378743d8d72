"""Every task by name (`task=NAME`); `run` is the only code that reads the whole config."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from omegaconf import DictConfig

from pix2pix.choices import check_task
from pix2pix.errors import Pix2PixError
from pix2pix.tasks import benchmark, datasets, evaluate, export, predict, train

log = logging.getLogger(__name__)

# Each returns what a sweeper optimises, or None: a training run's `optimized_metric`, the mean L1
# of an eval, the median ms/step of a benchmark.
REGISTRY: dict[str, Callable[[DictConfig], float | None]] = {
    "train": train.run,
    "eval": evaluate.run,
    "predict": predict.run,
    "export": export.run,
    "benchmark": benchmark.run,
    "download": datasets.download,
    "inspect": datasets.inspect,
    "combine": datasets.combine,
}


def run(cfg: DictConfig) -> float | None:
    """Run `cfg.task`; a Pix2PixError becomes one logged line and exit status 2."""
    logging.raiseExceptions = False  # a full disk under launch.log must not print a traceback per line
    try:
        check_task(cfg.task)
        return REGISTRY[cfg.task](cfg)
    except Pix2PixError as err:
        log.error("%s", err)
        sys.exit(2)
