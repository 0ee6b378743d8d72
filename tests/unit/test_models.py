"""Networks exactly as the paper: parameter counts, shapes, layer placement, init, the step."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from hydra.utils import instantiate
from mindspore import nn

from pix2pix.models.discriminator import NLayerDiscriminator
from pix2pix.models.generator import UnetGenerator
from pix2pix.models.layers import count_params
from pix2pix.models.losses import GANLoss
from pix2pix.training.step import Pix2PixTrainStep

ms.set_device("CPU")
ms.set_context(mode=ms.GRAPH_MODE)


def tensor(*shape: int, seed: int = 0) -> ms.Tensor:
    return ms.Tensor(np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32))


def test_unet_256_and_basic_discriminator_parameter_counts():
    assert count_params(UnetGenerator()) == 54_413_955
    assert count_params(NLayerDiscriminator(input_nc=6)) == 2_768_705


def test_parameter_order_follows_the_reference_layout():
    """down1..down8, then up8..up1, as pytorch-CycleGAN-and-pix2pix (../shared/bench/param_order.txt)."""
    shapes = [tuple(p.shape) for p in UnetGenerator().trainable_params()]
    assert shapes[0] == (64, 3, 4, 4)  # down1: no norm, no bias
    assert shapes[1:4] == [(128, 64, 4, 4), (128,), (128,)]  # down2 conv, BN gamma, beta
    assert len(shapes) == 43  # as the reference: 43 trainable tensors
    assert shapes[19] == (512, 512, 4, 4) and shapes[20] == (512, 512, 4, 4)  # down8 (innermost), up8
    assert shapes[23] == (1024, 512, 4, 4)  # up7 sees cat(down7, up8)
    assert shapes[-2:] == [(128, 3, 4, 4), (3,)]  # up1: ConvT(2*ngf -> 3) with bias


@pytest.mark.parametrize(
    "option,size,ngf",
    [("unet_256", 256, 8), ("unet_128", 128, 8), ("resnet_9blocks", 64, 8), ("resnet_6blocks", 64, 8)],
)
def test_generator_output_shapes(compose_cfg, option, size, ngf):
    cfg = compose_cfg(f"model/generator={option}", f"model.generator.ngf={ngf}")
    net = instantiate(cfg.model.generator)
    net.set_train(False)
    out = net(tensor(2, 3, size, size)).asnumpy()
    assert out.shape == (2, 3, size, size)
    assert np.abs(out).max() <= 1.0  # Tanh


@pytest.mark.parametrize(
    "option,extra,size,patch",
    [
        ("basic", [], 256, 30),
        ("n_layers", ["model.discriminator.n_layers=1"], 256, 126),
        ("n_layers", ["model.discriminator.n_layers=5"], 256, 6),
        ("pixel", [], 64, 64),
    ],
)
def test_discriminator_output_shapes(compose_cfg, option, extra, size, patch):
    cfg = compose_cfg(f"model/discriminator={option}", "model.discriminator.ndf=8", *extra)
    net = instantiate(cfg.model.discriminator)
    assert net(tensor(1, 6, size, size)).shape == (1, 1, patch, patch)


def test_unet_layers_as_the_paper():
    net = UnetGenerator()
    cells = [type(c).__name__ for _, c in net.cells_and_names()]
    assert cells.count("Dropout") == 3  # the three innermost 512-channel decoder blocks
    assert [type(c).__name__ for c in net.up[1]] == ["ReLU", "Conv2dTranspose", "BatchNorm2d", "Dropout"]
    assert [type(c).__name__ for c in net.up[4]] == ["ReLU", "Conv2dTranspose", "BatchNorm2d"]
    assert [type(c).__name__ for c in net.down[7]] == ["LeakyReLU", "Conv2d"]  # innermost: no norm
    assert type(net.down[0]).__name__ == "Conv2d"  # outermost down: no activation, no norm
    assert [type(c).__name__ for c in net.up[-1]] == ["ReLU", "Conv2dTranspose", "Tanh"]
    assert net.down[1][0].alpha == 0.2
    convs = [c for _, c in net.cells_and_names() if isinstance(c, (nn.Conv2d, nn.Conv2dTranspose))]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == 1 for c in convs)
    assert [c.has_bias for c in convs].count(True) == 1  # only the last up conv


def test_discriminator_layers_as_the_paper():
    net = NLayerDiscriminator(input_nc=6)
    convs = [c for _, c in net.cells_and_names() if isinstance(c, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert [c.has_bias for c in convs] == [True, False, False, False, True]
    assert type(net.model[1]).__name__ == "LeakyReLU"  # no norm after the first conv


def test_reflect_padding_keeps_shapes_and_counts():
    zero, reflect = NLayerDiscriminator(ndf=8), NLayerDiscriminator(ndf=8, pad_mode="REFLECT")
    x = tensor(1, 6, 64, 64)
    assert count_params(zero) == count_params(reflect)
    assert zero(x).shape == reflect(x).shape
    gen = UnetGenerator(num_downs=6, ngf=8, pad_mode="REFLECT")
    assert gen(tensor(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_instance_norm_and_no_norm_build_and_run():
    for norm in ("instance", "none"):
        net = UnetGenerator(num_downs=6, ngf=8, norm=norm)
        assert net(tensor(1, 3, 64, 64)).shape == (1, 3, 64, 64)
        assert not any(isinstance(c, nn.BatchNorm2d) for _, c in net.cells_and_names())


@pytest.mark.parametrize("init_type", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_types(init_type):
    ms.set_seed(0)
    net = NLayerDiscriminator(ndf=16, init_type=init_type, init_gain=0.02)
    weight = net.model[2].weight.asnumpy()
    gamma = net.model[3].gamma.asnumpy()
    if init_type == "normal":
        assert abs(weight.std() - 0.02) < 0.002 and abs(weight.mean()) < 0.002
    assert weight.std() > 0
    assert abs(gamma.mean() - 1.0) < 0.01 and 0.005 < gamma.std() < 0.04  # BN gamma ~ N(1, 0.02)
    assert np.all(net.model[0].bias.asnumpy() == 0)


def test_gan_losses():
    logits = ms.Tensor(np.array([[0.0, 2.0]], dtype=np.float32))
    bce_real = float(GANLoss("vanilla")(logits, True))
    assert bce_real == pytest.approx(np.mean(np.log1p(np.exp(-np.array([0.0, 2.0])))), rel=1e-5)
    assert float(GANLoss("lsgan")(logits, False)) == pytest.approx(2.0, rel=1e-6)  # mean(0^2, 2^2)


def make_step(seed: int = 0):
    ms.set_seed(seed)
    gen = UnetGenerator(num_downs=5, ngf=4, use_dropout=False)
    disc = NLayerDiscriminator(ndf=4)

    def adam(params):
        return nn.Adam(params, learning_rate=2e-4, beta1=0.5, beta2=0.999)

    return Pix2PixTrainStep(gen, disc, adam(gen.trainable_params()), adam(disc.trainable_params()))


class TextbookDStep(nn.Cell):
    """D step on a given (detached) fake, as its own graph."""

    def __init__(self, step: Pix2PixTrainStep):
        super().__init__()
        self.step = step
        self.grad = ms.value_and_grad(step.loss_D, None, step.optimizer_D.parameters, has_aux=True)

    def construct(self, real_A, real_B, fake_B):
        _, grads = self.grad(real_A, real_B, fake_B)
        self.step.optimizer_D(grads)
        return fake_B


class TextbookGStep(nn.Cell):
    """G step that recomputes G(A) and differentiates through it, as its own graph."""

    def __init__(self, step: Pix2PixTrainStep):
        super().__init__()
        self.step = step
        self.grad = ms.value_and_grad(self.loss, None, step.optimizer_G.parameters)

    def loss(self, real_A, real_B):
        return self.step.loss_G(real_A, real_B, self.step.G(real_A))[0]

    def construct(self, real_A, real_B):
        _, grads = self.grad(real_A, real_B)
        self.step.optimizer_G(grads)
        return grads[0]


def test_train_step_is_d_step_then_g_step_through_the_same_fake():
    """The one-graph step equals, to float tolerance, the textbook order run as separate
    graphs: D step on detach(G(A)), then a G step whose GAN term uses the updated D."""
    real_A, real_B = tensor(1, 3, 32, 32, seed=1), tensor(1, 3, 32, 32, seed=2)
    fused = make_step()
    fused.set_train(True)
    fused(real_A, real_B)

    ref = make_step()
    ref.set_train(True)
    TextbookDStep(ref)(real_A, real_B, ref.G(real_A))
    TextbookGStep(ref)(real_A, real_B)
    for net, ref_net in ((fused.G, ref.G), (fused.D, ref.D)):
        for (name, p), (_, q) in zip(net.parameters_and_names(), ref_net.parameters_and_names()):
            if "moving" not in name:  # the textbook version runs G forward twice
                np.testing.assert_allclose(p.asnumpy(), q.asnumpy(), rtol=1e-4, atol=1e-6, err_msg=name)
    moved = [p.asnumpy() for p in fused.G.trainable_params()]
    start = [p.asnumpy() for p in make_step().G.trainable_params()]
    assert any(not np.allclose(a, b) for a, b in zip(moved, start)), "the step changed nothing"


def test_batchnorm_running_stats_move_once_per_step():
    real_A, real_B = tensor(1, 3, 32, 32, seed=1), tensor(1, 3, 32, 32, seed=2)
    step = make_step()
    step.set_train(True)
    bn = step.G.down[1][2]
    before = bn.moving_mean.asnumpy().copy()
    step(real_A, real_B)
    stepped = bn.moving_mean.asnumpy() - before

    once = make_step().G
    once.set_train(True)
    bn_once = once.down[1][2]
    once(real_A)
    np.testing.assert_allclose(stepped, bn_once.moving_mean.asnumpy() - before, rtol=1e-5, atol=1e-8)
