"""Runs survive interruptions: resume equals an uninterrupted run; SIGKILL (also mid-write), SIGINT
and SIGTERM leave a resumable run; resume refuses to change the networks."""

from __future__ import annotations

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pix2pix.train import checkpoint
from tests.conftest import TINY, run_launch

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
    killed, output = launch(tmp_path, run_dir, *NO_DROPOUT, fault, f"hydra.run.dir={run_dir}")
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
    args = [*NO_DROPOUT, "fault.signal_at_step=6", f"fault.signal_name={name}", f"hydra.run.dir={run_dir}"]
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
    args = [*NO_DROPOUT, "fault.signal_at_step=6", "fault.signal_times=2", f"hydra.run.dir={run_dir}"]
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
