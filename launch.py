"""pix2pix-ms entry point: `python launch.py [group=option ...] [key=value ...]`.

Thin on purpose: the command line is checked, Hydra composes the config, and pix2pix.tasks runs it
(importable code, so Hydra's launchers can pickle it).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from pix2pix.config import register

register()  # resolvers and schemas: Hydra composes with them, in this process and in a launcher's workers


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from pix2pix import tasks

    return tasks.run(cfg)


if __name__ == "__main__":
    from pix2pix.cli import prepare_command_line

    sys.argv[1:] = prepare_command_line(sys.argv[1:])
    main()
