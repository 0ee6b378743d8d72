"""What `python launch.py` does before Hydra starts: the process's role in a data-parallel job, the
CPU fast path, and the one-line check of the command line."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pix2pix.backend.runtime import prepare_environment
from pix2pix.errors import Pix2PixError
from pix2pix.parallel import env as job
from pix2pix.parallel.lifeline import die_with_parent


def prepare_command_line(argv: list[str]) -> list[str]:
    """The arguments Hydra gets; a mistake in them is one line on stderr and exit status 2."""
    prepare_environment()  # before MindSpore is imported anywhere
    if job.is_scheduler() or job.launcher():
        die_with_parent()  # a worker or scheduler never outlives the msrun (or mpirun) that started it
    if job.is_scheduler():  # msrun runs launch.py as its scheduler too
        from pix2pix.parallel.collective import serve_as_scheduler

        serve_as_scheduler()
        sys.exit(0)
    if job.launcher():  # a worker of msrun or mpirun: the job's one run folder; quiet ranks > 0
        argv = [*argv, *job.worker_overrides(argv)]
    if any(arg.startswith("-") for arg in argv):  # a multirun or Hydra's own flags: Hydra checks them
        return argv
    from pix2pix.config.checks import check_overrides

    try:
        check_overrides(argv)
    except Pix2PixError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if not any(arg.startswith("hydra.run.dir=") for arg in argv):
        wait_for_a_fresh_second()
    return argv


def wait_for_a_fresh_second() -> None:
    """Run folders are named to the second (outputs/DATE/TIME): never start a run in a folder that an
    earlier run of the same second already wrote; wait for the next second instead."""
    while (Path("outputs") / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S")).exists():
        time.sleep(1.001 - time.time() % 1)
