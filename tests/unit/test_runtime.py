"""Device choice: auto falls back to the CPU; absent GPU/Ascend fail with one line that says why."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from pix2pix.backend.runtime import resolve_device
from pix2pix.errors import Pix2PixError


def fake_nvcc(tmp_path, release: str) -> str:
    bin_dir = tmp_path / "cuda" / "bin"
    bin_dir.mkdir(parents=True)
    nvcc = bin_dir / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
    nvcc.chmod(0o755)
    return str(tmp_path / "cuda")


@pytest.fixture
def no_accelerator_env(monkeypatch):
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("ASCEND_OPP_PATH", raising=False)
    return monkeypatch


def test_auto_falls_back_to_cpu(no_accelerator_env):
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


@pytest.mark.parametrize(
    "release,expected",
    [
        (None, "CUDA_HOME is not set"),
        ("12.4", "has nvcc release 12.4; MindSpore 2.10 needs CUDA 11.x"),
        ("11.8", "GPU plugin did not load"),
    ],
)
def test_gpu_that_is_not_there(no_accelerator_env, tmp_path, release, expected):
    if release:
        no_accelerator_env.setenv("CUDA_HOME", fake_nvcc(tmp_path, release))
    with pytest.raises(Pix2PixError) as err:
        resolve_device("gpu")
    assert str(err.value).startswith("device=gpu is not available: ")
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).endswith("or use device=cpu")


def test_ascend_that_is_not_there(no_accelerator_env, tmp_path):
    with pytest.raises(Pix2PixError, match="CANN environment is not set up"):
        resolve_device("ascend")
    no_accelerator_env.setenv("ASCEND_OPP_PATH", str(tmp_path))
    with pytest.raises(Pix2PixError, match="Ascend plugin did not load"):
        resolve_device("ascend")


def test_unknown_device():
    with pytest.raises(Pix2PixError, match="device.target='tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the oneDNN cap is for x86 only")
@pytest.mark.parametrize(
    "user_value,switch,expected",
    [(None, "0", "AVX2"), ("AVX512_CORE", "1", "AVX512_CORE"), ("AVX512_CORE", "0", "AVX512_CORE")],
)
def test_onednn_is_capped_when_the_fast_path_is_off_unless_the_user_chose(user_value, switch, expected):
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    env["PIX2PIX_CPU_FASTPATH"] = switch
    if user_value:
        env["ONEDNN_MAX_CPU_ISA"] = user_value
    code = "import os; from pix2pix.backend.runtime import prepare_environment; prepare_environment(); "
    code += "print(os.environ['ONEDNN_MAX_CPU_ISA'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_the_device_can_be_set_after_mindspore_already_ran_on_it():
    """The Python API in a process where MindSpore already ran a kernel (on the CPU by default)."""
    code = "import mindspore as ms; (ms.Tensor([1.0]) + 1).asnumpy(); "
    code += "from pix2pix.backend.runtime import setup_device; print(setup_device('cpu'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "cpu"
