"""Process set-up: CPU kernel choice, device selection, graph mode, seeds.

`prepare_environment()` must run before `import mindspore` (pix2pix.cli, for launch.py, and the
tests' conftest call it): the CPU fast path's library is loaded before MindSpore, and oneDNN reads its ISA cap
when it first runs an op.
"""

from __future__ import annotations

import logging
import os
import random
import re
import subprocess

import numpy as np

from pix2pix.backend import fastpath, memory
from pix2pix.choices import DEVICES, EXECUTION_MODES
from pix2pix.errors import Pix2PixError

log = logging.getLogger(__name__)

DEVICE_TARGETS = {"cpu": "CPU", "gpu": "GPU", "ascend": "Ascend"}  # our names -> MindSpore's


def prepare_environment() -> None:
    """What MindSpore reads once, at import or at its first op.

    - The CPU convolution path (pix2pix.backend.fastpath): a small native library that puts MindSpore 2.10's
      convolutions on oneDNN's blocked AVX-512 or AVX2 kernels (on AVX-512 machines oneDNN otherwise picks a
      reference convolution about 100x slower: where the library cannot be used, oneDNN is capped at AVX2).
    - GLOG_v=3: MindSpore's C++ warnings (such as the GPU probe's) stay off the terminal.
    - The C allocator gives large freed blocks back (pix2pix.backend.memory).
    A value the user set already is kept.
    """
    os.environ.setdefault("GLOG_v", "3")
    memory.tune_allocator()
    fastpath.enable()


def _nvcc_release(cuda_home: str) -> str | None:
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    if not os.access(nvcc, os.X_OK):
        return None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else None


def gpu_problem() -> str | None:
    """Why MindSpore cannot use a GPU here, or None when it can."""
    cuda_home = os.environ.get("CUDA_HOME")
    if not cuda_home:
        return (
            "CUDA_HOME is not set (MindSpore 2.10 only tries its GPU plugin when CUDA_HOME points to a "
            "CUDA 11.x toolkit whose bin/nvcc reports release 11.x); see docs/devices.md (GPU)"
        )
    release = _nvcc_release(cuda_home)
    if release is None:
        return f"CUDA_HOME={cuda_home} has no working bin/nvcc; point CUDA_HOME at a CUDA 11.x toolkit"
    if not release.startswith("11."):
        return f"CUDA_HOME={cuda_home} has nvcc release {release}; MindSpore 2.10 needs CUDA 11.x (11.6 or 11.8)"
    from mindspore import device_context

    if not device_context.gpu.is_available():
        return (
            "MindSpore's GPU plugin did not load (CUDA 11 libraries such as libcudnn.so.8 missing?); "
            "install the nvidia-*-cu11 wheels listed in docs/devices.md (GPU)"
        )
    try:
        count = device_context.gpu.device_count()
    except RuntimeError:
        count = 0
    return None if count > 0 else "no GPU found by the driver (nvidia-smi shows none?)"


def ascend_problem() -> str | None:
    """Why MindSpore cannot use an Ascend NPU here, or None when it can."""
    if not os.environ.get("ASCEND_OPP_PATH"):
        return "the CANN environment is not set up; run 'source <CANN>/set_env.sh' before python"
    from mindspore import device_context

    if not device_context.ascend.is_available():
        return "MindSpore's Ascend plugin did not load; check the CANN version (8.2 to 9.1)"
    try:
        count = device_context.ascend.device_count()
    except RuntimeError:
        count = 0
    return None if count > 0 else "no Ascend device found (npu-smi info shows none?)"


def device_count(name: str) -> int | None:
    """How many devices of kind `name` ('gpu', 'ascend') this machine has; None for the CPU."""
    if name == "cpu":
        return None
    from mindspore import device_context

    try:
        return getattr(device_context, name).device_count()
    except RuntimeError:
        return 0


def resolve_device(target: str) -> str:
    """'auto' probes Ascend, then GPU, then the CPU, logging why each was skipped."""
    target = target.lower()
    if target == "auto":
        for name, probe in (("ascend", ascend_problem), ("gpu", gpu_problem)):
            problem = probe()
            if problem is None:
                return name
            log.info("device=auto: not using %s: %s", name, problem)
        return "cpu"
    if target not in DEVICES:
        raise Pix2PixError(f"device.target={target!r}: use {', '.join(DEVICES[:-1])} or {DEVICES[-1]}")
    problem = {"gpu": gpu_problem, "ascend": ascend_problem}.get(target, lambda: None)()
    if problem:
        raise Pix2PixError(f"device={target} is not available: {problem}; or use device=cpu")
    return target


def setup_device(target: str = "auto", device_id: int = 0, mode: str = "graph", save_graphs: bool = False) -> str:
    """Select the device and execution mode; returns the chosen device ('cpu', 'gpu', 'ascend')."""
    import mindspore as ms

    if mode not in EXECUTION_MODES:
        raise Pix2PixError(f"device.mode={mode!r}: use {' or '.join(EXECUTION_MODES)}")
    name = resolve_device(target)
    try:
        ms.set_device(DEVICE_TARGETS[name], device_id if name != "cpu" else None)
    except RuntimeError:
        # MindSpore fixes the device at its first kernel (in this process, say, code that ran before
        # the Python API was called); carrying on is right only if that device is the one asked for.
        current = ms.get_context("device_target")
        if current != DEVICE_TARGETS[name]:
            raise Pix2PixError(
                f"device={name}: MindSpore already runs on {current} in this process; "
                f"use device={current.lower()}, or a new process"
            ) from None
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    if save_graphs:
        ms.set_context(save_graphs=True)
    return name


def seed_everything(seed: int) -> None:
    """Python, NumPy and MindSpore (weight init, dropout) from one seed."""
    import mindspore as ms

    random.seed(seed)
    np.random.seed(seed)
    ms.set_seed(seed)


def describe_cpu_kernels() -> str:
    """How the CPU convolutions run here, for the log; says once (as a warning) why the fast path is off
    where it was wanted."""
    status = fastpath.enable()
    if status.problem:
        log.warning("CPU: %s", status.detail)
    return f"{status.detail}, {os.cpu_count()} cores"


def describe_conv_kernels() -> str | None:
    """The oneDNN kernels the convolutions actually got (fast path only), for the log."""
    kernels = fastpath.conv_kernels()
    if not kernels:
        return None
    return "; ".join(f"{direction}: {names}" for direction, names in kernels.items() if names)
