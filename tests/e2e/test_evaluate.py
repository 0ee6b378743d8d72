"""task=eval through the command line on a trained TINY run: images, metrics, gallery, TensorBoard."""

from __future__ import annotations

import csv
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pix2pix.scoring.metrics import image_metrics
from pix2pix.weights.fid_weights import INSTALL, installed_archive
from tests.helpers import TINY_SETUP, run_launch

NUM_VAL = 2  # TINY: dataset.num_val=2


@pytest.fixture(scope="module")
def evaluated(trained_run):
    result = run_launch(["task=eval", f"ckpt={trained_run}", "device=cpu"], cwd=trained_run.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return trained_run, trained_run / "eval" / "val"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_eval_writes_images_and_metrics_into_the_run(evaluated):
    run_dir, out = evaluated
    rows = read_csv(out / "metrics.csv")
    assert [r["image"] for r in rows] == ["1.jpg", "2.jpg"]
    for row in rows:
        stem = Path(row["image"]).stem
        images = {
            k: np.asarray(Image.open(out / "images" / f"{stem}_{k}.png")) for k in ("input", "generated", "target")
        }
        assert all(img.shape == (64, 64, 3) for img in images.values())
        # The figures are those of the saved files.
        again = image_metrics(images["generated"], images["target"])
        for name in ("l1", "psnr", "ssim"):
            assert float(row[name]) == pytest.approx(again[name], abs=1e-5), name
    summary = json.loads((out / "metrics.json").read_text())
    for name in ("l1", "psnr", "ssim"):
        assert summary[name] == pytest.approx(np.mean([float(r[name]) for r in rows]), abs=1e-5)
    assert summary["split"] == "val" and summary["num_images"] == NUM_VAL and summary["mode"] == "paper"
    assert summary["checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt") and summary["epoch"] == 2
    assert 0 < summary["l1"] < 2 and 0 < summary["psnr"] < 60 and -1 < summary["ssim"] < 1
    assert (out / "config.yaml").is_file() and (run_dir / "eval" / ".hydra" / "config.yaml").is_file()
    assert "val: mean L1" in (run_dir / "eval" / "launch.log").read_text()


class GalleryParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.sortable, self.rows = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("img", "a"):
            self.links.append(attrs.get("src") or attrs.get("href"))
        if tag == "th" and "sortable" in (attrs.get("class") or ""):
            self.sortable.append(attrs["data-key"])
        if tag == "tr" and "data-name" in attrs:
            self.rows.append(attrs)


def test_gallery_links_resolve_and_every_metric_sorts(evaluated):
    _, out = evaluated
    page = GalleryParser()
    page.feed((out / "index.html").read_text())
    assert len(page.links) == 2 * 3 * NUM_VAL  # a link around each of the 3 images per row
    for link in page.links:
        assert (out / unquote(link)).is_file(), link
    assert page.sortable == ["name", "l1", "psnr", "ssim"]
    by_name = {r["image"]: r for r in read_csv(out / "metrics.csv")}
    for row in page.rows:
        assert float(row["data-psnr"]) == pytest.approx(float(by_name[row["data-name"]]["psnr"]), rel=1e-5)


def test_eval_means_reach_the_run_tensorboard(evaluated):
    run_dir, out = evaluated
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    summary = json.loads((out / "metrics.json").read_text())
    scored = ("l1", "psnr", "ssim", "fid", "kid") if installed_archive() else ("l1", "psnr", "ssim")
    for name in scored:
        (point,) = events.Scalars(f"eval/val/{name}")
        assert point.step == summary["global_step"] and point.value == pytest.approx(summary[name], rel=1e-6)


@pytest.mark.skipif(installed_archive() is None, reason=f"the FID weights are not installed ({INSTALL})")
def test_eval_scores_fid_and_kid_of_the_saved_images(evaluated):
    """FID and KID of the split (eval.fid=auto: the weights are installed), of the images as saved, with the
    KID subset size; the real images' features are cached beside the data for the next eval."""
    run_dir, out = evaluated
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["fid"] > 0 and summary["kid_subset_size"] == NUM_VAL and np.isfinite(summary["kid"])
    assert f"FID {summary['fid']:.2f}" in (out / "index.html").read_text()
    log = (run_dir / "eval" / "launch.log").read_text()
    assert "FID: real images' features" in log
    assert list((run_dir.parent / "data").rglob(".fid/val-*.npz"))


def test_deterministic_mode_gives_the_same_images_twice(trained_run):
    generated = []
    for _ in range(2):
        result = run_launch(
            ["task=eval", f"ckpt={trained_run}", "device=cpu", "eval.mode=deterministic", "eval.split=train"]
            + ["eval.fid=false"],
            cwd=trained_run.parent,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        out = trained_run / "eval" / "train"
        assert json.loads((out / "metrics.json").read_text())["mode"] == "deterministic"
        generated.append({p.name: p.read_bytes() for p in (out / "images").glob("*_generated.png")})
    assert len(generated[0]) == 4 and generated[0] == generated[1]


def test_eval_without_the_fid_weights_says_once_how_to_get_them_and_scores_the_rest(trained_run, tmp_path):
    missing = tmp_path / "nowhere" / "default_1.pt"
    args = ["task=eval", f"ckpt={trained_run}", "device=cpu", "eval.split=train", f"fid.weights={missing}"]
    result = run_launch(args, cwd=trained_run.parent)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    hints = [line for line in output.splitlines() if "FID and KID skipped" in line]
    assert len(hints) == 1 and str(missing) in hints[0] and INSTALL in hints[0], hints
    summary = json.loads((trained_run / "eval" / "train" / "metrics.json").read_text())
    assert {"l1", "psnr", "ssim"} <= set(summary) and "fid" not in summary and "kid" not in summary

    required = run_launch([*args, "eval.fid=true"], cwd=trained_run.parent)
    output = required.stdout + required.stderr
    assert required.returncode == 2 and "Traceback" not in output, output[-3000:]
    (line,) = [line for line in output.splitlines() if f"eval.fid=true: {missing}: no such file" in line]
    assert INSTALL in line


def test_eval_of_a_loose_checkpoint_needs_the_matching_model(trained_run, tmp_path):
    loose = tmp_path / "g.ckpt"
    loose.write_bytes((trained_run / "checkpoints" / "last.ckpt").read_bytes())
    data = f"paths.data_dir={trained_run.parent / 'data'}"
    ok = run_launch(["task=eval", f"ckpt={loose}", *TINY_SETUP, data, "eval.num_images=1"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    (out,) = (tmp_path / "outputs").glob("*/*/val")  # a loose file has no run folder: a new one
    assert len(read_csv(out / "metrics.csv")) == 1

    bad = run_launch(["task=eval", f"ckpt={loose}", *TINY_SETUP, data, "model.generator.ngf=16"], cwd=tmp_path)
    output = bad.stdout + bad.stderr
    assert bad.returncode == 2, output
    assert f"{loose}: G." in output and "use the model config the checkpoint was trained with" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "args,expected",
    [
        (["task=eval"], "task=eval needs a trained generator: add ckpt=RUN_FOLDER"),
        (["task=eval", "ckpt={tmp}/missing"], "ckpt={tmp}/missing: no such run folder or checkpoint file"),
        (
            ["task=eval", "ckpt={tmp}/cut.ckpt"],
            "{tmp}/cut.ckpt: not a readable MindSpore checkpoint (the file ends inside an entry",
        ),
        (["task=eval", "ckpt={run}", "eval.mode=exact"], "eval.mode=exact: use one of paper, deterministic"),
        (["task=evaluate"], "task=evaluate: no such task; use one of train, eval, predict, export"),
    ],
)
def test_bad_eval_commands_get_one_line(trained_run, tmp_path, args, expected):
    data = (trained_run / "checkpoints" / "last.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    fill = {"tmp": tmp_path, "run": trained_run}
    result = run_launch([a.format(**fill) for a in args] + ["device=cpu"], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert sum(expected.format(**fill) in line for line in output.splitlines()) == 1, output
    assert "Traceback" not in output


def test_files_sharing_a_stem_keep_their_own_images(trained_run, tmp_path):
    """a.jpg and a.png in one split: each gets its own images (a.jpg_*.png, a.png_*.png), none overwritten."""
    run = shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("eval", "predict", "export"))
    split = tmp_path / "pairs" / "val"
    split.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)).save(split / name)
    args = ["task=eval", f"ckpt={run}", "device=cpu", "dataset=folder", f"dataset.root={tmp_path / 'pairs'}"]
    args.append("eval.fid=false")
    result = run_launch(
        [*args, "dataset.load_size=72", "dataset.crop_size=64", "eval.mode=deterministic"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = run / "eval" / "val" / "images"
    targets = {name: np.asarray(Image.open(out / f"{name}_target.png")) for name in ("a.jpg", "a.png", "b")}
    assert not np.array_equal(targets["a.jpg"], targets["a.png"])  # two images, not one written twice
    rows = read_csv(run / "eval" / "val" / "metrics.csv")
    assert [r["image"] for r in rows] == ["a.jpg", "a.png", "b.png"]
