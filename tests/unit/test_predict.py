"""The image fitting behind task=predict and the Python API's Translator: any size and channel count in,
the original size out; a folder streams in flat memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from pix2pix.api import Translator
from pix2pix.infer.translator import image_files, output_paths, prepare_image, restore_image, translate_files
from tests.helpers import odd_images


@pytest.mark.parametrize("fit", ["resize", "pad"])
@pytest.mark.parametrize("name", list(odd_images()))
def test_any_image_is_fitted_to_the_network_and_back(name, fit):
    img = odd_images()[name]
    prepared = prepare_image(img, input_nc=3, crop_size=64, multiple=32, fit=fit)
    c, h, w = prepared.array.shape
    assert c == 3 and h % 32 == 0 and w % 32 == 0
    assert (h, w) == (64, 64) if fit == "resize" else (h >= img.height and w >= img.width)
    restored = restore_image(prepared.array, prepared)  # an identity "network"
    assert restored.size == img.size
    assert restored.mode == ("RGBA" if name in ("rgba_64x33", "palette_70x40") else "RGB")
    if fit == "pad":  # nothing resampled: the pixels come back exactly
        np.testing.assert_array_equal(np.asarray(restored.convert("RGB")), np.asarray(img.convert("RGB")))
    if restored.mode == "RGBA":
        np.testing.assert_array_equal(np.asarray(restored)[..., 3], np.asarray(img.convert("RGBA"))[..., 3])


def test_a_folder_streams_in_flat_memory(tmp_path):
    """Peak Python-side memory for 60 images is that of 10: nothing accumulates per image."""
    from pix2pix.models.generator import UnetGenerator

    translator = Translator(UnetGenerator(num_downs=5, ngf=4), input_nc=3, crop_size=32, mode="deterministic")
    rng = np.random.default_rng(0)
    src = tmp_path / "many"
    src.mkdir()
    for i in range(60):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(src / f"{i}.png")
    files = image_files(src)
    assert [f.name for f in files[:3]] == ["0.png", "1.png", "2.png"]
    translate_files(files[:2], output_paths(files[:2], src, tmp_path / "warm"), translator.translate_image)  # compile
    peaks = []
    for n in (10, 60):
        outputs = output_paths(files[:n], src, tmp_path / f"out{n}")
        tracemalloc.start()
        written, problems = translate_files(files[:n], outputs, translator.translate_image)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert (written, problems) == (n, [])
    assert peaks[1] < 1.5 * peaks[0], peaks
