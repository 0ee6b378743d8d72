"""Shared fixtures (what tests import is in tests/helpers.py): composed configs, a trained TINY run,
an account that is not root, a local archive server, the hostile-image corpus. They apply to unit/ and e2e/."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from pix2pix.backend.runtime import prepare_environment

prepare_environment()  # before anything imports MindSpore

from pix2pix.config import register  # noqa: E402

register()

from tests.helpers import TEST_ACCOUNT, TINY, ArchiveHandler, compose_config, run_launch, write_corpus  # noqa: E402


@pytest.fixture
def compose_cfg(tmp_path):
    return lambda *overrides: compose_config(list(overrides), tmp_path)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished TINY training run (its folder) for the tasks that use a trained generator."""
    work = tmp_path_factory.mktemp("trained")
    run_dir = work / "run"
    result = run_launch([*TINY, f"paths.data_dir={work / 'data'}", f"hydra.run.dir={run_dir}"], cwd=work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


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


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
    httpd.files, httpd.cut_once, httpd.slow = {}, set(), set()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "all"
    write_corpus(folder)
    return folder
