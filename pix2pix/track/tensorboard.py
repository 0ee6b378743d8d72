"""TensorBoard events of a run, written with tensorboardX into <run>/tensorboard."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tensorboardX import summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog

from pix2pix.errors import Pix2PixError

FLUSH_SECONDS = 30


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

    Events are written in the caller's thread, with tensorboardX's own event-file writer and summaries:
    its SummaryWriter writes from a thread of its own, where a full disk ends the thread with a
    traceback and, once its queue fills, blocks training for good. Here a failed write is one
    Pix2PixError naming the folder. A disabled writer (ranks other than 0 of a data-parallel job) writes
    nothing and makes no folder.
    """

    def __init__(self, logdir: Path, purge_step: int | None = None, enabled: bool = True):
        """purge_step (a resumed run): TensorBoard drops points at or after it from earlier event
        files, so steps re-run after a crash appear once."""
        self.logdir = logdir
        self.events: EventsWriter | None = None
        self.flushed = time.monotonic()
        if not enabled:
            return
        with self.guard():
            logdir.mkdir(parents=True, exist_ok=True)
            # The pid in the name: two writers started in one second (a run and an eval of it) never share a file.
            self.events = EventsWriter(str(logdir / "events"), filename_suffix=f".{os.getpid()}")
        if purge_step is not None:
            self.write(Event(step=purge_step, file_version="brain.Event:2"))
            self.write(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))

    @contextmanager
    def guard(self):
        try:
            yield
        except OSError as err:
            raise Pix2PixError(
                f"{self.logdir}: writing TensorBoard events failed ({err.strerror or err}); free space in "
                f"{self.logdir} (or check that you may write there)"
            ) from None

    def write(self, event: Event, step: int | None = None) -> None:
        if not self.events:
            return
        event.wall_time = time.time()
        if step is not None:
            event.step = int(step)
        with self.guard():
            self.events.write_event(event)
            if time.monotonic() - self.flushed > FLUSH_SECONDS:  # TensorBoard shows a running job's points
                self.flush()

    def flush(self) -> None:
        if self.events:
            with self.guard():
                self.events.flush()
            self.flushed = time.monotonic()

    # A disabled writer returns before building anything (a sample grid's PNG, a step's summaries).

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items() if self.events else ():
            self.write(Event(summary=summary.scalar(tag, float(value))), step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if self.events:
            self.write(Event(summary=summary.image(tag, image, dataformats="HWC")), step)

    def config(self, cfg: DictConfig) -> None:
        if self.events:
            text = OmegaConf.to_yaml(cfg, resolve=True)
            self.write(Event(summary=summary.text("config", "```yaml\n" + text + "\n```")), 0)

    def hparams(self, cfg: DictConfig, metrics: dict[str, float]) -> None:
        """hparams and their metrics in this run's own event file (not a sub-run)."""
        if not self.events:
            return
        for part in summary.hparams(flat_hparams(cfg), metrics):
            self.write(Event(summary=part))
        self.scalars(metrics, 0)

    def close(self) -> None:
        if self.events:
            with self.guard():
                self.events.close()
            self.events = None
