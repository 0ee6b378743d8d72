"""task=predict and the Python API on a trained TINY run: any size and channel count in, the original
size out."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pix2pix.api import load_generator
from pix2pix.errors import Pix2PixError
from tests.helpers import odd_images, run_launch


def write_inputs(folder):
    (folder / "nested").mkdir(parents=True)
    images = odd_images()
    images["rgb_300x200"].save(folder / "rgb_300x200.jpg")
    images["gray_91x57"].save(folder / "gray_91x57.png")
    images["rgba_64x33"].save(folder / "nested" / "rgba_64x33.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return images


def test_predict_translates_a_folder_to_the_original_sizes(trained_run, tmp_path):
    images = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    args = ["task=predict", f"ckpt={trained_run}", f"predict.input={tmp_path / 'in'}", f"predict.output={out}"]
    result = run_launch([*args, "device=cpu", "predict.mode=deterministic"], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "skipped" in output and "broken.jpg" in output and "wrote 3 images" in output
    for rel, name in (
        ("rgb_300x200.png", "rgb_300x200"),
        ("gray_91x57.png", "gray_91x57"),
        ("nested/rgba_64x33.png", "rgba_64x33"),
    ):
        with Image.open(out / rel) as result_img:
            assert result_img.size == images[name].size, rel
            assert result_img.mode == ("RGBA" if "rgba" in name else "RGB")
    assert (trained_run / "predict" / "launch.log").is_file()

    # The Python API gives the same pixels as the command line.
    translate = load_generator(trained_run, mode="deterministic", device="cpu")
    with Image.open(tmp_path / "in" / "rgb_300x200.jpg") as img:
        api_image = translate(img)
        api_array = translate(np.asarray(img))
    with Image.open(out / "rgb_300x200.png") as cli_image:
        np.testing.assert_array_equal(np.asarray(api_image), np.asarray(cli_image))
    np.testing.assert_array_equal(api_array, np.asarray(api_image))
    assert api_array.shape == (200, 300, 3) and api_array.dtype == np.uint8
    with pytest.raises(ValueError, match="uint8 HxW or HxWxC"):
        translate(np.zeros((8, 8, 3), np.float32))


def test_predict_without_input_is_one_line(trained_run, tmp_path):
    result = run_launch(["task=predict", f"ckpt={trained_run}", "device=cpu"], cwd=tmp_path)
    assert result.returncode == 2
    assert "task=predict needs predict.input=IMAGE_OR_FOLDER" in result.stdout + result.stderr


def test_a_batch_in_deterministic_mode_runs_at_once_with_each_images_own_output(trained_run):
    """Translator.generate: deterministic mode runs the whole batch at once (faster per image on the CPU);
    each image still gets what it gets alone."""
    batch = np.random.default_rng(3).uniform(-1, 1, (3, 3, 64, 64)).astype(np.float32)
    deterministic = load_generator(trained_run, mode="deterministic", device="cpu")
    together = deterministic.generate(batch)
    alone = np.concatenate([deterministic.generate(batch[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


def test_the_bare_generator_of_a_run_is_the_translators(trained_run):
    """pix2pix.api.build_generator (the nn.Cell from a run's config) computes what load_generator's does."""
    from pix2pix.api import build_generator, open_run
    from pix2pix.infer.generate import generate

    batch = np.random.default_rng(4).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    translator = load_generator(trained_run, mode="deterministic", device="cpu")
    run = open_run(trained_run)
    generator, meta = build_generator(run.cfg, run.checkpoint)
    assert meta["epoch"] == 2
    np.testing.assert_allclose(generate(generator, batch, "deterministic", 2), translator.generate(batch), atol=1e-6)
    with pytest.raises(Pix2PixError, match="fit=crop: use one of resize, pad"):
        load_generator(trained_run, fit="crop", device="cpu")
