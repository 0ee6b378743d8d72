"""What several tasks read from the config the same way."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from pix2pix.config.checks import validate
from pix2pix.config.implied import resolve_trained_run
from pix2pix.data.aligned import AlignedData
from pix2pix.data.sizes import input_multiple
from pix2pix.errors import Pix2PixError
from pix2pix.runs import TrainedRun

if TYPE_CHECKING:
    import numpy as np

    from pix2pix.scoring.features import InceptionFeatures
    from pix2pix.scoring.real_features import FidScorer

log = logging.getLogger(__name__)


def build_dataset(cfg: DictConfig) -> AlignedData:
    """The `dataset` group's AlignedData, with the image-size guard of `data.max_pixels` and the size
    multiple the generator needs (for the modes that keep an image's own size)."""
    data = instantiate(cfg.dataset, max_pixels=cfg.data.max_pixels)
    data.multiple = input_multiple(cfg.model.generator)
    return data


def command_line_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def trained_run(cfg: DictConfig, overrides: list[str] | None = None) -> TrainedRun:
    """The run (or checkpoint file) `ckpt=` names, with the config it trained with under this command's keys."""
    run = resolve_trained_run(cfg, command_line_overrides() if overrides is None else overrides)
    validate(run.cfg)
    return run


def fid_weights(cfg: DictConfig) -> Path | None:
    """fid.weights: the archive to convert, or None for the installed package's (a run recorded before FID
    existed has no fid block)."""
    weights = (cfg.get("fid") or {}).get("weights")
    return Path(weights).expanduser() if weights else None


def fid_features(cfg: DictConfig, key: str, required: bool) -> InceptionFeatures | None:
    """The Inception feature extractor for FID and KID, as `fid.*` configures it. Without its weights: a
    Pix2PixError naming `key` if they are `required`, else one warning with how to get them, and None
    (weights that are there but wrong are an error either way)."""
    from pix2pix.scoring.features import InceptionFeatures
    from pix2pix.weights.fid_weights import WeightsMissing

    try:
        return InceptionFeatures(fid_weights(cfg), (cfg.get("fid") or {}).get("batch_size"))
    except WeightsMissing as err:
        if required:
            raise Pix2PixError(f"{key}=true: {err}") from None
        log.warning("FID and KID skipped (%s=auto): %s", key, err)
        return None


def split_fid_scorer(
    cfg: DictConfig,
    extract: InceptionFeatures,
    files: list[Path],
    images: Callable[[], Iterable[np.ndarray]],
    settings: str,
    key: str,
) -> FidScorer:
    """FID and KID against a split's real images (`images()`, made from `files`), their features from the
    cache beside the data when `fid.cache` (the default) and the key matches."""
    from pix2pix.scoring.real_features import FidScorer, real_features

    folder = files[0].parent if (cfg.get("fid") or {}).get("cache", True) else None
    real, cached = real_features(extract, files, images, settings, folder)
    log.info("%s: real images' features %s", key, f"from {cached}" if cached else "computed")
    return FidScorer(extract, real)
