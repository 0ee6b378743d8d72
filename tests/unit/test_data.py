"""Aligned data: the synthetic set, joint jitter, the pipeline, and bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2pix.data.aligned import AlignedData, split_pair
from pix2pix.data.synthetic import SyntheticData, generate
from pix2pix.errors import Pix2PixError


def write_pairs(folder: Path, count: int, size: int = 32, mode: str = "RGB") -> list[Path]:
    """Pairs whose A half is the constant i*10 and B half is 255 - i*10, so items are recognisable."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        a = np.full((size, size, 3), i * 10, np.uint8)
        b = np.full((size, size, 3), 255 - i * 10, np.uint8)
        img = Image.fromarray(np.concatenate([a, b], axis=1))
        path = folder / f"{i}.png"
        img.convert(mode).save(path)
        paths.append(path)
    return paths


def make_data(root: Path, **kwargs) -> AlignedData:
    settings = dict(name="test", root=str(root), load_size=36, crop_size=32, val_split="val")
    settings.update(kwargs)
    return AlignedData(**settings)


def test_synthetic_is_deterministic_and_cached(tmp_path):
    generate(tmp_path / "a", 64, 3, 1, seed=5)
    generate(tmp_path / "b", 64, 3, 1, seed=5)
    generate(tmp_path / "c", 64, 3, 1, seed=6)
    first = (tmp_path / "a/train/1.jpg").read_bytes()
    assert first == (tmp_path / "b/train/1.jpg").read_bytes()
    assert first != (tmp_path / "c/train/1.jpg").read_bytes()
    with Image.open(tmp_path / "a/train/1.jpg") as img:
        assert img.format == "JPEG" and img.size == (128, 64)
    data = SyntheticData(root=str(tmp_path / "cache"), image_size=64, num_train=3, num_val=1, name="synthetic")
    data.prepare()
    stamp = (data.root / "train/1.jpg").stat().st_mtime_ns
    SyntheticData(root=str(tmp_path / "cache"), image_size=64, num_train=3, num_val=1, name="synthetic").prepare()
    assert (data.root / "train/1.jpg").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert not list((tmp_path / "cache").glob("*partial*"))


def test_synthetic_pairs_are_structured_not_noise(tmp_path):
    generate(tmp_path / "s", 64, 2, 1, seed=0)
    with Image.open(tmp_path / "s/train/1.jpg") as img:
        a, b = split_pair(img.convert("RGB"), "AtoB")
    labels = np.asarray(a).reshape(-1, 3) // 32
    _, counts = np.unique(labels, axis=0, return_counts=True)
    assert np.sort(counts)[::-1][:7].sum() > 0.75 * len(labels)  # a few flat label colours (JPEG edges aside)
    render = np.asarray(b, dtype=np.float32)
    assert np.abs(np.diff(render, axis=1)).mean() < 20  # smooth, unlike noise


def test_direction_picks_the_half(tmp_path):
    write_pairs(tmp_path / "train", 2)
    write_pairs(tmp_path / "val", 1)
    a, b = make_data(tmp_path, direction="AtoB").val_arrays()
    assert a.mean() == pytest.approx(-1.0) and b.mean() == pytest.approx(1.0)
    a, b = make_data(tmp_path, direction="BtoA").val_arrays()
    assert a.mean() == pytest.approx(1.0) and b.mean() == pytest.approx(-1.0)


def test_pipeline_batches_and_reshuffles_every_epoch(tmp_path):
    write_pairs(tmp_path / "train", 8)
    write_pairs(tmp_path / "val", 1)
    data = make_data(tmp_path, batch_size=2, flip=False)
    assert data.steps_per_epoch() == 4  # from the files, never hand-set
    batches = list(data.train_dataset(1, 3).create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert len(batches) == 3 * 4
    orders = []
    for epoch in range(3):
        seen = []
        for real_A, real_B in batches[4 * epoch : 4 * epoch + 4]:
            assert real_A.shape == (2, 3, 32, 32) and real_B.shape == (2, 3, 32, 32)
            seen += [round((float(x.mean()) + 1) * 127.5 / 10) for x in real_A]
        orders.append(seen)
    assert all(sorted(order) == list(range(8)) for order in orders)
    assert len({tuple(order) for order in orders}) > 1
    # A stream that starts at epoch 2, step 3 reads what the whole stream read there, jitter included.
    resumed = list(data.train_dataset(2, 3, skip_steps=3).create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert len(resumed) == 4 + 1
    for (a, b), (a0, b0) in zip(resumed, batches[7:]):
        np.testing.assert_array_equal(a, a0)
        np.testing.assert_array_equal(b, b0)


def test_missing_folder_says_where_it_looked(tmp_path):
    with pytest.raises(Pix2PixError, match=f"no folder {tmp_path / 'nowhere' / 'train'}"):
        make_data(tmp_path / "nowhere").prepare()


def test_empty_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(Pix2PixError, match="no images"):
        make_data(tmp_path).prepare()


def test_truncated_jpeg_is_named(tmp_path):
    write_pairs(tmp_path / "val", 1)
    write_pairs(tmp_path / "train", 2)
    good = tmp_path / "train" / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "train" / "cut.jpg"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(Pix2PixError, match=f"{bad}: corrupt, truncated or not an image"):
        make_data(tmp_path).prepare()


def test_not_a_pair_is_named(tmp_path):
    write_pairs(tmp_path / "val", 1)
    write_pairs(tmp_path / "train", 1)
    Image.new("RGB", (50, 50)).save(tmp_path / "train" / "square.png")
    with pytest.raises(Pix2PixError, match=r"square.png: 50x50 is not an aligned A\|B pair"):
        make_data(tmp_path).prepare()


def test_non_square_halves_are_resized_and_said_once(tmp_path, caplog):
    """maps-like files of any size: each half goes to load_size x load_size; the log counts the sizes found."""
    write_pairs(tmp_path / "val", 1)
    write_pairs(tmp_path / "train", 1)
    for i in range(3):
        Image.new("RGB", (96, 32), (40 * i, 0, 0)).save(tmp_path / "train" / f"wide{i}.png")
    data = make_data(tmp_path)
    with caplog.at_level(logging.INFO):
        data.prepare()
    assert "3 x 48x32 -> 32x32" in caplog.text and "1 x 32x32 -> 32x32" in caplog.text
    assert "dataset.preprocess=resize_and_crop: resize to load_size" in caplog.text
    a, b = next(data.train_dataset().create_tuple_iterator(num_epochs=1))
    assert a.shape == b.shape


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grayscale_and_rgba_are_converted_with_a_warning(tmp_path, caplog, mode):
    write_pairs(tmp_path / "val", 1, mode=mode)
    write_pairs(tmp_path / "train", 2, mode=mode)
    data = make_data(tmp_path)
    with caplog.at_level(logging.WARNING):
        data.prepare()
    assert f"{mode} image converted to RGB" in caplog.text
    a, _ = data.val_arrays()
    assert a.shape == (1, 3, 32, 32)


def test_bad_settings(tmp_path):
    with pytest.raises(Pix2PixError, match="dataset.crop_size=300 is larger"):
        make_data(tmp_path, load_size=286, crop_size=300)
    with pytest.raises(Pix2PixError, match="dataset.direction='AB'"):
        make_data(tmp_path, direction="AB")
    write_pairs(tmp_path / "train", 1)
    write_pairs(tmp_path / "val", 1)
    with pytest.raises(Pix2PixError, match="fewer than dataset.batch_size=4"):
        make_data(tmp_path, batch_size=4).prepare()


def test_a_dataset_generated_twice_at_once_keeps_the_first(tmp_path):
    """Two sweep jobs may generate the same synthetic set in parallel: the later rename must not fail."""
    folder = tmp_path / "synthetic" / "spec"
    generate(folder, image_size=32, num_train=2, num_val=1, seed=0)
    before = sorted(p.name for p in folder.rglob("*.jpg"))
    generate(folder, image_size=32, num_train=2, num_val=1, seed=0)  # as if it lost the race
    assert sorted(p.name for p in folder.rglob("*.jpg")) == before
    assert [p.name for p in folder.parent.iterdir()] == ["spec"]  # no partial folder left
