"""Mixed precision in the train step: an overflow skips the step for both networks and halves the scale,
good steps grow it, checkpoint names do not change with the AMP level, and a bad level is one line."""

from __future__ import annotations

import numpy as np
import pytest

from pix2pix import checkpoint
from pix2pix.config.checks import validate
from pix2pix.errors import Pix2PixError
from pix2pix.tasks.train import build_train_step
from tests.helpers import compose_config

TINY_NETS = ["model.generator.num_downs=5", "model.generator.ngf=4", "model.discriminator.ndf=4"]


def tiny_step(tmp_path, *overrides):
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    cfg = compose_config(
        ["device=cpu", "dataset.crop_size=32", "dataset.load_size=36", *TINY_NETS, *overrides], tmp_path
    )
    validate(cfg)
    step = build_train_step(cfg)
    step.set_train(True)
    return step


def batch(value: float | None = None, shape=(1, 3, 32, 32)):
    import mindspore as ms

    rng = np.random.default_rng(0)
    data = rng.uniform(-1, 1, shape) if value is None else np.full(shape, value)
    return ms.Tensor(data.astype(np.float32))


def weights(step) -> dict[str, np.ndarray]:
    """Everything a step may change except the loss scale: G, D (BatchNorm statistics too), both Adams."""
    state = checkpoint.training_state(step)
    return {n: p.asnumpy().copy() for n, p in state.items() if not n.startswith("loss_scale.")}


def scale_state(step) -> tuple[float, int, int]:
    s = step.loss_scale
    return float(s.scale.asnumpy()), int(s.good_steps.asnumpy()), int(s.skipped_steps.asnumpy())


def test_an_overflow_skips_both_networks_and_halves_the_scale_good_steps_double_it(tmp_path):
    step = tiny_step(tmp_path, "amp=O2", "loss_scale.initial=1024", "loss_scale.window=2")
    real_A, real_B = batch(), batch()
    step.losses(real_A, real_B)
    assert not step.skipped_last and step.scale_last == 1024 and scale_state(step) == (1024, 1, 0)
    step.losses(real_A, real_B)
    assert scale_state(step) == (2048, 0, 0)  # two good steps in a row: doubled
    before = weights(step)
    losses = step.losses(batch(np.inf), real_B)  # G's output and every gradient are non-finite
    assert step.skipped_last and step.scale_last == 2048 and not np.isfinite(losses[0])
    assert scale_state(step) == (1024, 0, 1)
    after = weights(step)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    step.losses(real_A, real_B)  # and training goes on
    assert not step.skipped_last and scale_state(step) == (1024, 1, 1)


def test_an_overflow_in_g_alone_undoes_d_update(tmp_path, monkeypatch):
    """lambda_L1 so large that only G's gradients overflow (the L1 term reaches G alone): D has already
    stepped by then, and its update is put back, Adam state included. O1 writes no code into the current
    folder (MindSpore's own O1 rewrites the network into ./rewritten_network/ and imports it)."""
    monkeypatch.chdir(tmp_path)
    step = tiny_step(tmp_path, "amp=O1", "model.lambda_L1=1e36", "loss_scale.initial=4")
    assert not (tmp_path / "rewritten_network").exists()
    before = weights(step)
    step.losses(batch(), batch())
    assert step.skipped_last and scale_state(step) == (2, 0, 1)
    after = weights(step)
    assert any(name.startswith("optimizer_D.moment1") for name in before)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_checkpoint_names_are_the_same_at_every_level(tmp_path):
    float32 = set(checkpoint.training_state(tiny_step(tmp_path)))
    o3 = set(checkpoint.training_state(tiny_step(tmp_path, "amp=O3")))
    assert o3 - float32 == {"loss_scale.scale", "loss_scale.good_steps", "loss_scale.skipped_steps"}
    assert float32 <= o3


def test_a_bad_level_or_scale_is_one_line(tmp_path):
    with pytest.raises(Pix2PixError, match="amp=O4: use one of O0, O1, O2, O3"):
        validate(compose_config(["amp=O4"], tmp_path))
    with pytest.raises(Pix2PixError, match="loss_scale.factor=1.0: use a value > 1"):
        validate(compose_config(["amp=O2", "loss_scale.factor=1"], tmp_path))
