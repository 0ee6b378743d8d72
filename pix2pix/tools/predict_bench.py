"""python -m pix2pix.tools.predict_bench: predict end to end (decode, translate, encode) beside the reference.

    python -m pix2pix.tools.predict_bench --make-photos ../shared/data/facades /tmp/photos  # 200 photos, 6 sizes
    python -m pix2pix.tools.predict_bench /tmp/photos --compare /path/to/torch/python

Both sides take every photo the same way, one at a time: decode (PIL), bicubic resize to 256x256, the
unet_256 generator in deterministic mode, bicubic resize back, PNG encode. Ours is the Translator that
`task=predict` runs (with its file loop, translate_files); the reference is the PyTorch generator of
../shared/bench in eval mode. The networks have the paper's initial weights (speed does not depend on
them). The first 5 photos are a warm-up; images/s is over all photos after them, start-up excluded.
Each side runs in its own process, alternately, --rounds times; the median is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = [(256, 256), (300, 200), (512, 384), (640, 480), (200, 300), (384, 512)]  # (width, height)
WARMUP = 5
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "bench"


def make_photos(source: Path, out: Path, count: int = 200) -> None:
    """The input halves of an aligned dataset's pairs, at six sizes in turn, as JPEG."""
    from PIL import Image

    pairs = sorted(p for p in source.rglob("*.jpg"))[:count]
    if len(pairs) < count:
        sys.exit(f"error: {source}: {len(pairs)} .jpg pairs, {count} needed")
    out.mkdir(parents=True, exist_ok=True)
    for i, pair in enumerate(pairs):
        img = Image.open(pair).convert("RGB")
        photo = img.crop((0, 0, img.width // 2, img.height)).resize(SIZES[i % len(SIZES)], Image.BICUBIC)
        photo.save(out / f"{i:03d}.jpg", quality=90)


def photos_in(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.jpg"))
    if len(files) <= WARMUP:
        sys.exit(f"error: {folder}: fewer than {WARMUP + 1} .jpg photos (make them with --make-photos)")
    return files


def run_ours(folder: Path, out: Path) -> dict:
    from pix2pix.backend.runtime import prepare_environment

    prepare_environment()
    import mindspore as ms

    from pix2pix.infer.translator import Translator, translate_files
    from pix2pix.models.generator import UnetGenerator

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    translator = Translator(UnetGenerator(), 3, 256, mode="deterministic")
    files = photos_in(folder)
    outputs = [out / f"{f.stem}.png" for f in files]
    translate_files(files[:WARMUP], outputs[:WARMUP], translator)
    started = time.perf_counter()
    written, _ = translate_files(files[WARMUP:], outputs[WARMUP:], translator)
    return {"images": written, "seconds": time.perf_counter() - started}


REFERENCE_RUN = """
import sys, time, numpy as np, torch
from pathlib import Path
from PIL import Image
sys.path.insert(0, sys.argv[1])
from p2p_torch import build
torch.set_num_threads(int(sys.argv[4]))
G = build()[0].eval()
files = sorted(Path(sys.argv[2]).glob("*.jpg"))
out = Path(sys.argv[3])

def translate(file):
    img = Image.open(file).convert("RGB")
    x = np.asarray(img.resize((256, 256), Image.BICUBIC), np.float32) / 127.5 - 1
    with torch.no_grad():
        y = G(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))[0].numpy()
    pixels = np.clip((y.transpose(1, 2, 0) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).resize(img.size, Image.BICUBIC).save(out / (file.stem + ".png"))

for file in files[:5]:
    translate(file)
started = time.perf_counter()
for file in files[5:]:
    translate(file)
print('{"images": %d, "seconds": %f}' % (len(files) - 5, time.perf_counter() - started))
"""


def measure(command: list[str], what: str) -> dict:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: {what} failed (exit {done.returncode}): {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pix2pix.tools.predict_bench", description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, help="a folder of .jpg photos")
    parser.add_argument("--make-photos", type=Path, metavar="DATASET", help="first write 200 photos from DATASET")
    parser.add_argument("--compare", metavar="PYTHON", help="an interpreter with torch: also run the reference")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--measure-ours", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.make_photos:
        make_photos(args.make_photos, args.photos)
    count = len(photos_in(args.photos)) - WARMUP
    with tempfile.TemporaryDirectory() as out:
        if args.measure_ours:
            print(json.dumps(run_ours(args.photos, Path(out))))
            return
        ours = [sys.executable, "-m", "pix2pix.tools.predict_bench", "--measure-ours", str(args.photos)]
        sides = {"ours (Translator, task=predict's loop)": ours}
        if args.compare:
            sides["pytorch reference"] = [args.compare, "-c", REFERENCE_RUN, str(REFERENCE), str(args.photos), out, "2"]
        rates: dict[str, list[float]] = {name: [] for name in sides}
        for round_ in range(args.rounds):
            for name in sides if round_ % 2 == 0 else list(sides)[::-1]:
                print(f"round {round_ + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
                result = measure(sides[name], name)
                rates[name].append(result["images"] / result["seconds"])
    print(f"predict, {count} photos of {len(SIZES)} sizes after {WARMUP} warm-up, {args.rounds} rounds, median")
    for name, values in rates.items():
        print(f"{name:40} {statistics.median(values):6.2f} images/s  (rounds: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
