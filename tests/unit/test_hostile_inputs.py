"""Files from a user's disk, not ours: what the data pipeline does with each file of the hostile corpus
(tests/helpers.py); the conversions; outputs that must never replace inputs; combine's refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2pix.data.aligned import NotAPair
from pix2pix.data.combine import combine_folders
from pix2pix.data.images import UnreadableImage, read_image
from pix2pix.errors import Pix2PixError
from pix2pix.infer.translator import output_paths
from pix2pix.track.files import result_names
from tests.helpers import GRAY16, KINDS, ROOT_CAN_READ_ANYTHING, _save, only


@pytest.mark.parametrize("name", list(KINDS))
def test_what_training_does_with_each_file(corpus, tmp_path, caplog, name):
    kind = KINDS[name]
    if name == "unreadable.png" and ROOT_CAN_READ_ANYTHING:
        pytest.skip("root reads a mode-000 file; CI runs the suite as an unprivileged account, where it is checked")
    data = only(corpus, name, tmp_path / "data")
    if kind in ("unreadable", "not a pair"):
        expected = UnreadableImage if kind == "unreadable" else NotAPair
        with pytest.raises(expected) as err:
            data.prepare()  # what training does before its first step: one line naming the file
        assert str(err.value).startswith(str(tmp_path / "data" / "train" / name)) and "\n" not in str(err.value)
        return
    with caplog.at_level(logging.WARNING):
        data.prepare()
    index = [p.name for p in data.files("train")].index(name)
    a, b = data.source(data.files("train"), flip=False).item(index)
    assert a.shape == b.shape == (3, 32, 32) and -1 <= a.min() and a.max() <= 1
    if kind == "converted":
        assert f"{name}: " in caplog.text and "converted to RGB" in caplog.text


def test_high_bit_depths_are_scaled_not_clipped(corpus):
    gray = np.asarray(read_image(corpus / "gray16.png").image)
    np.testing.assert_array_equal(gray, np.rint(GRAY16 * (255 / 65535)).astype(np.uint8))
    assert len(np.unique(gray)) == 256  # the whole range, not everything above 255 clipped to white
    assert np.asarray(read_image(corpus / "rgb16.png").image).max() == 0xC0


def test_conversions(corpus):
    folder = corpus
    modes = {name: read_image(folder / name) for name in ("cmyk.jpg", "palette_alpha.png", "animated.gif")}
    assert [d.image.mode for d in modes.values()] == ["RGB", "RGBA", "RGB"]
    assert modes["animated.gif"].frames == 3 and modes["cmyk.jpg"].mode == "CMYK"
    alpha = np.asarray(modes["palette_alpha.png"].image)[..., 3]
    indices = np.asarray(Image.open(folder / "palette_alpha.png"))
    np.testing.assert_array_equal(alpha == 0, indices == 0)  # transparency kept where the palette said so
    la = read_image(_save(Image.new("LA", (64, 32), (100, 50)), folder.parent / "la.png")).image
    assert la.mode == "LA" and la.getpixel((0, 0)) == (100, 50)


def test_result_names_keep_the_extension_only_where_stems_collide():
    files = [Path(p) for p in ("a.jpg", "a.png", "b.png", "sub/a.jpg", "c.png", "C.jpg", "a.jpg.png", "x.png")]
    assert result_names(files) == ["a.jpg", "a.png", "b", "a", "c.png", "C.jpg", "a.jpg~2", "x"]


def test_predict_never_writes_over_an_input(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("cat.png", "a.jpg", "a.png"):
        _save(Image.new("RGB", (8, 8)), photos / name)
    files = sorted(photos.iterdir())
    with pytest.raises(Pix2PixError, match=r"the result for .*cat.png would replace that input"):
        output_paths(files, photos, photos)
    (photos / "cat.png").rename(photos / "cat.jpg")
    files = sorted(photos.iterdir())
    assert [p.name for p in output_paths(files, photos, photos)] == ["a.jpg.png", "a.png.png", "cat.png"]
    view = tmp_path / "view"
    view.symlink_to(photos)  # the output folder reached through a link is still the input folder
    with pytest.raises(Pix2PixError, match=r"the result for .*a.png would replace that input"):
        output_paths([photos / "a.png"], photos / "a.png", view)


def halves(folder: Path, names: dict[str, tuple[int, int]]) -> Path:
    for name, size in names.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, "gray").save(path)
    return folder


@pytest.mark.parametrize("where", ["equal to A", "inside B", "a non-empty folder"])
def test_combine_refuses_an_output_that_could_touch_the_inputs(tmp_path, where):
    a = halves(tmp_path / "A", {"train/1.png": (8, 8)})
    b = halves(tmp_path / "B", {"train/1.png": (8, 8)})
    output = {
        "equal to A": a,
        "inside B": b / "train",
        "a non-empty folder": halves(tmp_path / "AB", {"x.png": (2, 2)}),
    }
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(Pix2PixError, match="combine.output="):
        combine_folders(a, b, output[where])
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot


def test_combine_with_a_bad_file_half_way_leaves_no_output(tmp_path):
    names = {f"train/{i}.png": (8, 8) for i in range(5)}
    a, b = halves(tmp_path / "A", names), halves(tmp_path / "B", names)
    (b / "train" / "3.png").write_bytes((b / "train" / "3.png").read_bytes()[:40])  # truncated
    with pytest.raises(UnreadableImage, match="3.png: corrupt, truncated or not an image"):
        combine_folders(a, b, tmp_path / "AB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A", "B"]  # no output, no temporary folder
    (b / "train" / "3.png").unlink()
    halves(b, {"train/3.png": (8, 8), "train/1.jpg": (8, 8)})
    halves(a, {"train/1.jpg": (8, 8)})
    assert combine_folders(a, b, tmp_path / "AB") == 6
    assert sorted(p.name for p in (tmp_path / "AB" / "train").iterdir()) == [
        "0.jpg",
        "1.jpg.jpg",
        "1.png.jpg",
        "2.jpg",
        "3.jpg",
        "4.jpg",
    ]
