"""The one way code outside a Hydra run composes the project's config (the API, the tools, the tests)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(overrides: Sequence[str] = (), conf_dir: Path = CONF_DIR, hydra: bool = False) -> DictConfig:
    """conf/config.yaml with `overrides`, as `python launch.py OVERRIDES` would compose it
    (hydra: keep the `hydra` node, for sweeper and launcher settings)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from pix2pix.config import register

    register()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The options of a config group: its YAML files, without the shared bases (`_name.yaml`)."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml") if not p.stem.startswith("_"))
