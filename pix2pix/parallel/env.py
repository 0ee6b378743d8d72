"""Where this process stands in a distributed job, read from the launcher's environment.

No MindSpore here: launch.py asks these questions before Hydra and MindSpore start.
msrun sets MS_ROLE (MS_SCHED for its scheduler, MS_WORKER for a worker), RANK_ID and
DEVICE_ID (the local index); mpirun sets OMPI_COMM_WORLD_*.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

SCHEDULER_ROLE = "MS_SCHED"
WORKER_ROLE = "MS_WORKER"
# Ranks other than 0 log to the console only (msrun writes it to workers/worker_N.log) and record nothing.
QUIET_RANK_OVERRIDES = ("hydra.job_logging.root.handlers=[console]", "hydra.output_subdir=null")


def is_scheduler() -> bool:
    """msrun runs the training script once more as its scheduler (MS_ROLE=MS_SCHED)."""
    return os.environ.get("MS_ROLE") == SCHEDULER_ROLE


def launcher() -> str | None:
    """'msrun' or 'mpirun' when this process is a worker of such a job, else None."""
    if os.environ.get("MS_ROLE") == WORKER_ROLE:
        return "msrun"
    if "OMPI_COMM_WORLD_SIZE" in os.environ:
        return "mpirun"
    return None


def env_rank() -> int | None:
    """This worker's global rank as the launcher exported it (msrun: one node, or --node_rank given)."""
    value = os.environ.get("RANK_ID") or os.environ.get("OMPI_COMM_WORLD_RANK")
    return int(value) if value is not None and value.isdigit() else None


def local_index() -> int:
    """This worker's index on its machine: the device it drives."""
    value = os.environ.get("DEVICE_ID") or os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK") or "0"
    return int(value)


def shared_run_dir() -> str:
    """A run folder that every worker of this machine computes alike: named after the start time
    of their common parent (msrun, or mpirun's local daemon), so a job gets one folder, not one per rank."""
    started = psutil.Process(os.getppid()).create_time()
    return str(
        Path("outputs")
        / time.strftime("%Y-%m-%d", time.localtime(started))
        / time.strftime("%H-%M-%S", time.localtime(started))
    )


def worker_overrides(argv: list[str]) -> list[str]:
    """Hydra overrides that a worker of a distributed job adds to its command line: the job's one run
    folder (unless hydra.run.dir is given) and, for ranks other than 0, no record and no launch.log."""
    extra = []
    if not any(arg.startswith("hydra.run.dir=") for arg in argv):
        extra.append(f"hydra.run.dir={shared_run_dir()}")
    if env_rank() != 0:
        extra += [o for o in QUIET_RANK_OVERRIDES if not any(a.startswith(o.split("=")[0] + "=") for a in argv)]
    return extra
