"""The pix2pix training step: one Cell holding G, D and both optimizers, compiled
as one graph (the fastest form found on MindSpore 2.10; it also keeps the two Adams'
parameter names apart)."""

from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from pix2pix.backend.memory import release_free_memory
from pix2pix.models.losses import GANLoss
from pix2pix.training.amp import DynamicLossScale, Snapshot, all_finite

LOSS_NAMES = ("loss_D_real", "loss_D_fake", "loss_G_GAN", "loss_G_L1")


class Pix2PixTrainStep(nn.Cell):
    """One batch, as in the paper and pytorch-CycleGAN-and-pix2pix:

    1. fake_B = G(real_A), computed once;
    2. D step on loss_D = lambda_D * (GAN(D(A, B), real) + GAN(D(A, fake_B.detach()), fake));
    3. G step on loss_G = lambda_GAN * GAN(D'(A, fake_B), real) + lambda_L1 * |fake_B - B|_1,
       with the just-updated D'. G's gradient flows back through the same fake_B
       (a vector-Jacobian product of the step-1 forward).

    With `device_num` > 1 (a data-parallel job), each rank's gradients are averaged over all ranks
    (nn.DistributedGradReducer, an all-reduce) before each optimizer step, so every rank takes the
    step that one device would take on the global batch.

    With `loss_scale` (mixed precision), both losses are scaled before their gradients are taken and the
    gradients unscaled after. When D's gradients overflow, neither optimizer steps; when G's do, D has
    stepped already and is put back. `restorable` (D's weights and Adam state, and both networks' BatchNorm
    running statistics, which the forward passes move) is saved at the start of each step and restored
    when it is skipped, so a skipped step leaves both networks as they were.

    Returns the four loss terms (loss_D_real, loss_D_fake, loss_G_GAN, loss_G_L1), plus, with a loss
    scale, whether the step was skipped and the scale it used.
    """

    def __init__(
        self,
        generator: nn.Cell,
        discriminator: nn.Cell,
        optimizer_G: nn.Optimizer,
        optimizer_D: nn.Optimizer,
        gan_mode: str = "vanilla",
        lambda_L1: float = 100.0,
        lambda_GAN: float = 1.0,
        lambda_D: float = 0.5,
        device_num: int = 1,
        loss_scale: DynamicLossScale | None = None,
        restorable: list[ms.Parameter] | None = None,
    ):
        super().__init__()
        self.G = generator
        self.D = discriminator
        self.optimizer_G = optimizer_G
        self.optimizer_D = optimizer_D
        self.gan_loss = GANLoss(gan_mode)
        self.lambda_L1 = lambda_L1
        self.lambda_GAN = lambda_GAN
        self.lambda_D = lambda_D
        self.weights_G = optimizer_G.parameters
        self.grad_D = ms.value_and_grad(self.loss_D, None, optimizer_D.parameters, has_aux=True)
        self.grad_G_of_fake = ms.value_and_grad(self.loss_G, 2, None, has_aux=True)
        self.distributed = device_num > 1
        if self.distributed:
            self.mean_grads_D = nn.DistributedGradReducer(optimizer_D.parameters, mean=True, degree=device_num)
            self.mean_grads_G = nn.DistributedGradReducer(optimizer_G.parameters, mean=True, degree=device_num)
        self.scaled = loss_scale is not None
        if self.scaled:
            self.loss_scale = loss_scale
            self.snapshot = Snapshot(restorable)  # what a skipped step must leave as it was
        self.skipped_last, self.scale_last = False, 1.0
        self.compiled_shapes: set[tuple] = set()

    def loss_D(self, real_A, real_B, fake_B, scale=1.0):
        pred_real = self.D(ops.cat((real_A, real_B), 1))
        pred_fake = self.D(ops.cat((real_A, fake_B), 1))
        loss_real = self.gan_loss(pred_real, True)
        loss_fake = self.gan_loss(pred_fake, False)
        return scale * self.lambda_D * (loss_real + loss_fake), (loss_real, loss_fake)

    def loss_G(self, real_A, real_B, fake_B, scale=1.0):
        pred_fake = self.D(ops.cat((real_A, fake_B), 1))
        loss_gan = self.gan_loss(pred_fake, True)
        loss_l1 = ops.abs(fake_B - real_B).mean()
        return scale * (self.lambda_GAN * loss_gan + self.lambda_L1 * loss_l1), (loss_gan, loss_l1)

    def construct(self, real_A, real_B):
        if self.scaled:
            return self.scaled_step(real_A, real_B)
        fake_B, backprop_G = ms.vjp(self.G, real_A, weights=self.weights_G)
        (_, (loss_D_real, loss_D_fake)), grads_D = self.grad_D(real_A, real_B, ops.stop_gradient(fake_B))
        if self.distributed:
            grads_D = self.mean_grads_D(grads_D)
        self.optimizer_D(grads_D)
        (_, (loss_G_GAN, loss_G_L1)), d_fake = self.grad_G_of_fake(real_A, real_B, fake_B)
        _, grads_G = backprop_G(d_fake)
        if self.distributed:
            grads_G = self.mean_grads_G(grads_G)
        self.optimizer_G(grads_G)
        return loss_D_real, loss_D_fake, loss_G_GAN, loss_G_L1

    def scaled_step(self, real_A, real_B):
        """The same step with the loss scaled, the gradients checked, and the updates skipped on overflow."""
        scale = self.loss_scale.scale * 1.0  # the value now (the parameter changes at the end of the step)
        self.snapshot.save()
        fake_B, backprop_G = ms.vjp(self.G, real_A, weights=self.weights_G)
        (_, (loss_D_real, loss_D_fake)), grads_D = self.grad_D(real_A, real_B, ops.stop_gradient(fake_B), scale)
        grads_D = self.loss_scale.unscale(grads_D, scale)
        if self.distributed:  # averaged first: an overflow on any rank is one on every rank
            grads_D = self.mean_grads_D(grads_D)
        finite_D = all_finite(grads_D)
        if finite_D:
            self.optimizer_D(grads_D)
        (_, (loss_G_GAN, loss_G_L1)), d_fake = self.grad_G_of_fake(real_A, real_B, fake_B, scale)
        _, grads_G = backprop_G(d_fake)
        grads_G = self.loss_scale.unscale(grads_G, scale)
        if self.distributed:
            grads_G = self.mean_grads_G(grads_G)
        finite_G = all_finite(grads_G)
        finite = ops.logical_and(finite_D, finite_G)
        if finite:
            self.optimizer_G(grads_G)
        else:
            self.snapshot.restore()
        self.loss_scale(finite)
        return loss_D_real, loss_D_fake, loss_G_GAN, loss_G_L1, ops.logical_not(finite), scale

    def losses(self, real_A: ms.Tensor, real_B: ms.Tensor) -> list[float]:
        """One step, waited for (float() reads each loss back from the device), as LOSS_NAMES; with a loss
        scale, `skipped_last` and `scale_last` say whether it was skipped and at what scale.

        A new input shape is compiled first and what compilation freed given back before the step runs: the
        first step's peak memory is the run's."""
        shapes = (tuple(real_A.shape), tuple(real_B.shape))
        if shapes not in self.compiled_shapes:
            self.compile(real_A, real_B)
            release_free_memory()
            self.compiled_shapes.add(shapes)
        out = self(real_A, real_B)
        if self.scaled:
            self.skipped_last, self.scale_last = bool(out[4]), float(out[5])
        return [float(loss) for loss in out[:4]]
