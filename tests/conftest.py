"""Shared fixtures: composing configs with Hydra's compose API, tiny run settings, the CLI."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pix2pix.backend.runtime import prepare_environment

prepare_environment()  # before anything imports MindSpore

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from pix2pix.config import register  # noqa: E402
from pix2pix.config.compose import CONF_DIR  # noqa: E402

register()

ROOT = Path(__file__).resolve().parent.parent

# A run small enough for CI: synthetic 64x64 pairs, a 6-level U-Net with ngf 8, 2 epochs.
TINY_SETUP = [
    "device=cpu",
    "dataset=synthetic",
    "dataset.image_size=64",
    "dataset.num_train=4",
    "dataset.num_val=2",
    "dataset.load_size=72",
    "dataset.crop_size=64",
    "dataset.num_val_samples=2",
    "model.generator.num_downs=6",
    "model.generator.ngf=8",
    "model.discriminator.ndf=8",
    "schedule.n_epochs=1",
    "schedule.n_epochs_decay=1",
    "logging.progress_bar=false",
]
# The same for a training run, which also keeps every epoch's checkpoint (checkpoint.* is task=train's).
TINY = [*TINY_SETUP, "checkpoint.every=1"]


def compose_config(overrides: list[str], tmp_path: Path) -> DictConfig:
    """The composed config, with data and outputs under `tmp_path` (no Hydra run needed)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"paths.data_dir={tmp_path / 'data'}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


@pytest.fixture
def compose_cfg(tmp_path):
    return lambda *overrides: compose_config(list(overrides), tmp_path)


def conv_line(log: str) -> str:
    """The kernels part of a run log's first-step line ("forward: jit:avx512_core x4, x64:gemm:jit x6; ..."),
    empty where none was logged (no fast path)."""
    found = re.search(r"CPU convolutions: (.*)", log)
    return found.group(1) if found else ""


def run_launch(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python launch.py ARGS` in a subprocess, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "ASCEND_OPP_PATH")}
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished TINY training run (its folder) for the tasks that use a trained generator."""
    work = tmp_path_factory.mktemp("trained")
    run_dir = work / "run"
    result = run_launch([*TINY, f"paths.data_dir={work / 'data'}", f"hydra.run.dir={run_dir}"], cwd=work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


# The account the non-root tests run as when the suite itself runs as root (.ci/run creates it).
TEST_ACCOUNT = os.environ.get("PIX2PIX_TEST_ACCOUNT", "pix2pix-ci")


@pytest.fixture
def as_unprivileged(tmp_path):
    """(command prefix, a folder that account owns) for running a command as an account that is not root:
    this process's own when the suite runs unprivileged (as in CI); else TEST_ACCOUNT through runuser,
    when that account can run this Python with this project (root's Python under /root is private)."""
    if os.geteuid() != 0:
        yield [], tmp_path
        return
    try:
        account = pwd.getpwnam(TEST_ACCOUNT)
    except KeyError:
        pytest.skip(f"running as root and there is no account {TEST_ACCOUNT} (PIX2PIX_TEST_ACCOUNT) to test as")
    prefix = ["runuser", "-u", TEST_ACCOUNT, "--"]
    probe = subprocess.run([*prefix, sys.executable, "-c", "import pix2pix"], cwd="/", capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(
            f"running as root and {TEST_ACCOUNT} cannot run {sys.executable} with this project: {probe.stderr[-200:]}"
        )
    folder = Path(tempfile.mkdtemp(prefix="pix2pix-unprivileged-"))
    os.chown(folder, account.pw_uid, account.pw_gid)
    try:
        yield prefix, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
