"""What the tests import (fixtures are in tests/conftest.py): the tiny run settings, composing configs
with Hydra's compose API, running the CLI; and what a module in unit/ and its counterpart in e2e/ both use:
a local archive server's files, the hostile-image corpus, odd images, the fast path's probe."""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

from pix2pix.backend import fastpath
from pix2pix.config.compose import CONF_DIR
from pix2pix.data.aligned import AlignedData

ROOT = Path(__file__).resolve().parent.parent

# A run small enough for CI: synthetic 64x64 pairs, a 6-level U-Net with ngf 8, 2 epochs.
TINY_SETUP = [
    "device=cpu",
    "dataset=synthetic",
    "dataset.image_size=64",
    "dataset.num_train=4",
    "dataset.num_val=2",
    "dataset.load_size=72",
    "dataset.crop_size=64",
    "dataset.num_val_samples=2",
    "model.generator.num_downs=6",
    "model.generator.ngf=8",
    "model.discriminator.ndf=8",
    "schedule.n_epochs=1",
    "schedule.n_epochs_decay=1",
    "logging.progress_bar=false",
]

# The same for a training run, which also keeps every epoch's checkpoint (checkpoint.* is task=train's).
TINY = [*TINY_SETUP, "checkpoint.every=1"]


def compose_config(overrides: list[str], tmp_path: Path) -> DictConfig:
    """The composed config, with data and outputs under `tmp_path` (no Hydra run needed)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"paths.data_dir={tmp_path / 'data'}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


def conv_line(log: str) -> str:
    """The kernels part of a run log's first-step line ("forward: jit:avx512_core x4, x64:gemm:jit x6; ..."),
    empty where none was logged (no fast path)."""
    found = re.search(r"CPU convolutions: (.*)", log)
    return found.group(1) if found else ""


def run_launch(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python launch.py ARGS` in a subprocess, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "ASCEND_OPP_PATH")}
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# The account the non-root tests run as when the suite itself runs as root (.ci/run creates it).
TEST_ACCOUNT = os.environ.get("PIX2PIX_TEST_ACCOUNT", "pix2pix-ci")


# -- downloads (unit/test_download.py, e2e/test_download_cli.py) ------------------------------------------------


class ArchiveHandler(BaseHTTPRequestHandler):
    """Serves server.files by path with HTTP Range; paths in server.cut_once send half, then hang up."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        requested = self.headers.get("Range")
        start = int(requested.split("=")[1].split("-")[0]) if requested else 0
        if start >= len(data):
            self.send_error(416, "Range Not Satisfiable")
            return
        body = data[start:]
        self.send_response(206 if requested else 200)
        self.send_header("Content-Length", str(len(body)))
        if requested:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.path in self.server.cut_once:
            self.server.cut_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        if self.path in self.server.slow:  # about 2 s per transfer: two downloads overlap
            for start in range(0, len(body), max(1, len(body) // 40)):
                self.wfile.write(body[start : start + max(1, len(body) // 40)])
                self.wfile.flush()
                time.sleep(0.05)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def jpeg_pair(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, 2 * size, 3), dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def tar_gz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A .tar.gz of `members` (name -> bytes) and symlinks (name -> target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return out.getvalue()


def facades_like() -> bytes:
    """The official layout: one top folder facades/ with train/, test/ and val/."""
    members = {f"facades/{split}/{i}.jpg": jpeg_pair(i) for split in ("train", "test", "val") for i in range(1, 4)}
    return tar_gz(members)


# -- hostile inputs (unit/test_hostile_inputs.py, e2e/test_hostile_inputs_cli.py) -------------------------------


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


def only(corpus: Path, name: str, root: Path) -> AlignedData:
    """A dataset whose train split is one corpus file (a link to it) beside a good pair; val a good pair."""
    for split, names in (("train", sorted({"good.png", name})), ("val", ["good.png"])):
        (root / split).mkdir(parents=True, exist_ok=True)
        for n in names:
            (root / split / n).symlink_to(corpus / n)  # the loop stays a loop, the unreadable file unreadable
    return AlignedData(name="folder", root=str(root), load_size=36, crop_size=32)


def _save(img: Image.Image, path: Path) -> Path:
    img.save(path)
    return path


# -- predict (unit/test_predict.py, e2e/test_predict_cli.py) -----------------------------------------------------


def odd_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    palette = Image.fromarray(rng.integers(0, 4, (40, 70), dtype=np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    palette.info["transparency"] = 0
    return {
        "rgb_300x200": Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)),
        "gray_91x57": Image.fromarray(rng.integers(0, 256, (57, 91), dtype=np.uint8)),
        "rgba_64x33": Image.fromarray(rng.integers(0, 256, (33, 64, 4), dtype=np.uint8)),
        "palette_70x40": palette,
    }


# -- the CPU fast path (unit/test_fastpath.py, e2e/test_fastpath_cli.py) -----------------------------------------


CAN_BUILD = fastpath.has_avx2() and bool(shutil.which("cc") or shutil.which("gcc"))
NEEDS_BUILD = "the fast path is for x86-64 machines with AVX2 and a C compiler"
# The fast path depends on the CPU: the log's name for it here and the ISA of its blocked kernels, and the ISA cap
# used where it cannot be loaded. AVX-512 machines also test the AVX2 path, under ONEDNN_MAX_CPU_ISA=AVX2.
FAST_ISA, BLOCKED_ISA = ("AVX-512", "avx512_core") if fastpath.has_avx512() else ("AVX2", "avx2")
FALLBACK_CAP = "AVX2" if fastpath.has_avx512() else "None"

STATUS = "from pix2pix.backend import fastpath; import os; s = fastpath.enable(); "
STATUS += "print(s.active, s.problem, os.environ.get('ONEDNN_MAX_CPU_ISA'), s.detail, sep='|')"


def status_in_a_new_process(tmp_path, **env) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    environ.update(PIX2PIX_CACHE_DIR=str(tmp_path / "cache"), **env)
    done = subprocess.run([sys.executable, "-c", STATUS], env=environ, capture_output=True, text=True, check=True)
    return done.stdout.strip().split("|")
