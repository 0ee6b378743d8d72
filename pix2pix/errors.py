"""The exceptions that cross layers: a user mistake (one line, exit 2) and a stop on request."""

from __future__ import annotations

import signal
from pathlib import Path


class Pix2PixError(Exception):
    """A user-facing error whose message names the file or config key and the fix."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # what asks a run to stop after its current step


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint of the last finished step was written (None: the
    job stopped before it could write one)."""

    def __init__(self, signum: int, checkpoint_path: Path | None):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.checkpoint_path = checkpoint_path
