"""pix2pix-ms entry point: `python launch.py [group=option ...] [key=value ...]`.

Thin on purpose: the command line is checked, Hydra composes the config, and
pix2pix.tasks runs it (importable code, so Hydra launchers can pickle it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pix2pix.backend.runtime import prepare_environment

prepare_environment()  # before MindSpore is imported anywhere

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pix2pix.config.checks import check_overrides, register_resolvers  # noqa: E402
from pix2pix.errors import Pix2PixError  # noqa: E402
from pix2pix.parallel import env as job  # noqa: E402
from pix2pix.parallel.lifeline import die_with_parent  # noqa: E402

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from pix2pix.tasks import run_task

    return run_task(cfg)


def cli_overrides(argv: list[str]) -> list[str] | None:
    """The key=value overrides of a plain run; None for multirun or Hydra's own flags."""
    if any(arg.startswith("-") for arg in argv):
        return None
    return argv


def wait_for_a_fresh_run_folder(overrides: list[str]) -> None:
    """Run folders are named to the second: never let a run start in a folder that an
    earlier run of the same second already wrote."""
    if any(o.startswith("hydra.run.dir=") for o in overrides):
        return
    while (Path("outputs") / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S")).exists():
        time.sleep(0.05)


if __name__ == "__main__":
    if job.is_scheduler() or job.launcher():
        die_with_parent()  # a worker or scheduler never outlives the msrun (or mpirun) that started it
    if job.is_scheduler():  # msrun runs this script as its scheduler too
        from pix2pix.parallel.collective import serve_as_scheduler

        serve_as_scheduler()
        sys.exit(0)
    if job.launcher():  # a worker of msrun or mpirun: the job's one run folder; quiet ranks > 0
        sys.argv += job.worker_overrides(sys.argv[1:])
    overrides = cli_overrides(sys.argv[1:])
    if overrides is not None:
        try:
            check_overrides(overrides)
        except Pix2PixError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        wait_for_a_fresh_run_folder(overrides)
    main()
