"""The config a loose checkpoint file implies (a published file's network and data direction, a converted
checkpoint's recorded overrides), applied beneath the command line's own overrides."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from pix2pix.config.compose import CONF_DIR
from pix2pix.runs import TrainedRun, open_trained_run, override_key
from pix2pix.weights.published import implied_config

log = logging.getLogger(__name__)


def resolve_trained_run(current: DictConfig, overrides: list[str]) -> TrainedRun:
    """open_trained_run, and for a checkpoint file outside a run folder the config the file implies."""
    run = open_trained_run(current, overrides)
    if run.folder is None:
        run = dataclasses.replace(run, cfg=loose_file_config(run.cfg, run.checkpoint, overrides))
    return run


def loose_file_config(current: DictConfig, checkpoint: Path, overrides: list[str]) -> DictConfig:
    """A checkpoint file outside a run folder: the command line's config, with what the file implies (a
    published file's network and data direction, a converted checkpoint's recorded overrides)."""
    implied, lines = implied_config(checkpoint)
    if not implied:
        return current
    for line in lines:
        log.info("%s", line)
    return apply_implied(current, implied, overrides)


def set_by(key: str, chosen: set[str]) -> bool:
    """Whether the command line sets `key`: itself, or the group it is in (dataset=maps sets dataset.direction)."""
    parts = key.split(".")
    return any(".".join(parts[:n]) in chosen for n in range(1, len(parts) + 1))


def apply_implied(current: DictConfig, implied: list[str], overrides: list[str]) -> DictConfig:
    """`current` with the `implied` overrides (group=option or key=value) applied where the command line's
    `overrides` do not set the same key or group; the command line's values win everywhere."""
    chosen = {override_key(item).replace("/", ".") for item in overrides}
    cfg = current.copy()
    applied = [item for item in implied if not set_by(item.partition("=")[0].replace("/", "."), chosen)]
    with open_dict(cfg):
        for item in applied:
            key, _, value = item.partition("=")
            if "/" in key:  # a group option: its YAML, as composing with it would give
                option = OmegaConf.load(CONF_DIR / key / f"{value}.yaml")
                OmegaConf.update(cfg, key.replace("/", "."), option, merge=False)
            else:
                OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
        for item in overrides:  # the command line's own values, also inside a group the file chose
            key = override_key(item)
            if "/" not in key and not key.startswith("hydra"):
                OmegaConf.update(cfg, key, OmegaConf.select(current, key), merge=False, force_add=True)
    kept = [item for item in implied if item not in applied]
    log.info("using %s%s", " ".join(applied), f" (the command line sets {' '.join(kept)})" if kept else "")
    return cfg
