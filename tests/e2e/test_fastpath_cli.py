"""The CPU fast path through our own commands: a failed build and `python -m pix2pix.backend.fastpath
--rebuild`, an unsafe or unusable cache under launch.py, the same training with it on and off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pix2pix.backend import fastpath
from tests.helpers import (
    BLOCKED_ISA,
    CAN_BUILD,
    FALLBACK_CAP,
    FAST_ISA,
    NEEDS_BUILD,
    ROOT,
    STATUS,
    TINY,
    conv_line,
    run_launch,
    status_in_a_new_process,
)


@pytest.mark.skipif(not fastpath.has_avx2(), reason="without AVX2 the fast path is not tried")
def test_a_failed_build_says_why_and_how_to_retry_and_rebuild_retries(tmp_path):
    active, problem, cap, detail = status_in_a_new_process(tmp_path, CC="/bin/false")
    assert (active, problem, cap) == ("False", "True", FALLBACK_CAP)
    assert "/bin/false failed" in detail and "retry with: python -m pix2pix.backend.fastpath --rebuild" in detail
    # Remembered: a later command does not try again by itself, and says the same.
    assert "retry with: python -m pix2pix.backend.fastpath --rebuild" in status_in_a_new_process(tmp_path)[3]
    environ = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "LD_PRELOAD")}
    environ["PIX2PIX_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, "-m", "pix2pix.backend.fastpath", "--rebuild"], env=environ, capture_output=True, text=True
    )
    if CAN_BUILD:
        assert done.returncode == 0 and done.stdout.startswith("on: "), done.stdout + done.stderr
        assert status_in_a_new_process(tmp_path)[0] == "True"
    else:
        assert done.returncode == 1 and done.stdout.startswith("off: ")
    assert "Traceback" not in done.stderr


def unusable_caches(tmp_path):
    """Cache folders that must not be used: unwritable, another user's, writable by others."""
    unwritable = tmp_path / "not-a-folder"
    unwritable.write_text("a file where the cache folder would be")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        os.chown(foreign, 65534, 65534)
    else:
        foreign = tmp_path.parent.parent.parent  # a folder that root owns (/tmp or the like)
        while foreign.stat().st_uid == os.geteuid():
            foreign = foreign.parent
    return {
        "unwritable": (unwritable / "cache", "cannot use its cache folder"),
        "shared": (shared, "is writable by others"),
        "foreign": (foreign, "belongs to another user"),
    }


@pytest.mark.skipif(not fastpath.has_avx2(), reason="without AVX2 the fast path is not tried")
@pytest.mark.parametrize("kind", ["unwritable", "shared", "foreign"])
def test_an_unsafe_or_unusable_cache_is_never_loaded_and_never_a_traceback(tmp_path, kind):
    folder, reason = unusable_caches(tmp_path)[kind]
    environ = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "LD_PRELOAD")}
    environ["PIX2PIX_CACHE_DIR"] = str(folder)
    done = subprocess.run([sys.executable, "-c", STATUS], env=environ, capture_output=True, text=True)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    active, problem, cap, detail = done.stdout.strip().split("|")
    assert (active, problem, cap) == ("False", "True", FALLBACK_CAP) and reason in detail
    assert not list(Path(folder).glob("conv_shim-*.so")) if Path(folder).is_dir() else True
    # A whole command goes on, with the reason in one line of its log.
    cli = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "task=inspect", "--cfg", "job"],
        env=environ,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert cli.returncode == 0 and "Traceback" not in cli.stderr, cli.stderr[-2000:]


@pytest.mark.skipif(not CAN_BUILD, reason=NEEDS_BUILD)
def test_training_is_the_same_with_the_fast_path_on_and_off(tmp_path, monkeypatch):
    runs = {}
    for switch in ("1", "0"):
        monkeypatch.setenv("PIX2PIX_CPU_FASTPATH", switch)
        if switch == "0":
            monkeypatch.delenv("LD_PRELOAD", raising=False)  # what a shell without the fast path has
        run_dir = tmp_path / f"run{switch}"
        args = [*TINY, "model.generator.use_dropout=false", f"paths.data_dir={tmp_path / 'data'}"]
        result = run_launch([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        runs[switch] = (json.loads((run_dir / "metrics.json").read_text()), (run_dir / "launch.log").read_text())
    (fast, fast_log), (capped, capped_log) = runs["1"], runs["0"]
    assert f"oneDNN {FAST_ISA} fast path" in fast_log
    kernels = conv_line(fast_log)  # "forward: jit:avx512_core x4, x64:gemm:jit x6; backward-data: ..."
    assert kernels.startswith("forward: ") and "x64:gemm:jit" in kernels and f"jit:{BLOCKED_ISA}" in kernels
    assert "oneDNN ISA cap AVX2 (PIX2PIX_CPU_FASTPATH=0)" in capped_log
    # Other kernels round differently: 8 GAN steps stay close, not bitwise equal.
    for key in ("val_L1", "final_loss_G_L1", "final_loss_D_fake"):
        assert fast[key] == pytest.approx(capped[key], rel=1e-3), key
