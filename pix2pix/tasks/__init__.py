"""One module per task; `run_task` is the only code that reads the whole config."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pix2pix.config.checks import DATA_TASKS, TASKS, validate
from pix2pix.errors import Pix2PixError
from pix2pix.runs import TRAINED_RUN_TASKS, lock_run, open_trained_run, owns_the_run

log = logging.getLogger(__name__)


def build_dataset(cfg: DictConfig):
    """The `dataset` group's AlignedData, with the image-size guard of `data.max_pixels`."""
    from hydra.utils import instantiate

    return instantiate(cfg.dataset, max_pixels=cfg.data.max_pixels)


def command_line_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def train_or_resume(cfg: DictConfig) -> float | None:
    """task=train; with ckpt=, the run continues (the run's config, overrides that keep its networks), in
    its own folder, or in a new one when the checkpoint is older than the run's last.ckpt (a fork).
    With parallel.device_num > 1, this process starts the workers through msrun (unless it is one)."""
    from pix2pix.parallel.env import launcher
    from pix2pix.tasks.train import record_fork, train, train_on_workers
    from pix2pix.training.loop import Interrupted

    resume_from, forked = None, False
    overrides = command_line_overrides()
    if cfg.ckpt:
        kept = [o for o in overrides if not o.startswith(("ckpt=", "task="))]
        run = open_trained_run(cfg, kept)
        validate(run.cfg)
        cfg, resume_from = run.cfg, run.checkpoint
        if run.forked:
            cfg, forked = record_fork(run, write=owns_the_run()), True
        if kept:
            log.info("resuming with these overrides on the run's config: %s", " ".join(kept))
    lock = lock_run(Path(cfg.paths.output_dir)) if owns_the_run() else None
    try:
        if cfg.parallel.device_num > 1 and launcher() is None:
            metrics = train_on_workers(cfg, overrides)
        else:
            metrics = train(cfg, resume_from, forked)
        return metrics.get(cfg.optimized_metric)
    except KeyboardInterrupt:
        log.warning("stopped at once by a second signal; the newest complete checkpoint is intact")
        sys.exit(130)
    except Interrupted as stop:
        path = stop.checkpoint_path
        if path is None:
            log.warning("stopped by %s before this launch wrote a checkpoint; the newest complete one is intact", stop)
        else:
            run_dir = path.parent.parent
            log.warning("stopped by %s; %s is written; resume with: python launch.py ckpt=%s", stop, path, run_dir)
        sys.exit(128 + stop.signum)
    finally:
        if lock:
            lock.release()


def run_task(cfg: DictConfig) -> float | None:
    """Run `cfg.task`; a Pix2PixError becomes one logged line and exit status 2.

    Returns the metric a sweeper optimises: `optimized_metric` of a training run, the mean L1 of
    an eval, the median ms/step of a benchmark.
    """
    logging.raiseExceptions = False  # a full disk under launch.log must not print a traceback per line
    try:
        if cfg.task == "train":
            return train_or_resume(cfg)
        if cfg.task in DATA_TASKS:
            from pix2pix.tasks import datasets

            getattr(datasets, cfg.task)(cfg)
            return None
        if cfg.task == "benchmark":
            from pix2pix.tasks.benchmark import benchmark

            return benchmark(cfg)["ms_per_step"]["median"]
        if cfg.task in TRAINED_RUN_TASKS:
            run = open_trained_run(cfg, command_line_overrides())
            validate(run.cfg)
            if cfg.task == "eval":
                from pix2pix.tasks.evaluate import evaluate

                return evaluate(run)["l1"]
            if cfg.task == "predict":
                from pix2pix.tasks.predict import predict

                predict(run)
            else:
                from pix2pix.tasks.export import export

                export(run)
            return None
        raise Pix2PixError(f"task={cfg.task}: unknown task; use one of {', '.join(TASKS)}")
    except Pix2PixError as err:
        log.error("%s", err)
        sys.exit(2)
