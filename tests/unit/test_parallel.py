"""Data-parallel training without a job: the parallel keys, each rank's share of the global batch, a
worker's environment, the launcher's helpers, which checkpoints resume on how many devices."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pix2pix.checkpoint import ResumePoint, check_mid_epoch_resume
from pix2pix.config.checks import validate
from pix2pix.data.aligned import AlignedPairSource, EpochStream
from pix2pix.errors import Pix2PixError
from pix2pix.parallel import env as job
from pix2pix.parallel.launcher import (
    LogTail,
    archive_earlier_logs,
    describe_exit,
    hydra_quote,
    last_error_line,
    worker_env,
)

# -- configuration and pure parts -------------------------------------------------------------------


def test_8pcs_composes_every_parallel_key(compose_cfg):
    cfg = compose_cfg("parallel=8pcs")
    assert cfg.parallel.device_num == 8 and cfg.parallel.nodes == 1 and cfg.parallel.sync_bn is False
    assert set(cfg.parallel) == set(compose_cfg("parallel=single").parallel)
    validate(cfg)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["parallel.device_num=0"], "parallel.device_num=0: use 1 or more"),
        (["parallel.device_num=3", "parallel.nodes=2", "parallel.master_port=8118"], "does not divide"),
        (["parallel.device_num=4", "parallel.nodes=2", "parallel.node_rank=2", "parallel.master_port=8118"], "0 .. 1"),
        (["parallel.device_num=4", "parallel.nodes=2"], "set parallel.master_port"),
    ],
)
def test_bad_parallel_settings_name_the_key(compose_cfg, overrides, message):
    with pytest.raises(Pix2PixError, match=re.escape(message)):
        validate(compose_cfg(*overrides))


def test_ranks_read_the_global_batch_between_them():
    source = AlignedPairSource([Path(f"{i}.jpg") for i in range(11)], "AtoB", 72, 64, True)
    one_device = EpochStream(source, batch_size=4, seed=3, first=1, last=1)
    ranks = [EpochStream(source, batch_size=2, seed=3, first=1, last=1, rank=r, ranks=2) for r in (0, 1)]
    for epoch in (1, 2):
        batches = one_device.order(epoch).reshape(-1, 4)
        shards = [stream.order(epoch).reshape(-1, 2) for stream in ranks]
        assert len(batches) == 2 and all(len(shard) == 2 for shard in shards)  # 11 // 4: the rest is dropped
        for step, batch in enumerate(batches):
            assert list(batch) == [*shards[0][step], *shards[1][step]]
    assert list(ranks[0].order(1)) != list(ranks[0].order(2))  # a new shuffle every epoch


def test_workers_share_one_run_folder_and_only_rank_0_records(monkeypatch):
    monkeypatch.setenv("MS_ROLE", "MS_WORKER")
    monkeypatch.setenv("RANK_ID", "1")
    assert job.launcher() == "msrun"
    extra = job.worker_overrides(["seed=1"])
    folder = extra[0].removeprefix("hydra.run.dir=")
    assert re.fullmatch(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", folder)
    assert job.shared_run_dir() == folder  # the parent's start time: the same for every worker
    assert set(extra[1:]) == set(job.QUIET_RANK_OVERRIDES)
    monkeypatch.setenv("RANK_ID", "0")
    assert job.worker_overrides(["hydra.run.dir=/x"]) == []
    monkeypatch.delenv("MS_ROLE")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert job.launcher() == "mpirun"


def test_launcher_helpers(tmp_path):
    assert hydra_quote("/tmp/run-1/x_y") == "/tmp/run-1/x_y"
    assert hydra_quote("/tmp/a b's") == "'/tmp/a b\\'s'"
    assert describe_exit(-9) == "killed by SIGKILL" and describe_exit(2) == "exit status 2"
    log_file = tmp_path / "worker_1.log"
    log_file.write_text("[2026-11-26 01:00:00,000][pix2pix.tasks][ERROR] - dataset.root: no such folder\nbye\n")
    assert last_error_line(log_file) == "dataset.root: no such folder"
    tail = LogTail(log_file)
    assert tail.lines()[1] == "bye" and tail.lines() == []
    with open(log_file, "a") as f:
        f.write("half")
    assert tail.lines() == []
    with open(log_file, "a") as f:
        f.write(" line\n")
    assert tail.lines() == ["half line"]
    archive_earlier_logs(tmp_path)
    (archived,) = tmp_path.glob("before-*/worker_1.log")
    assert not log_file.exists() and archived.read_text().endswith("half line\n")


def test_workers_run_this_python_and_may_preload_another_nccl(tmp_path):
    env = worker_env(tmp_path)
    ran = subprocess.run(["python", "-c", "import sys; print(sys.prefix)"], env=env, capture_output=True, text=True)
    assert ran.stdout.strip() == sys.prefix and env["PYTHONUNBUFFERED"] == "1"
    library = tmp_path / "libnccl.so.2"
    library.write_bytes(b"")
    assert worker_env(tmp_path, str(library))["LD_PRELOAD"].split()[0] == str(library)
    with pytest.raises(Pix2PixError, match="parallel.nccl_library=/nowhere/libnccl.so.2: no such file"):
        worker_env(tmp_path, "/nowhere/libnccl.so.2")


def test_a_checkpoint_from_mid_epoch_resumes_only_on_as_many_devices():
    mid_epoch = ResumePoint(epoch=1, step_in_epoch=2, global_step=6, val_L1_before=0.5, device_num=2)
    check_mid_epoch_resume(mid_epoch, 2, 1, "4 files")
    with pytest.raises(Pix2PixError, match="parallel.device_num=2 then, 1 now"):
        check_mid_epoch_resume(mid_epoch, 1, 1, "4 files")
    end_of_epoch = ResumePoint(epoch=1, step_in_epoch=0, global_step=4, val_L1_before=0.5, device_num=2)
    check_mid_epoch_resume(end_of_epoch, 1, 1, "4 files")
