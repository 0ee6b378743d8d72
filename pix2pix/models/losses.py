"""GAN objectives on discriminator logits: vanilla (BCE with logits) or lsgan (MSE)."""

from __future__ import annotations

from mindspore import nn, ops

from pix2pix.choices import GAN_MODES, check_choice


class GANLoss(nn.Cell):
    """Loss of a logit map against an all-real (1) or all-fake (0) target."""

    def __init__(self, gan_mode: str = "vanilla"):
        super().__init__()
        check_choice("model.gan_mode", gan_mode, GAN_MODES)
        self.criterion = nn.BCEWithLogitsLoss() if gan_mode == "vanilla" else nn.MSELoss()

    def construct(self, logits, target_is_real: bool):
        target = ops.ones_like(logits) if target_is_real else ops.zeros_like(logits)
        return self.criterion(logits, target)
