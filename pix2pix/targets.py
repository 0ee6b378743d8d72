"""What a config may build: the one allow-list of `_target_` names.

A run folder's recorded config (`.hydra/config.yaml`) can come from anyone: eval, predict, export, a
resume and the Python API read it, and Hydra's `instantiate` calls whatever its `_target_` entries
name. So a config read from a run folder may only name the project's own networks, datasets and
schedules and the MindSpore optimizer the configs use; anything else, at any depth, is refused before
anything is built. A new `_target_` in conf/ must be added here (tests/test_configs.py checks it).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pix2pix.errors import Pix2PixError

ALLOWED_TARGETS = frozenset(
    {
        "pix2pix.data.aligned.AlignedData",
        "pix2pix.data.synthetic.SyntheticData",
        "pix2pix.models.generator.UnetGenerator",
        "pix2pix.models.generator.ResnetGenerator",
        "pix2pix.models.discriminator.NLayerDiscriminator",
        "pix2pix.models.discriminator.PixelDiscriminator",
        "pix2pix.train.schedule.LinearSchedule",
        "pix2pix.train.schedule.StepSchedule",
        "pix2pix.train.schedule.CosineSchedule",
        "mindspore.nn.Adam",
    }
)


def targets_in(node, prefix: str = ""):
    """Every (key, value) of a `_target_` entry in a plain config tree (interpolations unresolved)."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, child in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        if key == "_target_":
            yield name, child
        else:
            yield from targets_in(child, name)


def check_targets(cfg: DictConfig, source: Path | str) -> None:
    """Refuse a config from `source` that names anything outside ALLOWED_TARGETS."""
    for key, target in targets_in(OmegaConf.to_container(cfg, resolve=False)):
        if not (isinstance(target, str) and target in ALLOWED_TARGETS):
            raise Pix2PixError(
                f"{source}: {key}: {target} is not one of the classes a pix2pix config builds, so nothing was "
                "run; a run folder's config is data, not code: remove that entry (or the run folder), "
                "or train the run again here"
            )


def load_config(path: Path) -> DictConfig:
    """A config file from elsewhere, checked: only allow-listed targets (YAML itself builds no objects)."""
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise Pix2PixError(f"{path}: not a config (a YAML mapping of keys); restore it from the run that wrote it")
    check_targets(cfg, path)
    return cfg
