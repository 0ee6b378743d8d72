"""Files from a user's disk, not ours, through the command line: what training, inspect and predict do with
the hostile corpus (tests/helpers.py); data.max_pixels; outputs that must never replace inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pix2pix.data.images import UnreadableImage, read_image
from tests.helpers import KINDS, _save, only, pair_pixels, run_launch


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


def test_data_max_pixels_is_a_cap_below_pillows_own(tmp_path):
    path = _save(Image.new("RGB", (64, 32)), tmp_path / "pair.png")
    assert read_image(path, max_pixels=2048).image.size == (64, 32)
    with pytest.raises(UnreadableImage, match=r"64x32 is 2,048 pixels, over data.max_pixels=2,047"):
        read_image(path, max_pixels=2047)
    result = run_launch(["task=inspect", "data.max_pixels=200000000"], cwd=tmp_path)
    assert result.returncode == 2 and "data.max_pixels=200000000: use 1 to 178956970" in result.stderr


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
