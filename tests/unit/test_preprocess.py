"""dataset.preprocess: each mode's shapes, one random transform for A and B, rectangular crops, the
network's size rules, and what eval and predict do with a run's preprocessing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2pix.config.checks import validate
from pix2pix.data.aligned import AlignedData
from pix2pix.data.preprocess import PREPROCESS_MODES, Preprocess
from pix2pix.errors import Pix2PixError
from pix2pix.infer.translator import prepare_image, restore_image
from tests.helpers import compose_config

# (mode, load (h, w), crop (h, w), multiple, half (w, h)) -> (w, h) trained at
SHAPES = [
    ("resize_and_crop", (36, 36), (32, 32), 32, (50, 30), (32, 32)),
    ("resize_and_crop", (36, 68), (32, 64), 32, (50, 30), (64, 32)),
    ("crop", (36, 36), (16, 24), 8, (50, 30), (24, 16)),
    ("scale_width", (36, 40), (32, 32), 8, (50, 30), (40, 24)),  # 40 x 24 (= 40 * 30 / 50)
    ("scale_width_and_crop", (36, 40), (16, 32), 8, (50, 30), (32, 16)),
    ("scale_shortside_and_crop", (36, 36), (32, 32), 8, (50, 30), (32, 32)),
    ("none", (36, 36), (32, 32), 16, (50, 30), (64, 32)),  # padded to the next multiples of 16
    ("none", (36, 36), (32, 32), 16, (67, 45), (80, 48)),  # odd sizes
]


def image_of(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A structured RGB image (gradients and noise) of (width, height) `size`."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), (xx + yy) % 256], axis=-1)
    return Image.fromarray(np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize(("mode", "load", "crop", "multiple", "half", "expected"), SHAPES)
def test_each_mode_gives_its_shape_and_one_transform_for_a_and_b(mode, load, crop, multiple, half, expected):
    """B is a pixelwise function of A (its colour channels reversed: resampling is per channel, so the
    relation survives any resize exactly): the transform, drawn once, keeps it for every crop and flip."""
    pre = Preprocess(mode, load, crop, multiple)
    a = image_of(half)
    b = Image.fromarray(np.asarray(a)[..., ::-1].copy())
    assert pre.output_size(half) == expected
    flips, positions = set(), set()
    for seed in range(12):
        jitter = pre.draw(np.random.default_rng(seed), half, flip=True)
        flips.add(jitter.flip)
        positions.add((jitter.x, jitter.y))
        arr_a, arr_b = pre.apply(a, jitter), pre.apply(b, jitter)
        assert arr_a.shape == (3, expected[1], expected[0]) == arr_b.shape
        np.testing.assert_array_equal(arr_b, arr_a[::-1])
    assert flips == {True, False}
    if pre.crops and pre.scaled(half, train=True) != expected:
        assert len(positions) > 1  # the crop moves
    det = pre.apply(a, None)
    assert det.shape[0] == 3 and det.shape[1] % multiple == 0 and det.shape[2] % multiple == 0
    np.testing.assert_array_equal(det, pre.apply(a, None))  # deterministic


def test_none_pads_or_resizes_as_dataset_fit_says():
    a = image_of((67, 45))
    padded = Preprocess("none", multiple=16, fit="pad").apply(a, None)
    np.testing.assert_allclose(padded[:, :45, :67], Preprocess("none", multiple=1).apply(a, None))  # image kept
    np.testing.assert_allclose(padded[:, :45, 67], padded[:, :45, 66])  # mirrored, edge pixel repeated
    resized = Preprocess("none", multiple=16, fit="resize")
    assert resized.output_size((67, 45)) == (64, 48)  # the nearest multiples
    assert resized.apply(a, None).shape == (3, 48, 64)
    assert Preprocess("none", multiple=16, fit="pad").content_size((67, 45)) == (67, 45)
    assert resized.content_size((67, 45)) == (64, 48)


def test_the_default_mode_is_the_paper_jitter_unchanged():
    """resize_and_crop with a square: resize to load_size, crop at (x, y) drawn in that order, then the flip;
    validation resizes straight to crop_size, as before dataset.preprocess existed."""
    pre = Preprocess("resize_and_crop", (40, 40), (32, 32))
    img = image_of((50, 30))
    rng, again = np.random.default_rng(3), np.random.default_rng(3)
    jitter = pre.draw(rng, img.size, flip=True)
    x, y = int(again.integers(0, 9)), int(again.integers(0, 9))
    flip = bool(again.random() < 0.5)
    expected = img.resize((40, 40), Image.BICUBIC).crop((x, y, x + 32, y + 32))
    if flip:
        expected = expected.transpose(Image.FLIP_LEFT_RIGHT)
    assert (jitter.x, jitter.y, jitter.flip) == (x, y, flip)
    np.testing.assert_array_equal(
        pre.apply(img, jitter), np.asarray(expected, np.float32).transpose(2, 0, 1) / 127.5 - 1
    )
    val = np.asarray(img.resize((32, 32), Image.BICUBIC), np.float32).transpose(2, 0, 1) / 127.5 - 1
    np.testing.assert_array_equal(pre.apply(img, None), val)


def write_pairs(folder: Path, sizes: list[tuple[int, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        a = image_of((w, h), seed=i)
        Image.fromarray(np.concatenate([np.asarray(a), 255 - np.asarray(a)], axis=1)).save(folder / f"{i}.png")


def test_mixed_sizes_train_one_at_a_time_and_validate_by_shape(tmp_path, caplog):
    write_pairs(tmp_path / "train", [(40, 24), (40, 24), (24, 40)])
    write_pairs(tmp_path / "val", [(40, 24), (24, 40), (20, 20)])
    data = AlignedData(name="mixed", root=str(tmp_path), preprocess="none", batch_size=1)
    data.multiple = 8
    with caplog.at_level(logging.INFO):
        data.prepare()
    assert "2 x 40x24 -> 40x24" in caplog.text and "1 x 24x40 -> 24x40" in caplog.text
    assert "2 training shapes: the train step compiles once for each" in caplog.text
    shapes = [a.shape for a, _ in data.val_batches()]
    assert shapes == [(1, 3, 24, 40), (1, 3, 40, 24), (1, 3, 24, 24)]
    batched = AlignedData(name="mixed", root=str(tmp_path), preprocess="none", batch_size=2)
    with pytest.raises(Pix2PixError, match="2 different shapes, and a batch needs one: use dataset.batch_size=1"):
        batched.prepare()


def test_crop_mode_refuses_halves_smaller_than_the_crop(tmp_path):
    write_pairs(tmp_path / "train", [(40, 24)])
    write_pairs(tmp_path / "val", [(40, 24)])
    data = AlignedData(name="small", root=str(tmp_path), preprocess="crop", crop_size=32)
    with pytest.raises(Pix2PixError, match=r"0.png: halves of 40x24 .* smaller than dataset.crop_size 32x32"):
        data.prepare()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["dataset.load_size=[286,572]", "dataset.crop_size=[256,300]"],
            r"multiple of 256 \(it is \[256,300\]\); use dataset.crop_size=256 ",
        ),
        (
            ["model/generator=unet_512", "dataset.load_size=[600,1200]", "dataset.crop_size=[512,1000]"],
            r"num_downs=9 .* multiple of 512 .* use dataset.crop_size=\[512,1024\]",
        ),
        (["dataset.crop_size=[256,512]"], r"crop_size=\[256,512\] is larger than dataset.load_size=286; .*\[286,572\]"),
        (["dataset.crop_size=[256]"], r"dataset.crop_size=\[256\]: use a positive integer .* or \[height, width\]"),
        (["dataset.crop_size=abc"], r"dataset.crop_size=abc: use a positive integer"),
        (["dataset.preprocess=zoom"], r"dataset.preprocess=zoom: use one of resize_and_crop, crop, scale_width"),
        (["dataset.preprocess=none", "dataset.fit=stretch"], r"dataset.fit=stretch: use one of pad, resize"),
        (
            ["dataset.preprocess=scale_width_and_crop", "dataset.load_size=200", "dataset.crop_size=[256,256]"],
            r"wider than dataset.load_size=200, .* set dataset.load_size >= 256",
        ),
    ],
)
def test_size_errors_name_the_key_and_the_nearest_valid_size(tmp_path, overrides, message):
    with pytest.raises(Pix2PixError, match=message):
        validate(compose_config(overrides, tmp_path))


def test_rectangular_and_512_configs_compose(tmp_path):
    cfg = compose_config(["dataset.load_size=[286,572]", "dataset.crop_size=[256,512]"], tmp_path)
    validate(cfg)
    cfg = compose_config(["model/generator=unet_512", "dataset.load_size=572", "dataset.crop_size=512"], tmp_path)
    validate(cfg)
    assert cfg.model.generator.num_downs == 9
    # crop and none need no load_size room; the crop just has to fit the network
    validate(compose_config(["dataset.preprocess=crop", "dataset.crop_size=512", "model/generator=unet_512"], tmp_path))


def test_predict_resizes_to_the_scale_the_run_trained_at():
    img = image_of((100, 60))
    for pre, shape in (
        (Preprocess("resize_and_crop", (36, 68), (32, 64)), (32, 64)),  # the rectangular crop
        (Preprocess("scale_width", (40, 40), (32, 32), 8), (24, 40)),  # width 40, height 24 (padded to 8)
        (Preprocess("none", multiple=16), (64, 112)),  # its own size, padded
    ):
        prepared = prepare_image(img, 3, pre.crop, pre.multiple, "resize", pre)
        assert prepared.array.shape[1:] == shape, pre.mode
        assert restore_image(prepared.array, prepared).size == img.size


def test_every_mode_is_documented_in_the_readme():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for mode, line in PREPROCESS_MODES.items():
        assert f"`{mode}`" in readme and line in readme, mode
