"""As a user who is not root: a whole run trains and resumes. CI runs the whole suite as such an account;
as root this runs through `runuser` as one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from tests.helpers import ROOT, TINY


def test_a_user_who_is_not_root_trains_and_resumes(as_unprivileged):
    prefix, folder = as_unprivileged
    run_dir = folder / "run"
    base = [*prefix, sys.executable, str(ROOT / "launch.py")]
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "ASCEND_OPP_PATH", "HOME", "XDG_CACHE_HOME")}
    args = [*TINY, "schedule.n_epochs_decay=0", f"paths.data_dir={folder / 'data'}", f"hydra.run.dir={run_dir}"]
    first = subprocess.run([*base, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    resumed = subprocess.run(
        [*base, f"ckpt={run_dir}", "schedule.n_epochs=2"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert "training epochs 2-2" in output and "Permission denied" not in output
    last = run_dir / "checkpoints" / "last.ckpt"
    assert stat.S_IMODE(last.stat().st_mode) & 0o600 == 0o600  # its owner may read and replace it
