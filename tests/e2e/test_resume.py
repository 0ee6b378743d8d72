"""Runs survive interruptions: resume equals an uninterrupted run; SIGKILL (also mid-write), SIGINT
and SIGTERM leave a resumable run; resume refuses to change the networks."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pix2pix import checkpoint
from tests.helpers import ROOT, TINY, run_launch

# Dropout masks come from MindSpore's op RNG, which a new process cannot continue: without dropout
# a resumed run must land where the uninterrupted one does.
NO_DROPOUT = [*TINY, "model.generator.use_dropout=false"]
STEPS = 8  # TINY: 4 steps x 2 epochs


def launch(tmp_path, run_dir, *args):
    result = run_launch([*args, f"paths.data_dir={tmp_path.parent / 'data'}"], cwd=tmp_path)
    return result, result.stdout + result.stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    work = tmp_path_factory.mktemp("whole")
    run_dir = work / "run"
    result, output = launch(work, run_dir, *NO_DROPOUT, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, output[-3000:]
    return checkpoint.load(run_dir / "checkpoints" / "last.ckpt")


def assert_same_training_state(resumed_dir, uninterrupted):
    resumed = checkpoint.load(resumed_dir / "checkpoints" / "last.ckpt")
    assert int(resumed["epoch"].asnumpy()) == 2 and int(resumed["global_step"].asnumpy()) == STEPS
    for name, value in uninterrupted.items():
        if name.startswith(("G.", "D.", "optimizer_")):
            np.testing.assert_allclose(resumed[name].asnumpy(), value.asnumpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def assert_one_point_per_step(run_dir):
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    for tag in ("loss_G_L1", "loss_D_fake", "step_time_ms"):
        assert [p.step for p in events.Scalars(tag)] == list(range(1, STEPS + 1)), tag


@pytest.mark.parametrize(
    "fault,expected_last_epoch",
    [
        ("fault.kill_at_step=6", 1),  # mid-epoch 2, after epoch 1's checkpoint
        ("fault.kill_in_save=3", 1),  # inside the write of epoch 2's last.ckpt (1: last, 2: epoch_001)
        ("fault.kill_in_save=1", None),  # inside the very first write: nothing to resume from
    ],
)
def test_sigkill_anywhere_leaves_a_resumable_run(tmp_path, uninterrupted, fault, expected_last_epoch):
    run_dir = tmp_path / "run"
    killed, output = launch(tmp_path, run_dir, *NO_DROPOUT, "debug=faults", fault, f"hydra.run.dir={run_dir}")
    assert killed.returncode == -9, output[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    if expected_last_epoch is None:
        assert not last.exists()
        again, output = launch(tmp_path, run_dir, f"ckpt={run_dir}")
        assert again.returncode == 2 and "no checkpoints/last.ckpt" in output
        return
    assert int(checkpoint.load(last)["epoch"].asnumpy()) == expected_last_epoch  # intact, CRC checked
    resumed, output = launch(tmp_path, run_dir, f"ckpt={run_dir}")
    assert resumed.returncode == 0, output[-3000:]
    assert not checkpoint.partial_files(run_dir / "checkpoints")
    assert_same_training_state(run_dir, uninterrupted)
    assert_one_point_per_step(run_dir)
    log = (run_dir / "launch.log").read_text()
    assert "resuming from" in log and "validation L1 of the trained generator" in log


@pytest.mark.parametrize("name,status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_writes_a_checkpoint_of_the_last_step_and_says_how_to_resume(tmp_path, uninterrupted, name, status):
    run_dir = tmp_path / "run"
    args = [
        *NO_DROPOUT,
        "debug=faults",
        "fault.signal_at_step=6",
        f"fault.signal_name={name}",
        f"hydra.run.dir={run_dir}",
    ]
    stopped, output = launch(tmp_path, run_dir, *args)
    assert stopped.returncode == status, output[-3000:]
    assert f"stopped by {name}" in output and f"resume with: python launch.py ckpt={run_dir}" in output
    last = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    assert [int(last[k].asnumpy()) for k in ("epoch", "step_in_epoch", "global_step")] == [1, 2, 6]
    resumed, output = launch(tmp_path, run_dir, f"ckpt={run_dir}")
    assert resumed.returncode == 0, output[-3000:]
    assert "resuming from" in output and "2 steps done (global step 6)" in output
    assert_same_training_state(run_dir, uninterrupted)
    assert_one_point_per_step(run_dir)


def test_a_second_signal_stops_at_once_without_damage(tmp_path):
    run_dir = tmp_path / "run"
    args = [*NO_DROPOUT, "debug=faults", "fault.signal_at_step=6", "fault.signal_times=2", f"hydra.run.dir={run_dir}"]
    stopped, output = launch(tmp_path, run_dir, *args)
    assert stopped.returncode == 130, output[-3000:]
    assert "stopped at once by a second signal" in output and "Traceback" not in output
    assert int(checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["epoch"].asnumpy()) == 1
    resumed, output = launch(tmp_path, run_dir, f"ckpt={run_dir}")
    assert resumed.returncode == 0, output[-3000:]


def test_resume_keeps_the_config_refuses_new_networks_and_applies_a_longer_schedule(tmp_path):
    run_dir = tmp_path / "run"
    first, output = launch(tmp_path, run_dir, *NO_DROPOUT, f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, output[-3000:]
    recorded = (run_dir / ".hydra" / "config.yaml").read_text()
    refused, output = launch(tmp_path, run_dir, f"ckpt={run_dir}", "model.generator.ngf=16")
    assert refused.returncode == 2
    assert "model.generator.ngf: 8 -> 16 changes the networks in the checkpoint" in output
    longer, output = launch(tmp_path, run_dir, f"ckpt={run_dir}", "schedule.n_epochs=2")
    assert longer.returncode == 0, output[-3000:]
    assert "resuming with these overrides on the run's config: schedule.n_epochs=2" in output
    assert "training epochs 3-3" in output
    assert int(checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["epoch"].asnumpy()) == 3
    assert (run_dir / ".hydra" / "config.yaml").read_text() == recorded  # the run's record stays
    assert list((run_dir / ".hydra").glob("resume-*/overrides.yaml"))
    done, output = launch(tmp_path, run_dir, f"ckpt={run_dir}")
    assert done.returncode == 2 and "all 2 epochs of this schedule done" in output


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_resume_from_an_older_checkpoint_forks_and_leaves_the_run_as_it_was(tmp_path):
    run_dir = tmp_path / "run"
    first, output = launch(tmp_path, run_dir, *NO_DROPOUT, f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, output[-3000:]
    before = files_of(run_dir)
    older = run_dir / "checkpoints" / "epoch_001.ckpt"
    forked, output = launch(tmp_path, run_dir, f"ckpt={older}")
    assert forked.returncode == 0, output[-3000:]
    assert files_of(run_dir) == before  # not one byte of the original run changed, nothing added
    (fork,) = (tmp_path / "outputs").glob("*/*")
    assert "behind the run's last.ckpt (step 8)" in output and f"a fork in a new run folder, {fork}" in output
    recorded = OmegaConf.load(fork / ".hydra" / "config.yaml")
    assert recorded.forked_from.run == str(run_dir) and recorded.forked_from.checkpoint == str(older)
    assert recorded.forked_from.global_step == 4 and recorded.model.generator.ngf == 8  # the run's own config
    last = checkpoint.load(fork / "checkpoints" / "last.ckpt")
    assert [int(last[k].asnumpy()) for k in ("epoch", "global_step")] == [2, 8]
    assert "a fork in a new run folder" in (fork / "launch.log").read_text()
    assert (fork / "metrics.json").is_file()
    again, output = launch(tmp_path, run_dir, f"ckpt={fork}", "schedule.n_epochs=2")  # the fork is a run itself
    assert again.returncode == 0 and "training epochs 3-3" in output, output[-3000:]


def test_a_second_process_is_refused_while_a_run_trains_and_a_killed_one_never_blocks(tmp_path):
    run_dir = tmp_path / "run"
    long_run = [*NO_DROPOUT, "schedule.n_epochs=20", "schedule.n_epochs_decay=0", f"paths.data_dir={tmp_path / 'data'}"]
    training = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), *long_run, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoints" / "epoch_001.ckpt").exists():
            assert training.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        refused, output = launch(tmp_path, run_dir, f"ckpt={run_dir}")
        assert refused.returncode == 2 and "Traceback" not in output
        assert f"{run_dir}: pid {training.pid} on " in output and "is training in this run folder right now" in output
        assert not list((run_dir / ".hydra").glob("resume-*"))  # refused before anything was written there
    finally:
        training.kill()  # SIGKILL: its lock goes with it
        training.wait()
    resumed, output = launch(tmp_path, run_dir, f"ckpt={run_dir}")
    assert resumed.returncode == 0, output[-3000:]
    assert int(checkpoint.load(run_dir / "checkpoints" / "last.ckpt")["epoch"].asnumpy()) == 20


def test_a_mid_epoch_resume_with_another_batch_size_or_other_files_says_how_to_go_on(tmp_path):
    run_dir = tmp_path / "run"
    three_epochs = [*NO_DROPOUT, "schedule.n_epochs=2", "schedule.n_epochs_decay=1"]
    stopped, output = launch(
        tmp_path, run_dir, *three_epochs, "debug=faults", "fault.signal_at_step=6", f"hydra.run.dir={run_dir}"
    )
    assert stopped.returncode == 130, output[-3000:]  # at step 2 of epoch 2
    refused, output = launch(tmp_path, run_dir, f"ckpt={run_dir}", "dataset.batch_size=2")
    assert refused.returncode == 2 and "Traceback" not in output, output[-3000:]
    assert "stopped at step 2 of epoch 2, and dataset.batch_size=1 then, 2 now" in output
    assert "add checkpoint.resume=next_epoch to go on at epoch 3" in output
    (train_dir,) = (tmp_path.parent / "data").glob("synthetic/64px-4+2-*/train")  # TINY's
    moved = tmp_path / "4.jpg"
    shutil.move(train_dir / "4.jpg", moved)
    try:
        refused, output = launch(tmp_path, run_dir, f"ckpt={run_dir}")
        assert refused.returncode == 2 and "the training split's files differ (then 4 files" in output, output[-3000:]
    finally:
        shutil.move(moved, train_dir / "4.jpg")
    resumed, output = launch(
        tmp_path, run_dir, f"ckpt={run_dir}", "dataset.batch_size=2", "checkpoint.resume=next_epoch"
    )
    assert resumed.returncode == 0, output[-3000:]
    assert "the rest of epoch 2 (after its step 2) is skipped; training goes on at epoch 3" in output
    last = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    assert [int(last[k].asnumpy()) for k in ("epoch", "global_step", "batch_size")] == [3, 8, 2]  # 6 + 2 steps of 2
