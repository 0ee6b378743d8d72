"""task=eval: translate a split with a trained generator and score every image.

Writes into `<output>/<split>/`: images/ (input, generated, target PNGs), metrics.csv (per image),
metrics.json (means, FID and KID of the split, checkpoint), index.html (the gallery) and config.yaml
(the effective config); the figures also go to the run's TensorBoard. FID and KID compare the saved
8-bit generated images with the saved targets, read back from their PNGs (`python -m pix2pix.tools.fid`
on folders of those two kinds of files gives the same figures).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from pix2pix.data.aligned import AlignedData, open_pair, split_pair
from pix2pix.data.images import read_image, rgb
from pix2pix.infer.generate import Inference
from pix2pix.infer.restore import start_generator
from pix2pix.runs import TrainedRun
from pix2pix.scoring.gallery import write_gallery
from pix2pix.scoring.metrics import image_metrics
from pix2pix.tasks.common import build_dataset, fid_features, split_fid_scorer, trained_run
from pix2pix.track.files import result_names, write_text
from pix2pix.track.samples import save_png, to_uint8
from pix2pix.track.tensorboard import RunWriter

log = logging.getLogger(__name__)

METRICS = ("l1", "psnr", "ssim")


def metrics_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", *METRICS])
    for row in rows:
        writer.writerow([row["name"], *(f"{row[m]:.6f}" for m in METRICS)])
    return out.getvalue()


def run(cfg: DictConfig) -> float:
    """task=eval; the mean L1, what a sweep over checkpoints or settings optimises."""
    return evaluate(trained_run(cfg))["l1"]


def score_split(
    generator, data: AlignedData, files: list[Path], mode: str, out: Path, progress_bar: bool
) -> list[dict]:
    """Translate each pair's input, save input | generated | target as PNGs under `out`/images, and score
    the generated image against the target; one row per file."""
    rows, preprocess, generate = [], data.preprocess, Inference(generator, mode)
    names = result_names([Path(file.name) for file in files])  # a.jpg and a.png: their own result names
    bar = tqdm(zip(files, names), total=len(files), desc=f"eval {out.name}", disable=not progress_bar, leave=False)
    for file, name in bar:
        a, b = split_pair(open_pair(file, max_pixels=data.max_pixels), data.direction)
        real_A, real_B = preprocess.apply(a, None), preprocess.apply(b, None)
        fake_B = generate(real_A[None])[0]
        width, height = preprocess.content_size(a.size)  # padding (dataset.fit=pad) is not scored
        stacked = np.stack([real_A, fake_B, real_B])[:, :, :height, :width]
        images = dict(zip(("input", "generated", "target"), to_uint8(stacked)))
        row = {"name": file.name, **image_metrics(images["generated"], images["target"])}
        for kind, pixels in images.items():
            row[kind] = f"images/{name}_{kind}.png"
            save_png(out / row[kind], pixels)
        rows.append(row)
    return rows


def evaluate(run: TrainedRun) -> dict:
    cfg = run.cfg
    data = build_dataset(cfg)
    split = data.split_folder(cfg.eval.split).name
    files = data.split_files(cfg.eval.split)[: cfg.eval.num_images]
    generator, meta, device = start_generator(cfg.model.generator, run.checkpoint, cfg.device, cfg.seed)
    out = Path(cfg.paths.output_dir) / split
    log.info(
        "evaluating %s (epoch %s) on %d %s/%s images, %s mode, device %s -> %s",
        run.checkpoint,
        meta.get("epoch", "?"),
        len(files),
        data.name,
        split,
        cfg.eval.mode,
        device,
        out,
    )
    show = cfg.logging.progress_bar and sys.stderr.isatty()
    wanted = cfg.eval.get("fid", "auto")
    extract = fid_features(cfg, "eval.fid", required=wanted is True) if wanted is not False else None
    rows = score_split(generator, data, files, cfg.eval.mode, out, progress_bar=show)
    means = {m: float(np.mean([row[m] for row in rows])) for m in METRICS}
    scores = split_fid(cfg, data, files, extract, out, rows) if extract else {}
    summary = {
        **means,
        **scores,
        "split": split,
        "num_images": len(rows),
        "mode": cfg.eval.mode,
        "dataset": data.name,
        "direction": data.direction,
        "checkpoint": str(run.checkpoint),
        **meta,
    }
    write_text(out / "metrics.csv", metrics_csv(rows))
    write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    title = f"{data.name} {split}: {run.checkpoint.name} (epoch {meta.get('epoch', '?')})"
    text = " | ".join(f"mean {m.upper()} {means[m]:.4f}" for m in METRICS)
    if scores:
        text += f" | FID {scores['fid']:.2f} | KID {scores['kid']:.4f} +- {scores['kid_std']:.4f}"
    write_gallery(out / "index.html", rows, title, f"{text} | {len(rows)} images, {cfg.eval.mode} mode")

    writer = RunWriter((run.folder or Path(cfg.paths.output_dir)) / "tensorboard")
    try:
        shown = {**means, **{name: scores[name] for name in ("fid", "kid") if name in scores}}
        writer.scalars({f"eval/{split}/{m}": value for m, value in shown.items()}, meta.get("global_step", 0))
    finally:
        writer.close()
    log.info("%s: %s -> %s", split, text, out / "index.html")
    return summary


def saved_images(out: Path, rows: list[dict], kind: str) -> Iterator[np.ndarray]:
    """The `kind` PNGs score_split saved, read back one at a time."""
    return (np.asarray(rgb(read_image(out / row[kind]).image)) for row in rows)


def split_fid(cfg: DictConfig, data: AlignedData, files: list[Path], extract, out: Path, rows: list[dict]) -> dict:
    """FID and KID of the saved generated images against the saved targets (whose features may come from
    the cache)."""
    if len(files) < 2:
        log.warning("FID and KID skipped: they need at least two images (eval.num_images=%d)", len(files))
        return {}
    settings = f"eval {data.name} {data.direction} {data.preprocess} content {len(files)}"
    targets = functools.partial(saved_images, out, rows, "target")  # read only on a cache miss
    scorer = split_fid_scorer(cfg, extract, files, targets, settings, "FID")
    scores = scorer.score(saved_images(out, rows, "generated"))
    log.info(
        "FID %.4f, KID %.6f +- %.6f (subsets of %d images)",
        *(scores[k] for k in ("fid", "kid", "kid_std", "kid_subset_size")),
    )
    return scores
