"""pix2pix.tools.bench without a bench process: the FLOP count read from oneDNN's shape string."""

from __future__ import annotations

from pix2pix.tools import bench


def test_conv_flops_reads_onednns_shape_string():
    # unet_256's second down conv: 64 -> 128 channels, 4x4, 128x128 -> 64x64
    assert bench.conv_flops("mb1_ic64oc128_ih128oh64kh4sh2dh0ph1_iw128ow64kw4sw2dw0pw1") == 2 * 64 * 128 * 16 * 64 * 64
    assert bench.conv_flops("mb2_ic3oc64_ih256oh128kh4sh2dh0ph1_iw256ow128kw4sw2dw0pw1") == 2 * 2 * 3 * 64 * 16 * 128**2
    assert bench.conv_flops("mb1ic128ih64iw64") == 0  # a batch norm: no FLOP count
