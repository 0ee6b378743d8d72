"""PatchGAN discriminators. They see cat(A, B) and return logits (no sigmoid)."""

from __future__ import annotations

from mindspore import nn

from pix2pix.models.layers import LeakyReLU, conv4x4, has_bias, init_weights, norm_layer, sequential


class NLayerDiscriminator(nn.Cell):
    """PatchGAN with `n_layers` stride-2 convs (n_layers=3: the 70x70 "basic" D).

        conv1      C(in -> ndf, stride 2, bias) LeakyReLU(0.2)         no norm
        conv2..n   C(stride 2) norm LeakyReLU(0.2)                     widths 2ndf, 4ndf, 8ndf (capped)
        conv n+1   C(stride 1) norm LeakyReLU(0.2)
        out        C(-> 1, stride 1, bias)                             logits, 30x30 at 256 input
    Receptive field: n_layers=1 -> 16x16, 3 -> 70x70, 5 -> 286x286.
    """

    def __init__(
        self,
        input_nc: int = 6,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "batch",
        pad_mode: str = "CONSTANT",
        init_type: str = "normal",
        init_gain: float = 0.02,
    ):
        super().__init__()
        bias = has_bias(norm)
        layers = [conv4x4(input_nc, ndf, stride=2, bias=True, pad_mode=pad_mode), LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                conv4x4(ndf * prev, ndf * mult, stride=stride, bias=bias, pad_mode=pad_mode),
                norm_layer(norm, ndf * mult),
                LeakyReLU(0.2),
            ]
        layers.append(conv4x4(ndf * mult, 1, stride=1, bias=True, pad_mode=pad_mode))
        self.model = sequential(*layers)
        init_weights(self, init_type, init_gain)

    def construct(self, x):
        return self.model(x)


class PixelDiscriminator(nn.Cell):
    """1x1 PatchGAN ("pixel"): Conv1x1(in -> ndf, bias) LReLU, Conv1x1(-> 2ndf) norm LReLU, Conv1x1(-> 1)."""

    def __init__(
        self,
        input_nc: int = 6,
        ndf: int = 64,
        norm: str = "batch",
        init_type: str = "normal",
        init_gain: float = 0.02,
    ):
        super().__init__()
        bias = has_bias(norm)
        self.model = sequential(
            nn.Conv2d(input_nc, ndf, 1, has_bias=True),
            LeakyReLU(0.2),
            nn.Conv2d(ndf, ndf * 2, 1, has_bias=bias),
            norm_layer(norm, ndf * 2),
            LeakyReLU(0.2),
            nn.Conv2d(ndf * 2, 1, 1, has_bias=bias),
        )
        init_weights(self, init_type, init_gain)

    def construct(self, x):
        return self.model(x)
