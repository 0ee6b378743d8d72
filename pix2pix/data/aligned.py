"""Aligned A|B image pairs: discovery, validation, joint jitter and the MindSpore pipeline.

Every file holds A on its left half and B on its right half (the pix2pix format).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from pathlib import Path

import mindspore.dataset as msds
import numpy as np
from PIL import Image

from pix2pix.choices import DATASET_DIRECTIONS
from pix2pix.data.images import DEFAULT_MAX_PIXELS, Decoded, conversion_note, read_image, rgb
from pix2pix.data.preprocess import Preprocess
from pix2pix.data.sizes import check_sizes, height_width
from pix2pix.errors import Pix2PixError
from pix2pix.track.files import natural_key

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def find_images(folder: Path, what: str) -> list[Path]:
    """The image files of one split, or a Pix2PixError that says where it looked."""
    if not folder.is_dir():
        raise Pix2PixError(
            f"{what}: no folder {folder}; put aligned A|B images there or set dataset.root=/path/to/data"
        )
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    if not files:
        raise Pix2PixError(
            f"{what}: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}; "
            "put aligned A|B images there or set dataset.root=/path/to/data"
        )
    return files


class NotAPair(Pix2PixError):
    """A readable image that is not an aligned A|B pair."""


def open_pair(path: Path, warn: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode one aligned file fully, as 8-bit RGB (pix2pix.data.images: EXIF orientation, high bit
    depths, palettes); UnreadableImage or NotAPair names a bad file.
    `warn`: log what reading converted (done once per file, by `prepare`)."""
    return as_pair(path, read_image(path, max_pixels), warn)


def as_pair(path: Path, decoded: Decoded, warn: bool = False) -> Image.Image:
    """The decoded file `path` as an aligned pair in RGB, or NotAPair."""
    width, height = decoded.image.size
    if not height < width < 4 * height:  # each half's aspect ratio between 1:2 and 2:1
        raise NotAPair(
            f"{path}: {width}x{height} is not an aligned A|B pair (A on the left, B on the right: the width "
            "is twice a half's width, usually twice the height); combine A and B side by side "
            "(task=combine) or remove the file"
        )
    note = conversion_note(decoded, "RGB") if warn else None
    if note:
        log.warning("%s: %s", path, note)
    return rgb(decoded.image)


def split_pair(img: Image.Image, direction: str) -> tuple[Image.Image, Image.Image]:
    """(input, target) halves of the same size (an odd width's last column is dropped): AtoB feeds the
    left half to G, BtoA the right half."""
    w, h = img.size
    half = w // 2
    left, right = img.crop((0, 0, half, h)), img.crop((half, 0, 2 * half, h))
    return (left, right) if direction == "AtoB" else (right, left)


class AlignedPairSource:
    """Random-access source of (A, B) float arrays; `jitter_seed` fixes one item's random crop and flip."""

    def __init__(
        self,
        files: list[Path],
        direction: str,
        preprocess: Preprocess,
        flip: bool,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.files = files
        self.direction = direction
        self.preprocess = preprocess
        self.flip = flip
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def item(self, index: int, jitter_seed: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pair `index`: jittered with an RNG seeded by `jitter_seed` (training), or deterministic (None)."""
        a, b = split_pair(open_pair(self.files[index], max_pixels=self.max_pixels), self.direction)
        jitter = None
        if jitter_seed is not None:
            jitter = self.preprocess.draw(np.random.default_rng(jitter_seed), a.size, self.flip)
        return self.preprocess.apply(a, jitter), self.preprocess.apply(b, jitter)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.item(index)


class EpochStream:
    """The training pairs of epochs first..last, in a shuffled order per epoch, for one rank.

    Order and jitter come from (seed, epoch, index) alone, never from what was read before, so a
    run resumed at epoch E, step S reads exactly the pairs an uninterrupted run reads there.
    A step takes the next `ranks * batch_size` pairs of the epoch's order (the global batch) and
    rank r reads its r-th slice of `batch_size`: together the ranks read what one device reads with
    the global batch. Each epoch yields steps * batch_size pairs per rank (a partial last global
    batch is dropped).
    """

    def __init__(
        self,
        source: AlignedPairSource,
        batch_size: int,
        seed: int,
        first: int,
        last: int,
        skip: int = 0,
        rank: int = 0,
        ranks: int = 1,
    ):
        self.source = source
        self.batch_size = batch_size
        self.seed = seed
        self.first, self.last, self.skip = first, last, skip
        self.rank, self.ranks = rank, ranks

    def order(self, epoch: int) -> np.ndarray:
        """This rank's pairs of `epoch`, in the order it reads them."""
        global_batch = self.batch_size * self.ranks
        steps = len(self.source) // global_batch
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))[: steps * global_batch]
        return order.reshape(steps, self.ranks, self.batch_size)[:, self.rank].reshape(-1)

    def __iter__(self):
        for epoch in range(self.first, self.last + 1):
            order = self.order(epoch)
            start = self.skip * self.batch_size if epoch == self.first else 0
            for index in order[start:]:
                yield self.source.item(int(index), [self.seed, epoch, int(index)])


class AlignedData:
    """A dataset of aligned A|B files in `root/<train_split>` and `root/<val_split>`.

    Built from the `dataset` config group; checks its settings and every file up front,
    so a bad image stops the run before training starts, with its name.
    """

    def __init__(
        self,
        name: str,
        root: str,
        direction: str = "AtoB",
        load_size: int | list[int] = 286,
        crop_size: int | list[int] = 256,
        preprocess: str = "resize_and_crop",
        fit: str = "pad",
        batch_size: int = 1,
        flip: bool = True,
        train_split: str = "train",
        val_split: str = "val",
        train_data_dir: str | None = None,
        val_data_dir: str | None = None,
        dataset_size: int | None = None,
        num_val_samples: int = 4,
        seed: int = 0,
        url: str | None = None,
        sha256: str | None = None,
        download: bool = False,
        download_note: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        if direction not in DATASET_DIRECTIONS:  # checked here, where the halves are chosen
            raise Pix2PixError(f"dataset.direction={direction!r}: use AtoB or BtoA")
        check_sizes(load_size, crop_size, preprocess)
        if batch_size < 1:
            raise Pix2PixError(f"dataset.batch_size={batch_size}: use 1 or more")
        self.name = name
        self.root = Path(root).expanduser().absolute()
        self.direction = direction
        self.load_size = height_width(load_size, "dataset.load_size")  # (height, width)
        self.crop_size = height_width(crop_size, "dataset.crop_size")
        self.preprocess_mode, self.fit = preprocess, fit
        self.multiple = 1  # what G's input sides divide by; the tasks set it from the model (sizes.input_multiple)
        Preprocess(preprocess, fit=fit)  # a bad mode or fit: one line now, not at the first pair
        self.batch_size = batch_size
        self.flip = flip
        self.train_dir = Path(train_data_dir or self.root / train_split).expanduser().absolute()
        self.val_dir = Path(val_data_dir or self.root / val_split).expanduser().absolute()
        self.dataset_size = dataset_size
        self.num_val_samples = num_val_samples
        self.seed = seed
        self.url = url
        self.sha256 = sha256
        self.download = download
        self.download_note = download_note
        self.max_pixels = max_pixels  # data.max_pixels, passed by the tasks
        self._files: dict[str, list[Path]] = {}

    def ensure_present(self) -> None:
        """Download the dataset when it is missing and dataset.download=true; otherwise say how."""
        if self.train_dir.is_dir() or not (self.url or self.download_note):
            return  # present, or a folder dataset: find_images names what is missing
        if not self.download:
            raise Pix2PixError(
                f"dataset={self.name}: no data in {self.root}; download it first with "
                f"'python launch.py task=download dataset={self.name}' (add the same paths.data_dir / dataset.root), "
                "or add dataset.download=true to download before training"
            )
        self.fetch()

    def fetch(self, progress_bar: bool = True) -> Path:
        """Download, verify and extract the official archive into `root` (see pix2pix.data.download)."""
        from pix2pix.data.download import download_dataset

        if not self.url:
            raise Pix2PixError(f"dataset={self.name} cannot be downloaded: {self.download_note or 'no dataset.url'}")
        return download_dataset(self.url, self.sha256, self.root, progress_bar)

    def split_folder(self, split: str) -> Path:
        """The folder of `split`: train, val (the dataset's validation split) or a folder name under root."""
        return {"train": self.train_dir, "val": self.val_dir}.get(split, self.root / split)

    def split_files(self, split: str) -> list[Path]:
        """The image files of one split, found (not decoded): for evaluation, which reads them one by one."""
        self.ensure_present()
        return find_images(self.split_folder(split), f"dataset={self.name} split {split}")

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(self.preprocess_mode, self.load_size, self.crop_size, self.multiple, self.fit)

    def prepare(self) -> None:
        """Find and fully decode every file once: errors name the file before training starts."""
        self.ensure_present()
        preprocess = self.preprocess
        shapes: dict[str, Counter] = {}
        for split, folder in (("train", self.train_dir), ("val", self.val_dir)):
            files = find_images(folder, f"dataset={self.name} {split} split")
            shapes[split] = Counter()
            for path in files:
                width, height = open_pair(path, warn=True, max_pixels=self.max_pixels).size
                half = (width // 2, height)
                preprocess.check_fits(half, str(path))
                shapes[split][(half, preprocess.output_size(half, train=split == "train"))] += 1
            self._files[split] = files
        n_train = len(self._files["train"])
        if n_train < self.batch_size:
            raise Pix2PixError(
                f"{self.train_dir}: {n_train} images is fewer than dataset.batch_size={self.batch_size}; "
                "lower dataset.batch_size"
            )
        if self.dataset_size and self.dataset_size != n_train:
            log.warning(
                "dataset.dataset_size=%d but %s holds %d images: steps per epoch come from the data",
                self.dataset_size,
                self.train_dir,
                n_train,
            )
        self.log_shapes(shapes["train"])

    def log_shapes(self, shapes: Counter) -> None:
        """Say how the training halves reach the network (the sizes found and what they become), and refuse
        batches whose pairs would have different shapes."""
        log.info("%s", self.preprocess.describe())
        outputs = Counter()
        for (_, out), count in shapes.items():
            outputs[out] += count
        if len(shapes) <= 4:
            found = ", ".join(f"{count} x {w}x{h} -> {o[0]}x{o[1]}" for ((w, h), o), count in shapes.most_common())
        else:
            found = ", ".join(f"{count} x {o[0]}x{o[1]}" for o, count in outputs.most_common(4)) + ", ..."
        log.info("training halves (width x height, as found -> as trained): %s", found)
        if len(outputs) > 1:
            if self.batch_size > 1:
                raise Pix2PixError(
                    f"dataset.preprocess={self.preprocess_mode} gives the training pairs {len(outputs)} different "
                    f"shapes, and a batch needs one: use dataset.batch_size=1, or a crop mode "
                    "(dataset.preprocess=resize_and_crop, scale_width_and_crop, ...)"
                )
            log.info("%d training shapes: the train step compiles once for each", len(outputs))

    def files(self, split: str) -> list[Path]:
        if split not in self._files:
            self.prepare()
        return self._files[split]

    def fingerprint(self) -> str:
        """The training split in one short string (count and a hash of the names): a checkpoint records it,
        so that a mid-epoch resume can tell that the files changed."""
        names = "\n".join(str(p.relative_to(self.train_dir)) for p in self.files("train"))
        return f"{len(self.files('train'))} files, sha256 {hashlib.sha256(names.encode()).hexdigest()[:12]}"

    def steps_per_epoch(self, ranks: int = 1) -> int:
        """Steps of one pass over the training split, with `ranks` devices sharing each step."""
        n_train, global_batch = len(self.files("train")), self.batch_size * ranks
        if n_train < global_batch:
            raise Pix2PixError(
                f"{self.train_dir}: {n_train} images is fewer than one global batch ({ranks} devices x "
                f"dataset.batch_size={self.batch_size}); lower dataset.batch_size or parallel.device_num"
            )
        return n_train // global_batch

    def source(self, files: list[Path], flip: bool) -> AlignedPairSource:
        return AlignedPairSource(files, self.direction, self.preprocess, flip, self.max_pixels)

    def train_dataset(
        self, first_epoch: int = 1, last_epoch: int = 1, skip_steps: int = 0, rank: int = 0, ranks: int = 1
    ) -> msds.Dataset:
        """Batches of epochs first..last in one stream (iterate it once, `steps_per_epoch(ranks)` batches
        per epoch), starting `skip_steps` batches into the first: where a resumed run continues.
        In a data-parallel job, `rank`'s share of every global batch (see EpochStream)."""
        source = self.source(self.files("train"), self.flip)
        stream = EpochStream(source, self.batch_size, self.seed, first_epoch, last_epoch, skip_steps, rank, ranks)
        dataset = msds.GeneratorDataset(
            stream,
            column_names=["real_A", "real_B"],
            shuffle=False,
            num_parallel_workers=1,
            python_multiprocessing=False,
        )
        return dataset.batch(self.batch_size, drop_remainder=True)

    def val_batches(self, limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The first `limit` validation pairs in their deterministic form, as (A, B) NCHW arrays: one pair of
        arrays per run of pairs of the same shape (one in all unless dataset.preprocess keeps image sizes)."""
        source = self.source(self.files("val")[:limit], flip=False)
        batches: list[tuple[list, list]] = []
        for i in range(len(source)):
            a, b = source[i]
            if not batches or batches[-1][0][0].shape != a.shape:
                batches.append(([], []))
            batches[-1][0].append(a)
            batches[-1][1].append(b)
        return [(np.stack(a), np.stack(b)) for a, b in batches]

    def val_arrays(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The validation pairs of the first shape (all of them, unless the preprocessing keeps sizes)."""
        return self.val_batches(limit)[0]
