"""Rectangular training in mixed precision, end to end: a tiny 64x128 run at amp=O2 with an injected
overflow, then eval and predict at the shape it trained at, and a mid-run stop and resume that ends
in the uninterrupted run's state, loss scale included."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pix2pix import checkpoint
from tests.helpers import TINY, run_launch

# No dropout: a resumed run must land exactly where the uninterrupted one does (see test_resume.py).
# The scale doubles after 2 good steps; step 3's input is Inf (an overflow to skip). 8 steps in all.
AMP_RECT = [
    *TINY,
    "model.generator.use_dropout=false",
    "dataset.load_size=[72,136]",
    "dataset.crop_size=[64,128]",
    "amp=O2",
    "loss_scale.window=2",
    "debug=faults",
    "fault.overflow_at_step=3",
]


def launch(tmp_path, *args):
    result = run_launch([*args, f"paths.data_dir={tmp_path.parent / 'data'}"], cwd=tmp_path)
    output = result.stdout + result.stderr
    return result, output


@pytest.fixture(scope="module")
def amp_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("amp")
    run_dir = work / "run"
    result, output = launch(work, *AMP_RECT, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, output[-3000:]
    return run_dir, output


def test_an_o2_run_skips_the_overflow_and_says_so(amp_run):
    run_dir, output = amp_run
    assert "amp=O2: float16 all but BatchNorm, float32 weights" in output
    assert "amp=O2 on the CPU: MindSpore runs float16 there" in output
    epoch_1 = next(line for line in output.splitlines() if "epoch 1/2 |" in line)
    skipped_1 = int(epoch_1.split("amp: ")[1].split()[0])
    assert skipped_1 >= 1  # the injected one (and any the first scale overflowed on its own)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    assert int(last["loss_scale.skipped_steps"].asnumpy()) == metrics["amp_skipped_steps"] >= skipped_1
    assert float(last["loss_scale.scale"].asnumpy()) == metrics["amp_loss_scale"]
    assert last["G.down.0.weight"].asnumpy().dtype == np.float32  # float32 weights in the checkpoint
    assert np.isfinite(metrics["val_L1"])
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    scales = [p.value for p in events.Scalars("amp/loss_scale")]
    skipped = [p.value for p in events.Scalars("amp/skipped_steps")]
    assert len(scales) == 8 and skipped[-1] == metrics["amp_skipped_steps"]
    assert skipped[2] == skipped[1] + 1 and scales[3] == scales[2] / 2  # step 3 skipped, the scale halved
    assert 3 not in [p.step for p in events.Scalars("loss_G_L1")]  # a skipped step has no losses
    with Image.open(run_dir / "samples" / "epoch_002.png") as grid:
        assert grid.size == (3 * 128, 2 * 64)  # input | generated | target at 64x128, 2 rows


def test_eval_and_predict_use_the_shape_the_run_trained_at(amp_run, tmp_path):
    run_dir, _ = amp_run
    result, output = launch(
        tmp_path, "task=eval", f"ckpt={run_dir}", "device=cpu", "eval.mode=deterministic", "eval.fid=false"
    )
    assert result.returncode == 0, output[-3000:]
    with Image.open(next((run_dir / "eval" / "val" / "images").glob("*_generated.png"))) as img:
        assert img.size == (128, 64)
    photo = tmp_path / "in" / "wide.png"
    photo.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 200, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "out"
    args = ["task=predict", f"ckpt={run_dir}", f"predict.input={photo}", f"predict.output={out}", "device=cpu"]
    result, output = launch(tmp_path, *args)
    assert result.returncode == 0, output[-3000:]
    with Image.open(out / "wide.png") as img:
        assert img.size == (200, 90)


def test_a_stopped_amp_run_resumes_to_the_uninterrupted_state(amp_run, tmp_path):
    whole_dir, _ = amp_run
    run_dir = tmp_path / "run"
    stopped, output = launch(tmp_path, *AMP_RECT, "fault.signal_at_step=5", f"hydra.run.dir={run_dir}")
    assert stopped.returncode == 130, output[-3000:]
    resumed, output = launch(tmp_path, f"ckpt={run_dir}")
    assert resumed.returncode == 0, output[-3000:]
    whole = checkpoint.load(whole_dir / "checkpoints" / "last.ckpt")
    again = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    for name in ("loss_scale.scale", "loss_scale.good_steps", "loss_scale.skipped_steps"):
        assert again[name].asnumpy() == whole[name].asnumpy(), name
    for name, value in whole.items():
        if name.startswith(("G.", "D.", "optimizer_")):
            np.testing.assert_allclose(again[name].asnumpy(), value.asnumpy(), rtol=1e-4, atol=1e-6, err_msg=name)
