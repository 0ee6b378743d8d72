"""The CPU fast path, probed in fresh Python processes: built and checked on first use, the AVX2 cap where it
cannot be used, a damaged cache rebuilt, one build for two processes, a switch; its convolutions against
oneDNN's own; and the LeakyReLU with its own gradient."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from pix2pix.backend import fastpath
from pix2pix.cache import cache_dir
from pix2pix.models.layers import LeakyReLU
from tests.helpers import CAN_BUILD, STATUS, status_in_a_new_process


@pytest.mark.skipif(not CAN_BUILD, reason="the fast path is for AVX-512 machines with a C compiler")
def test_first_use_builds_checks_and_caches_the_library(tmp_path):
    active, problem, cap, detail = status_in_a_new_process(tmp_path)
    assert (active, problem, cap) == ("True", "False", "None") and "AVX-512 fast path" in detail
    (verdict,) = (tmp_path / "cache").glob("conv_shim-*.json")
    record = json.loads(verdict.read_text())
    assert record["ok"]
    for report in record["kernels"]:  # each direction: gemm for the small convolution, blocked for the large one
        names = fastpath.kernel_names(report)
        assert "x64:gemm:jit" in names and any("avx512" in n and "gemm" not in n for n in names), report
        assert not any(n.startswith(fastpath.SLOW_KERNELS) for n in names), report
    built = verdict.with_suffix(".so").stat().st_mtime
    assert status_in_a_new_process(tmp_path)[0] == "True"
    assert verdict.with_suffix(".so").stat().st_mtime == built  # built once


@pytest.mark.skipif(not fastpath.has_avx512(), reason="without AVX-512 the fast path is not tried")
def test_without_a_compiler_the_avx2_cap_is_used_and_the_reason_given(tmp_path):
    active, problem, cap, detail = status_in_a_new_process(tmp_path, CC="/nowhere/cc")
    assert (active, problem, cap) == ("False", "True", "AVX2")
    assert "the fast path is unavailable: the C compiler /nowhere/cc did not run" in detail


@pytest.mark.skipif(not CAN_BUILD, reason="the fast path is for AVX-512 machines with a C compiler")
def test_loaded_after_mindspore_it_would_not_work_so_the_avx2_cap_is_used(tmp_path):
    environ = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "LD_PRELOAD")}
    environ["PIX2PIX_CACHE_DIR"] = str(tmp_path / "cache")
    code = "import mindspore; " + STATUS
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    active, problem, cap, detail = done.stdout.strip().split("|")
    assert (active, problem, cap) == ("False", "True", "AVX2") and "imported before" in detail


def test_children_load_it_first(tmp_path):
    status = fastpath.enable()
    if status.active:
        assert str(fastpath.library_path(cache_dir())) in os.environ["LD_PRELOAD"].split()
    else:
        assert "conv_shim" not in os.environ.get("LD_PRELOAD", "")


@pytest.mark.skipif(not CAN_BUILD, reason="the fast path is for AVX-512 machines with a C compiler")
@pytest.mark.parametrize("damage", ["empty verdict", "verdict without its library", "garbled verdict"])
def test_a_damaged_cache_is_rebuilt(tmp_path, damage):
    assert status_in_a_new_process(tmp_path)[0] == "True"
    (verdict,) = (tmp_path / "cache").glob("conv_shim-*.json")
    if damage == "empty verdict":
        verdict.write_text("")
    elif damage == "garbled verdict":
        verdict.write_text('{"ok": "yes"')
    else:
        verdict.with_suffix(".so").unlink()
    active, problem, _, detail = status_in_a_new_process(tmp_path)
    assert (active, problem) == ("True", "False"), detail
    assert json.loads(verdict.read_text())["ok"] and verdict.with_suffix(".so").is_file()


@pytest.mark.skipif(not CAN_BUILD, reason="the fast path is for AVX-512 machines with a C compiler")
def test_two_processes_build_it_once(tmp_path):
    """Two commands started at once on a fresh cache: one builds (a compiler wrapper counts the builds),
    the other waits for it and uses the result."""
    calls = tmp_path / "compiler-calls"
    compiler = tmp_path / "cc"
    compiler.write_text(f'#!/bin/sh\necho x >> {calls}\nexec {shutil.which("cc") or shutil.which("gcc")} "$@"\n')
    compiler.chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "LD_PRELOAD")}
    environ.update(PIX2PIX_CACHE_DIR=str(tmp_path / "cache"), CC=str(compiler))
    both = [
        subprocess.Popen([sys.executable, "-c", STATUS], env=environ, stdout=subprocess.PIPE, text=True) for _ in "ab"
    ]
    outputs = [p.communicate(timeout=600)[0] for p in both]
    assert all(out.startswith("True|False") for out in outputs), outputs
    assert calls.read_text().count("x") == 1
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_the_switch_turns_it_off(tmp_path):
    active, problem, cap, _ = status_in_a_new_process(tmp_path, PIX2PIX_CPU_FASTPATH="0")
    assert (active, problem) == ("False", "False") and cap in ("AVX2", "None")
    assert not (tmp_path / "cache").exists()  # nothing built


def test_leaky_relu_has_nn_leaky_relus_values_and_gradient():
    x = ms.Tensor(np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32))
    ours, reference = LeakyReLU(0.2), nn.LeakyReLU(0.2)
    np.testing.assert_array_equal(ours(x).asnumpy(), reference(x).asnumpy())
    np.testing.assert_allclose(ms.grad(ours)(x).asnumpy(), ms.grad(reference)(x).asnumpy(), rtol=0, atol=1e-7)


# Convolutions of the shapes pix2pix has, forward and both gradients, in a fresh process: blocked ones
# (enough output positions) and gemm ones (a narrow transposed-convolution output, few positions).
CONVOLUTIONS = """
import json, sys
import numpy as np
from pix2pix.backend import fastpath
fastpath.enable()
import mindspore as ms
from mindspore import nn
ms.set_device("CPU")
rng = np.random.default_rng(0)
pad = dict(pad_mode="pad", padding=1, has_bias=True)
layers = [
    (nn.Conv2d(16, 32, 4, stride=2, **pad), (2, 16, 64, 64)),  # a down-sampling conv, batch 2
    (nn.Conv2d(32, 1, 4, stride=1, **pad), (1, 32, 33, 33)),  # the PatchGAN's last: one output channel
    (nn.Conv2dTranspose(32, 16, 4, stride=2, **pad), (1, 32, 32, 32)),  # a U-Net up-sampling conv
    (nn.Conv2dTranspose(32, 3, 4, stride=2, **pad), (1, 32, 32, 32)),  # the last: 3 channels out
    (nn.Conv2d(32, 32, 4, stride=2, **pad), (1, 32, 16, 16)),  # an inner one: 8x8 outputs
]
arrays = {}
for i, (cell, shape) in enumerate(layers):
    for p in cell.trainable_params():
        p.set_data(ms.Tensor(rng.normal(0, 0.05, p.shape).astype(np.float32)))
    x = ms.Tensor(rng.normal(size=shape).astype(np.float32))
    r = ms.Tensor(rng.normal(size=cell(x).shape).astype(np.float32))
    loss = lambda x: (cell(x) * r).sum()
    dx, (dw, db) = ms.grad(loss, grad_position=0, weights=cell.trainable_params())(x)
    for name, value in (("y", cell(x)), ("dx", dx), ("dw", dw), ("db", db)):
        arrays[f"{i}_{name}"] = value.asnumpy()
np.savez(sys.argv[1], **arrays)
print(json.dumps(fastpath.conv_kernels()))
"""


@pytest.mark.skipif(not CAN_BUILD, reason="the fast path is for AVX-512 machines with a C compiler")
def test_blocked_convolutions_compute_what_oneDNNs_own_path_does(tmp_path):
    """The fast path (blocked and gemm convolutions) against oneDNN under the AVX2 cap, without the library."""
    results = {}
    for switch in ("1", "0"):
        env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "LD_PRELOAD")}
        env.update(PIX2PIX_CPU_FASTPATH=switch, GLOG_v="3")
        out = tmp_path / f"conv{switch}.npz"
        done = subprocess.run(
            [sys.executable, "-c", CONVOLUTIONS, str(out)], env=env, capture_output=True, text=True, check=True
        )
        results[switch] = (json.loads(done.stdout.strip().splitlines()[-1]), np.load(out))
    (kernels, fast), (no_kernels, reference) = results["1"], results["0"]
    assert no_kernels is None
    for direction in fastpath.DIRECTIONS:  # both kinds ran in each direction
        names = fastpath.kernel_names(kernels[direction])
        assert "x64:gemm:jit" in names and any("gemm" not in n for n in names), kernels
    for key in reference.files:
        scale = np.abs(reference[key]).max()
        np.testing.assert_allclose(fast[key], reference[key], rtol=0, atol=1e-5 * scale, err_msg=key)
