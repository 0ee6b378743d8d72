"""TensorBoard events of a run, written with tensorboardX into <run>/tensorboard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams


def flat_hparams(cfg: DictConfig) -> dict[str, float | int | str | bool]:
    """The resolved config as one flat dict of scalars (what the HPARAMS tab shows)."""
    flat: dict[str, float | int | str | bool] = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            elif isinstance(value, (int, float, str, bool)):
                flat[name] = value
            elif value is None:
                flat[name] = "null"
            else:
                flat[name] = str(value)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


class RunWriter:
    """Scalars per step, sample grids per epoch, the config as text, hparams with final metrics.

    A disabled writer (ranks other than 0 of a data-parallel job) writes nothing and makes no folder.
    """

    def __init__(self, logdir: Path, purge_step: int | None = None, enabled: bool = True):
        """purge_step (a resumed run): TensorBoard drops points at or after it from earlier event
        files, so steps re-run after a crash appear once."""
        self.writer = SummaryWriter(str(logdir), purge_step=purge_step) if enabled else None

    def flush(self) -> None:
        if self.writer:
            self.writer.flush()

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if self.writer:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def config(self, cfg: DictConfig) -> None:
        if self.writer:
            text = OmegaConf.to_yaml(cfg, resolve=True)
            self.writer.add_text("config", "```yaml\n" + text + "\n```", 0)

    def hparams(self, cfg: DictConfig, metrics: dict[str, float]) -> None:
        """hparams and their metrics in this run's own event file (not a sub-run)."""
        if not self.writer:
            return
        experiment, start, end = hparams(flat_hparams(cfg), metrics)
        for summary in (experiment, start, end):
            self.writer._get_file_writer().add_summary(summary)
        self.scalars(metrics, 0)

    def close(self) -> None:
        if self.writer:
            self.writer.close()
