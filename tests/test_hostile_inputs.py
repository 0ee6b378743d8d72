"""Files from a user's disk, not ours: a corpus of hostile and odd images that the tests generate, and what
training, inspect and predict do with each; the conversions; outputs that must never replace inputs."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2pix.data.aligned import AlignedData, NotAPair
from pix2pix.data.combine import combine_folders
from pix2pix.data.images import UnreadableImage, read_image
from pix2pix.errors import Pix2PixError
from pix2pix.infer.translator import output_paths
from pix2pix.track.files import result_names
from tests.conftest import run_launch

ROOT_CAN_READ_ANYTHING = os.geteuid() == 0


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int, colour: int, rows: bytes) -> bytes:
    """A PNG written by hand (Pillow writes no 16-bit RGB, and a bomb's pixels need not exist)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def pair_pixels(seed: int, height: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, 2 * height, 3), dtype=np.uint8)


# Every kind of file the issue lists (as aligned A|B pairs where it is an image at all) and what it is:
# good (used as is), converted (used, with a warning), not a pair, or unreadable.
KINDS = {
    "good.png": "good",
    "good2.jpg": "good",
    "zero_bytes.jpg": "unreadable",
    "truncated.jpg": "unreadable",
    "one_pixel.png": "not a pair",
    "one_pixel_wide_pair.png": "good",  # halves of 1 x 1: a pair, scaled up
    "cmyk.jpg": "converted",
    "gray16.png": "converted",
    "rgb16.png": "good",  # Pillow itself reads 16-bit RGB as 8-bit RGB
    "palette_alpha.png": "converted",
    "animated.gif": "converted",
    "exif_rotated.jpg": "good",
    "bomb.png": "unreadable",
    "text.jpg": "unreadable",
    "unreadable.png": "good" if ROOT_CAN_READ_ANYTHING else "unreadable",
    "loop.jpg": "unreadable",
    "fifo.jpg": "unreadable",  # opening it would wait for a writer for ever
    "postscript.png": "unreadable",  # Pillow would read it as EPS, through Ghostscript where installed
}


def write_corpus(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pair_pixels(1)).save(folder / "good.png")
    good_jpeg = folder / "good2.jpg"
    Image.fromarray(pair_pixels(2)).save(good_jpeg)
    (folder / "zero_bytes.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good_jpeg.read_bytes()[:300])
    Image.new("RGB", (1, 1), "red").save(folder / "one_pixel.png")
    Image.new("RGB", (2, 1), "blue").save(folder / "one_pixel_wide_pair.png")
    Image.fromarray(pair_pixels(3)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(GRAY16).save(folder / "gray16.png")
    rgb16 = np.full((32, 64, 3), 0xC000, ">u2")  # 49152 of 65535: 192 in 8 bits
    (folder / "rgb16.png").write_bytes(png_bytes(64, 32, 16, 2, b"".join(b"\x00" + row.tobytes() for row in rgb16)))
    palette = Image.fromarray(np.random.default_rng(4).integers(0, 3, (32, 64), dtype=np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette.info["transparency"] = 0
    palette.save(folder / "palette_alpha.png")
    frames = [Image.fromarray(pair_pixels(10 + i)) for i in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    sideways = Image.fromarray(pair_pixels(5)).transpose(Image.Transpose.ROTATE_90)  # stored 32 x 64
    exif = sideways.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view": upright it is 64 x 32, an A|B pair
    sideways.save(folder / "exif_rotated.jpg", exif=exif)
    (folder / "bomb.png").write_bytes(png_bytes(20000, 10000, 8, 0, b"\x00" * 20001))  # 200 M pixels declared
    (folder / "text.jpg").write_text("this is a text file, not a JPEG\n")
    Image.fromarray(pair_pixels(6)).save(folder / "unreadable.png")
    (folder / "unreadable.png").chmod(0)
    (folder / "loop.jpg").symlink_to("loop.jpg")
    os.mkfifo(folder / "fifo.jpg")
    (folder / "postscript.png").write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 32\nshowpage\n")
    assert sorted(p.name for p in folder.iterdir()) == sorted(KINDS)


GRAY16 = (np.arange(32 * 64).reshape(32, 64) * 32).astype(np.uint16)  # 0 .. 65504


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "all"
    write_corpus(folder)
    return folder


def only(corpus: Path, name: str, root: Path) -> AlignedData:
    """A dataset whose train split is one corpus file (a link to it) beside a good pair; val a good pair."""
    for split, names in (("train", sorted({"good.png", name})), ("val", ["good.png"])):
        (root / split).mkdir(parents=True, exist_ok=True)
        for n in names:
            (root / split / n).symlink_to(corpus / n)  # the loop stays a loop, the unreadable file unreadable
    return AlignedData(name="folder", root=str(root), load_size=36, crop_size=32)


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


def test_the_bomb_stops_a_training_run_with_one_line(corpus, tmp_path):
    only(corpus, "bomb.png", tmp_path / "data")
    result = run_launch(
        ["dataset=folder", f"dataset.root={tmp_path / 'data'}", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
    (line,) = [line for line in output.splitlines() if "bomb.png" in line]
    assert "more than 178,956,970 pixels" in line and "data.max_pixels=89,478,485" in line


def test_inspect_reports_each_file(corpus, tmp_path):
    kinds, root = KINDS, tmp_path / "data"
    (root / "train").mkdir(parents=True)
    for name in kinds:
        (root / "train" / name).symlink_to(corpus / name)
    result = run_launch(
        ["task=inspect", "dataset=folder", f"dataset.root={root}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Traceback" not in output, output[-3000:]
    good = [n for n, k in kinds.items() if k in ("good", "converted")]
    assert f"train: {len(good)} pairs" in output
    for name, kind in kinds.items():
        (line,) = [line for line in output.splitlines() if f": {name}: " in line] or [""]
        if kind == "unreadable":
            assert "corrupt:" in line, name
        elif kind == "not a pair":
            assert "odd:" in line and "not an aligned A|B pair" in line, name
        elif kind == "converted":
            assert "odd:" in line and "converted to RGB" in line, name
    assert "bomb.png: more than 178,956,970 pixels" in output
    assert "animated (3 frames): the first frame is used" in output


def test_predict_translates_what_it_can_and_skips_the_rest_with_a_warning(corpus, trained_run, tmp_path):
    folder, kinds = corpus, KINDS
    out = tmp_path / "out"
    args = ["task=predict", f"ckpt={trained_run}", f"predict.input={folder}", f"predict.output={out}", "device=cpu"]
    result = run_launch([*args, "predict.mode=deterministic"], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Traceback" not in output, output[-3000:]
    readable = [n for n, k in kinds.items() if k != "unreadable"]
    assert f"wrote {len(readable)} images" in output
    assert f"{len(kinds) - len(readable)} files skipped" in output
    for name, kind in kinds.items():
        result_file = out / f"{Path(name).stem}.png"
        if kind == "unreadable":
            assert not result_file.exists() and f"skipped {folder / name}" in output, name
            continue
        with Image.open(result_file) as img:
            upright = read_image(folder / name).image
            assert img.size == upright.size, name
            assert img.mode == ("RGBA" if upright.mode in ("RGBA", "LA") else "RGB"), name
    with Image.open(out / "exif_rotated.png") as img:
        assert img.size == (64, 32)  # upright


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


def _save(img: Image.Image, path: Path) -> Path:
    img.save(path)
    return path


def test_data_max_pixels_is_a_cap_below_pillows_own(tmp_path):
    path = _save(Image.new("RGB", (64, 32)), tmp_path / "pair.png")
    assert read_image(path, max_pixels=2048).image.size == (64, 32)
    with pytest.raises(UnreadableImage, match=r"64x32 is 2,048 pixels, over data.max_pixels=2,047"):
        read_image(path, max_pixels=2047)
    result = run_launch(["task=inspect", "data.max_pixels=200000000"], cwd=tmp_path)
    assert result.returncode == 2 and "data.max_pixels=200000000: use 1 to 178956970" in result.stderr


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


def test_predict_cli_refuses_to_replace_an_input_and_writes_beside_it_otherwise(trained_run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    _save(Image.fromarray(pair_pixels(7)), photos / "cat.png")
    before = (photos / "cat.png").read_bytes()
    args = ["task=predict", f"ckpt={trained_run}", "device=cpu", f"predict.output={photos}"]
    refused = run_launch([*args, f"predict.input={photos / 'cat.png'}"], cwd=tmp_path)
    assert refused.returncode == 2 and "would replace that input" in refused.stdout + refused.stderr
    assert (photos / "cat.png").read_bytes() == before
    (photos / "cat.png").rename(photos / "a.png")
    _save(Image.fromarray(pair_pixels(8)), photos / "a.jpg")
    done = run_launch([*args, f"predict.input={photos}"], cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert sorted(p.name for p in photos.iterdir()) == ["a.jpg", "a.jpg.png", "a.png", "a.png.png"]
    assert (photos / "a.png").read_bytes() == before


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
