"""What a config from elsewhere may build: the one allow-list of `_target_` names (and of resolvers).

A run folder's recorded config (`.hydra/config.yaml`) can come from anyone: eval, predict, export, a
resume and the Python API read it, and Hydra's `instantiate` calls whatever its `_target_` entries
name. So a config read from a run folder may only name the project's own networks, datasets and
schedules and the MindSpore optimizer the configs use; anything else, at any depth, is refused before
anything is built. Its interpolations may only be plain references and the resolvers a recorded
config holds (`add`, `hydra`, `now`): OmegaConf's `oc.create` and `oc.decode` build new nodes, with
`_target_`s of their own, only when a value is read, and `oc.env` reads the user's environment.
A new `_target_` in conf/ must be added here (tests/unit/test_runs.py checks that the two agree).
"""

from __future__ import annotations

import re
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
        "pix2pix.training.schedule.LinearSchedule",
        "pix2pix.training.schedule.StepSchedule",
        "pix2pix.training.schedule.CosineSchedule",
        "mindspore.nn.Adam",
    }
)
# Classes that moved: run folders recorded before the move name them by their old path.
MOVED_TARGETS = {
    f"pix2pix.train.schedule.{name}": f"pix2pix.training.schedule.{name}"
    for name in ("LinearSchedule", "StepSchedule", "CosineSchedule")
}
ALLOWED_RESOLVERS = frozenset({"add", "hydra", "now"})
RESOLVER = re.compile(r"\$\{\s*([^${}:\s]+)\s*:")


def entries(node, prefix: str = ""):
    """Every (key, value) of a plain config tree, at every depth: containers, then what they hold."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        yield name, child
        yield from entries(child, name)


def targets_in(node):
    """Every (key, value) of a `_target_` entry in a plain config tree, whatever its value's type."""
    return [(key, value) for key, value in entries(node) if key.rsplit(".", 1)[-1] == "_target_"]


def check_config(cfg: DictConfig, source: Path | str) -> None:
    """Refuse a config from `source` that names anything outside ALLOWED_TARGETS or ALLOWED_RESOLVERS."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    for key, target in targets_in(tree):
        if not (isinstance(target, str) and target in ALLOWED_TARGETS):
            raise Pix2PixError(
                f"{source}: {key}: {target} is not one of the classes a pix2pix config builds, so nothing was "
                "run; a run folder's config is data, not code: remove that entry (or the run folder), "
                "or train the run again here"
            )
    for key, value in entries(tree):
        for name in RESOLVER.findall(value) if isinstance(value, str) else ():
            if name not in ALLOWED_RESOLVERS:
                raise Pix2PixError(
                    f"{source}: {key}: {value} uses the resolver {name}, which a run's recorded config never holds "
                    "(it could build objects or read your environment), so nothing was run; remove that entry"
                )


def update_moved_targets(cfg: DictConfig) -> None:
    """Point the `_target_`s of classes that moved (MOVED_TARGETS) at where they are now."""
    for key, target in targets_in(OmegaConf.to_container(cfg, resolve=False)):
        if isinstance(target, str) and target in MOVED_TARGETS:
            OmegaConf.update(cfg, key, MOVED_TARGETS[target], merge=False)


def load_config(path: Path) -> DictConfig:
    """A config file from elsewhere, checked: only allow-listed targets (YAML itself builds no objects)."""
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise Pix2PixError(f"{path}: not a config (a YAML mapping of keys); restore it from the run that wrote it")
    update_moved_targets(cfg)
    check_config(cfg, path)
    return cfg
