"""Generators: the U-Net of the paper and the ResNet alternative, one builder each.

Parameter order and shapes follow pytorch-CycleGAN-and-pix2pix (down1..downN, then
upN..up1; the U-Net skip is concatenated first: up_k sees cat(down_k, up_{k+1})).
"""

from __future__ import annotations

from mindspore import nn, ops

from pix2pix.errors import Pix2PixError
from pix2pix.models.layers import LeakyReLU, conv4x4, deconv4x4, has_bias, init_weights, norm_layer, sequential


class UNet(nn.Cell):
    """The U-Net's wiring: encoder blocks, then decoder blocks, each decoder block after the innermost
    seeing cat(skip, previous). UnetGenerator builds the paper's blocks; models.deploy rebuilds them."""

    def __init__(self, down: list[nn.Cell], up: list[nn.Cell], input_multiple: int):
        super().__init__()
        self.input_multiple = input_multiple  # each side must divide by this (the bottleneck is >= 1x1)
        self.num_downs = len(down)
        self.down = nn.CellList(down)
        self.up = nn.CellList(up)

    def construct(self, x):
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.up[0](x)
        for i in range(1, self.num_downs):
            x = self.up[i](ops.cat((skips[self.num_downs - 1 - i], x), 1))
        return x


class UnetGenerator(UNet):
    """U-Net with `num_downs` stride-2 downsamplings (unet_256: 8, unet_128: 7).

    Encoder (C = conv 4x4 stride 2, pad 1):
        down1      C(in -> ngf)                      no activation before, no norm
        down2..N-1 LeakyReLU(0.2) C -> norm          widths ngf*2, ngf*4, ngf*8, ngf*8 ...
        downN      LeakyReLU(0.2) C(ngf*8 -> ngf*8)  innermost: no norm
    Decoder (T = transposed conv 4x4 stride 2, pad 1):
        upN        ReLU T(ngf*8 -> ngf*8) norm
        upK        ReLU T(2*w -> w') norm [Dropout 0.5 in the N-5 innermost ngf*8 blocks]
        up1        ReLU T(2*ngf -> out, bias) Tanh
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = True,
        pad_mode: str = "CONSTANT",
        init_type: str = "normal",
        init_gain: float = 0.02,
    ):
        if num_downs < 5:
            raise Pix2PixError(f"model.generator.num_downs={num_downs}: the U-Net needs at least 5")
        bias = has_bias(norm)
        # Output width of down_k (= input width of up_k's skip), k = 1..N.
        width = [ngf, ngf * 2, ngf * 4] + [ngf * 8] * (num_downs - 3)
        n_dropout = num_downs - 5

        downs = [conv4x4(input_nc, width[0], bias=bias, pad_mode=pad_mode)]
        for k in range(1, num_downs):
            innermost = k == num_downs - 1
            downs.append(
                sequential(
                    LeakyReLU(0.2),
                    conv4x4(width[k - 1], width[k], bias=bias, pad_mode=pad_mode),
                    None if innermost else norm_layer(norm, width[k]),
                )
            )
        ups = []
        for k in range(num_downs - 1, 0, -1):  # upN .. up2, innermost first
            innermost = k == num_downs - 1
            in_ch = width[k] if innermost else 2 * width[k]
            dropout = use_dropout and num_downs - 1 - n_dropout <= k < num_downs - 1
            ups.append(
                sequential(
                    nn.ReLU(),
                    deconv4x4(in_ch, width[k - 1], bias=bias),
                    norm_layer(norm, width[k - 1]),
                    nn.Dropout(p=0.5) if dropout else None,
                )
            )
        ups.append(sequential(nn.ReLU(), deconv4x4(2 * width[0], output_nc, bias=True), nn.Tanh()))
        super().__init__(downs, ups, input_multiple=2**num_downs)
        init_weights(self, init_type, init_gain)


class Residual(nn.Cell):
    """x + block(x)."""

    def __init__(self, block: nn.Cell):
        super().__init__()
        self.block = block

    def construct(self, x):
        return x + self.block(x)


class ResnetBlock(Residual):
    """x + [ReflectPad 1, Conv3x3, norm, ReLU, (Dropout 0.5), ReflectPad 1, Conv3x3, norm](x)."""

    def __init__(self, dim: int, norm: str, use_dropout: bool):
        bias = has_bias(norm)
        block = sequential(
            nn.Pad(((0, 0), (0, 0), (1, 1), (1, 1)), mode="REFLECT"),
            nn.Conv2d(dim, dim, 3, pad_mode="valid", has_bias=bias),
            norm_layer(norm, dim),
            nn.ReLU(),
            nn.Dropout(p=0.5) if use_dropout else None,
            nn.Pad(((0, 0), (0, 0), (1, 1), (1, 1)), mode="REFLECT"),
            nn.Conv2d(dim, dim, 3, pad_mode="valid", has_bias=bias),
            norm_layer(norm, dim),
        )
        super().__init__(block)


class Chain(nn.Cell):
    """Layers one after another, with the input multiple the generators declare."""

    def __init__(self, layers: list[nn.Cell], input_multiple: int):
        super().__init__()
        self.input_multiple = input_multiple
        self.model = sequential(*layers)

    def construct(self, x):
        return self.model(x)


class ResnetGenerator(Chain):
    """Johnson et al.'s ResNet generator (resnet_9blocks, resnet_6blocks):
    c7s1-ngf, d(2ngf), d(4ngf), n_blocks x R(4ngf), u(2ngf), u(ngf), c7s1-out, Tanh."""

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        n_blocks: int = 9,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = True,
        init_type: str = "normal",
        init_gain: float = 0.02,
    ):
        bias = has_bias(norm)
        layers = [
            nn.Pad(((0, 0), (0, 0), (3, 3), (3, 3)), mode="REFLECT"),
            nn.Conv2d(input_nc, ngf, 7, pad_mode="valid", has_bias=bias),
            norm_layer(norm, ngf),
            nn.ReLU(),
        ]
        for mult in (1, 2):
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, pad_mode="pad", padding=1, has_bias=bias),
                norm_layer(norm, ngf * mult * 2),
                nn.ReLU(),
            ]
        layers += [ResnetBlock(ngf * 4, norm, use_dropout) for _ in range(n_blocks)]
        for mult in (4, 2):
            # PyTorch's ConvTranspose2d(3, stride 2, padding 1, output_padding 1): cropped by 1 above and left
            # only. MindSpore's output_padding=1 would leave the extra row and column unlike the reference's.
            layers += [
                nn.Conv2dTranspose(
                    ngf * mult, ngf * mult // 2, 3, stride=2, pad_mode="pad", padding=(1, 0, 1, 0), has_bias=bias
                ),
                norm_layer(norm, ngf * mult // 2),
                nn.ReLU(),
            ]
        layers += [
            nn.Pad(((0, 0), (0, 0), (3, 3), (3, 3)), mode="REFLECT"),
            nn.Conv2d(ngf, output_nc, 7, pad_mode="valid", has_bias=True),
            nn.Tanh(),
        ]
        super().__init__(layers, input_multiple=4)  # two stride-2 convolutions, undone by two transposed ones
        init_weights(self, init_type, init_gain)
