"""pix2pix.tools.bench without a bench process: the FLOP count read from oneDNN's shape string."""

from __future__ import annotations

import pytest

from pix2pix.tools import bench


def test_conv_flops_reads_onednns_shape_string():
    # unet_256's second down conv: 64 -> 128 channels, 4x4, 128x128 -> 64x64
    assert bench.conv_flops("mb1_ic64oc128_ih128oh64kh4sh2dh0ph1_iw128ow64kw4sw2dw0pw1") == 2 * 64 * 128 * 16 * 64 * 64
    assert bench.conv_flops("mb2_ic3oc64_ih256oh128kh4sh2dh0ph1_iw256ow128kw4sw2dw0pw1") == 2 * 2 * 3 * 64 * 16 * 128**2
    assert bench.conv_flops("mb1ic128ih64iw64") == 0  # a batch norm: no FLOP count


def test_predict_bench_photos_come_at_six_sizes_and_a_bare_folder_is_one_line(tmp_path):
    from PIL import Image

    from pix2pix.tools import predict_bench

    for i in range(8):
        Image.new("RGB", (512, 256), (i * 20, 0, 0)).save(tmp_path / f"{i}.jpg")
    predict_bench.make_photos(tmp_path, tmp_path / "photos", count=8)
    sizes = [Image.open(p).size for p in predict_bench.photos_in(tmp_path / "photos")]
    assert sizes[:6] == predict_bench.SIZES and len(sizes) == 8
    with pytest.raises(SystemExit, match="fewer than 6 .jpg photos"):
        predict_bench.photos_in(tmp_path / "photos" / "empty")
