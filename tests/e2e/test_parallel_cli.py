"""Data-parallel training through msrun: 2 CPU workers (MCCL on loopback) equal one device with their
union of data; one run folder; a dead worker stops the job; stops agree across ranks; resume; settings
refused before any worker starts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pix2pix import checkpoint
from pix2pix.parallel.launcher import (
    free_port,
)
from tests.helpers import ROOT, TINY, run_launch

# Without norm and dropout a sample's gradient does not depend on the rest of its batch: two ranks
# with batch 1 must then take exactly the steps of one device with batch 2.
PER_SAMPLE = ["model.norm=none", "model.generator.use_dropout=false"]

TWO_WORKERS = [*TINY, "parallel.device_num=2"]

# 8 pairs, global batch 2: 4 steps per epoch, 2 epochs.
EIGHT_PAIRS = ["dataset.num_train=8"]


def data_dir(tmp_path: Path) -> str:
    return f"paths.data_dir={tmp_path.parent / 'data'}"


def worker_logs(run_dir: Path) -> dict[int, str]:
    return {int(p.stem.split("_")[1]): p.read_text() for p in (run_dir / "workers").glob("worker_*.log")}


def digest_of(text: str) -> str:
    return re.search(r"parameters identical on all 2 ranks \(sha256 ([0-9a-f]{64})\)", text).group(1)


def log_time(line: str) -> datetime:
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")


def test_8pcs_on_gpus_that_are_not_here_fails_before_any_worker_starts(tmp_path):
    result = run_launch(["parallel=8pcs", "device=gpu", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "device=gpu is not available: CUDA_HOME is not set" in result.stderr + result.stdout
    assert not (tmp_path / "run" / "workers").exists()


def test_sync_bn_on_the_cpu_is_refused_before_any_worker_starts(tmp_path):
    result = run_launch([*TWO_WORKERS, "parallel.sync_bn=true", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "parallel.sync_bn=true: MindSpore's SyncBatchNorm has no CPU kernel" in result.stderr + result.stdout
    assert not (tmp_path / "run" / "workers").exists()


# -- real jobs through msrun (each 10-20 s on two cores) ------------------------------------------------


def user_msrun(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess:
    """`msrun ... launch.py ARGS` as a user types it (this environment's python first on PATH)."""
    msrun = [sys.executable, "-m", "mindspore.parallel.cluster.run", "--worker_num=2", "--local_worker_num=2"]
    msrun += ["--master_addr=127.0.0.1", f"--master_port={free_port('127.0.0.1')}", "--join=True"]
    msrun += [f"--log_dir={tmp_path / 'logs'}", str(ROOT / "launch.py")]
    env = {k: v for k, v in os.environ.items() if k != "CUDA_HOME"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run([*msrun, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_ranks_under_the_users_msrun_equal_one_device_with_their_union_of_data(tmp_path):
    result = user_msrun(tmp_path, [*TWO_WORKERS, *PER_SAMPLE, data_dir(tmp_path)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs").glob("*/*")  # both workers found the job's one run folder
    single_dir = tmp_path / "single"
    single = run_launch(
        [*TINY, *PER_SAMPLE, "dataset.batch_size=2", data_dir(tmp_path), f"hydra.run.dir={single_dir}"], cwd=tmp_path
    )
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]

    # Rank 0 saved what one device with the global batch reaches, to float rounding (4 Adam steps).
    parallel, one_device = (checkpoint.load(d / "checkpoints" / "last.ckpt") for d in (run_dir, single_dir))
    assert int(parallel["global_step"].asnumpy()) == int(one_device["global_step"].asnumpy()) == 4
    assert int(parallel["device_num"].asnumpy()) == 2
    for name, value in one_device.items():
        if name.startswith(("G.", "D.", "optimizer_")):
            np.testing.assert_allclose(parallel[name].asnumpy(), value.asnumpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    # Both ranks hold the same parameters (checked by the job itself, reported with the digest).
    logs = {rank: (tmp_path / "logs" / f"worker_{rank}.log").read_text() for rank in (0, 1)}
    assert digest_of(logs[0]) == digest_of(logs[1]) and "rank 1 of 2 (MCCL" in logs[1]
    # Rank 0 records the config and writes the run; rank 1 only logs to its console.
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    launch_log = (run_dir / "launch.log").read_text()
    assert "rank 0 of 2" in launch_log and "rank 1 of 2" not in launch_log
    assert len(list((run_dir / "tensorboard").iterdir())) == 1
    assert json.loads((run_dir / "metrics.json").read_text())["val_L1"] > 0


@pytest.mark.slow
def test_a_killed_worker_stops_the_whole_job_quickly(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TWO_WORKERS, *EIGHT_PAIRS, "schedule.n_epochs=50", "debug=faults", "fault.kill_at_step=3", "fault.rank=1"]
    result = run_launch([*args, data_dir(tmp_path), f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    error = next(line for line in output.splitlines() if "so the whole job was stopped" in line)
    assert "rank 1 stopped (killed by SIGKILL)" in error and str(run_dir / "workers" / "worker_1.log") in error
    # Bounded: msrun on its own waits about 30 s for its scheduler; the job here ends within seconds.
    last_rank_line = [ln for ln in worker_logs(run_dir)[1].splitlines() if ln.startswith("[20")][-1]
    assert (log_time(error) - log_time(last_rank_line)).total_seconds() < 15
    time.sleep(1)
    leftovers = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True).stdout.split()
    assert leftovers == []  # nothing left running


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_at_one_step_and_the_job_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        *TWO_WORKERS,
        *EIGHT_PAIRS,
        "debug=faults",
        "fault.signal_at_step=6",
        "fault.signal_name=SIGTERM",
        "fault.rank=1",
    ]
    stopped = run_launch([*args, data_dir(tmp_path), f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 143, output[-3000:]
    assert f"resume with: python launch.py ckpt={run_dir}" in output
    saved = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    assert [int(saved[k].asnumpy()) for k in ("epoch", "step_in_epoch", "global_step")] == [1, 2, 6]
    # One run folder: rank 0 writes launch.log (after the launcher's lines), every rank its own log.
    assert sorted(worker_logs(run_dir)) == [0, 1] and (run_dir / "workers" / "msrun.log").is_file()
    launch_log = (run_dir / "launch.log").read_text()
    assert "starting 2 of 2 workers through msrun" in launch_log
    assert "rank 0 of 2" in launch_log and "rank 1 of 2" not in launch_log
    assert "training epochs 1-2 x 4 steps (batch 2 x 1 = 2)" in stopped.stdout  # rank 0's log on the terminal

    resumed = run_launch([f"ckpt={run_dir}"], cwd=tmp_path)  # the run's own parallel settings
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming at step 3 of epoch 2" in resumed.stdout
    final = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    assert int(final["global_step"].asnumpy()) == 8 and int(final["epoch"].asnumpy()) == 2
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [p.step for p in events.Scalars("loss_G_L1")] == list(range(1, 9))
    assert sorted(p.name for p in (run_dir / "workers").iterdir() if p.is_dir())[0].startswith("before-")


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_with_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TWO_WORKERS, *EIGHT_PAIRS, "schedule.n_epochs=500", data_dir(tmp_path), f"hydra.run.dir={run_dir}"]
    env = {k: v for k, v in os.environ.items() if k != "CUDA_HOME"}
    launcher = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    rank_0_log = run_dir / "workers" / "worker_0.log"
    while not (rank_0_log.is_file() and "epoch 2/" in rank_0_log.read_text()):  # training, past a checkpoint
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.2)
    launcher.send_signal(signal.SIGINT)
    output, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, output[-3000:]
    saved = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    assert int(saved["global_step"].asnumpy()) >= 8 and int(saved["device_num"].asnumpy()) == 2
    assert "stopped by SIGINT" in output and "resume with" in output


def job_processes(run_dir: Path) -> list[str]:
    """The processes still alive that belong to a job writing into `run_dir` (msrun, scheduler, workers)."""
    found = subprocess.run(["pgrep", "-af", str(run_dir)], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


@pytest.mark.slow
def test_killing_the_launcher_leaves_no_msrun_and_no_worker(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TWO_WORKERS, *EIGHT_PAIRS, "schedule.n_epochs=500", data_dir(tmp_path), f"hydra.run.dir={run_dir}"]
    launcher = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    rank_logs = [run_dir / "workers" / f"worker_{rank}.log" for rank in (0, 1)]
    while not all(log.is_file() and "training epochs" in log.read_text() for log in rank_logs):
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.2)
    assert len(job_processes(run_dir)) >= 3  # msrun, its scheduler and two workers are running
    launcher.kill()  # SIGKILL: no handler of ours runs
    launcher.wait()
    deadline = time.monotonic() + 10
    while job_processes(run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job_processes(run_dir) == []
