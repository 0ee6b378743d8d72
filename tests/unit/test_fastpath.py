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
from tests.helpers import BLOCKED_ISA, CAN_BUILD, FALLBACK_CAP, FAST_ISA, NEEDS_BUILD, STATUS, status_in_a_new_process


@pytest.mark.skipif(not CAN_BUILD, reason=NEEDS_BUILD)
def check_verdict(verdict, isa: str, blocked: str) -> None:
    record = json.loads(verdict.read_text())
    assert record["ok"] and record["isa"].startswith(isa), record  # AVX512_CORE_BF16, AVX2_VNNI, ...
    for report in record["kernels"]:  # each direction: gemm for the small convolution, blocked for the large one
        names = fastpath.kernel_names(report)
        assert "x64:gemm:jit" in names and any(n.endswith(f":{blocked}") for n in names), report
        assert not any(n.startswith(fastpath.SLOW_KERNELS) for n in names), report


@pytest.mark.skipif(not CAN_BUILD, reason=NEEDS_BUILD)
def test_first_use_builds_checks_and_caches_the_library(tmp_path):
    """On this machine's own ISA (AVX-512 or AVX2: the test takes the path this machine takes)."""
    active, problem, cap, detail = status_in_a_new_process(tmp_path)
    assert (active, problem, cap) == ("True", "False", "None") and f"oneDNN {FAST_ISA} fast path (" in detail
    (library,) = (tmp_path / "cache").glob("conv_shim-*.so")
    (verdict,) = (tmp_path / "cache").glob("conv_shim-*.json")
    assert verdict.name == f"{library.stem}-native.json"
    check_verdict(verdict, BLOCKED_ISA.upper(), BLOCKED_ISA)
    built = library.stat().st_mtime
    assert status_in_a_new_process(tmp_path)[0] == "True"
    assert library.stat().st_mtime == built  # built once


@pytest.mark.skipif(not CAN_BUILD, reason=NEEDS_BUILD)
def test_under_an_avx2_cap_it_runs_avx2_blocked_kernels(tmp_path):
    """ONEDNN_MAX_CPU_ISA=AVX2 is kept and the library checked under it, with a verdict of its own: on an
    AVX-512 machine, what an AVX2 machine runs; the build is shared with the machine's own ISA."""
    active, problem, cap, detail = status_in_a_new_process(tmp_path, ONEDNN_MAX_CPU_ISA="AVX2")
    assert (active, problem, cap) == ("True", "False", "AVX2")
    assert "oneDNN AVX2 fast path under your ONEDNN_MAX_CPU_ISA=AVX2 (" in detail
    (library,) = (tmp_path / "cache").glob("conv_shim-*.so")
    check_verdict(library.with_name(f"{library.stem}-avx2.json"), "AVX2", "avx2")
    built = library.stat().st_mtime
    assert status_in_a_new_process(tmp_path)[0] == "True"  # the machine's own ISA: checked, not built again
    assert library.stat().st_mtime == built and library.with_name(f"{library.stem}-native.json").is_file()


@pytest.mark.skipif(not fastpath.has_avx2(), reason="without AVX2 the fast path is not tried")
def test_without_a_compiler_onednns_own_path_is_used_and_the_reason_given(tmp_path):
    """On AVX-512, oneDNN's own path needs the AVX2 cap (its reference convolution otherwise); on AVX2, nothing."""
    active, problem, cap, detail = status_in_a_new_process(tmp_path, CC="/nowhere/cc")
    assert (active, problem, cap) == ("False", "True", FALLBACK_CAP)
    assert "the fast path is unavailable: the C compiler /nowhere/cc did not run" in detail


@pytest.mark.skipif(not CAN_BUILD, reason=NEEDS_BUILD)
def test_loaded_after_mindspore_it_would_not_work_so_the_avx2_cap_is_used(tmp_path):
    environ = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "LD_PRELOAD")}
    environ["PIX2PIX_CACHE_DIR"] = str(tmp_path / "cache")
    code = "import mindspore; " + STATUS
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    active, problem, cap, detail = done.stdout.strip().split("|")
    assert (active, problem, cap) == ("False", "True", FALLBACK_CAP) and "imported before" in detail


def test_children_load_it_first(tmp_path):
    status = fastpath.enable()
    if status.active:
        assert str(fastpath.library_path(cache_dir())) in os.environ["LD_PRELOAD"].split()
    else:
        assert "conv_shim" not in os.environ.get("LD_PRELOAD", "")


@pytest.mark.skipif(not CAN_BUILD, reason=NEEDS_BUILD)
@pytest.mark.parametrize("damage", ["empty verdict", "verdict without its library", "garbled verdict"])
def test_a_damaged_cache_is_rebuilt(tmp_path, damage):
    assert status_in_a_new_process(tmp_path)[0] == "True"
    (library,) = (tmp_path / "cache").glob("conv_shim-*.so")
    (verdict,) = (tmp_path / "cache").glob("conv_shim-*.json")
    if damage == "empty verdict":
        verdict.write_text("")
    elif damage == "garbled verdict":
        verdict.write_text('{"ok": "yes"')
    else:
        library.unlink()
    active, problem, _, detail = status_in_a_new_process(tmp_path)
    assert (active, problem) == ("True", "False"), detail
    assert json.loads(verdict.read_text())["ok"] and library.is_file()


@pytest.mark.skipif(not CAN_BUILD, reason=NEEDS_BUILD)
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


@pytest.mark.skipif(not CAN_BUILD, reason=NEEDS_BUILD)
@pytest.mark.parametrize("cap", [None, "AVX2"], ids=["own-isa", "avx2-cap"])
def test_blocked_convolutions_compute_what_oneDNNs_own_path_does(tmp_path, cap):
    """The fast path (blocked and gemm convolutions), on this machine's ISA and under the AVX2 cap, against
    oneDNN under the AVX2 cap without the library."""
    results = {}
    for switch in ("1", "0"):
        env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "LD_PRELOAD")}
        env.update(PIX2PIX_CPU_FASTPATH=switch, GLOG_v="3")
        if cap and switch == "1":
            env["ONEDNN_MAX_CPU_ISA"] = cap
        out = tmp_path / f"conv{switch}.npz"
        done = subprocess.run(
            [sys.executable, "-c", CONVOLUTIONS, str(out)], env=env, capture_output=True, text=True, check=True
        )
        results[switch] = (json.loads(done.stdout.strip().splitlines()[-1]), np.load(out))
    (kernels, fast), (no_kernels, reference) = results["1"], results["0"]
    assert no_kernels is None
    blocked = (cap or BLOCKED_ISA).lower()
    for direction in fastpath.DIRECTIONS:  # both kinds ran in each direction
        names = fastpath.kernel_names(kernels[direction])
        assert "x64:gemm:jit" in names and any(n.endswith(f":{blocked}") for n in names), kernels
    for key in reference.files:
        scale = np.abs(reference[key]).max()
        np.testing.assert_allclose(fast[key], reference[key], rtol=0, atol=1e-5 * scale, err_msg=key)


# A convolution too small for blocked layouts (8x8 outputs), run twice under constant_weights with its weight changed
# in between, and an equal one outside it. Graph mode: each Cell's convolution primitive is made once.
CONSTANT_WEIGHTS = """
import contextlib, json, sys
import numpy as np
from pix2pix.backend import fastpath
fastpath.enable()
import mindspore as ms
from mindspore import nn
ms.set_device("CPU")
ms.set_context(mode=ms.GRAPH_MODE)
rng = np.random.default_rng(0)
x = ms.Tensor(rng.normal(size=(1, 32, 16, 16)).astype(np.float32))
weight = rng.normal(0, 0.05, (32, 32, 4, 4)).astype(np.float32)
outputs = {}
for kind in ("constant", "plain"):
    conv = nn.Conv2d(32, 32, 4, stride=2, pad_mode="pad", padding=1, weight_init=ms.Tensor(weight))
    with fastpath.constant_weights() if kind == "constant" else contextlib.nullcontext():
        first = conv(x).asnumpy()
        conv.weight.set_data(ms.Tensor(2 * weight))
        outputs[kind] = (first, conv(x).asnumpy())
    if kind == "constant":
        kernels = fastpath.conv_kernels()["forward"]
np.savez(sys.argv[1], **{f"{k}_{i}": v for k, pair in outputs.items() for i, v in enumerate(pair)})
print(json.dumps(kernels))
"""


@pytest.mark.skipif(not CAN_BUILD, reason=NEEDS_BUILD)
@pytest.mark.parametrize("cap", [None, "AVX2"], ids=["own-isa", "avx2-cap"])
def test_constant_weights_are_reordered_once_and_run_blocked_at_any_size(tmp_path, cap):
    """What Inference's copy relies on: under constant_weights a convolution computes the same values, runs
    blocked even with few outputs, and takes its weights at its first run only; so only a network whose
    weights never change may use it. Outside it, the changed weight is seen."""
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "LD_PRELOAD")}
    env.update(GLOG_v="3", **({"ONEDNN_MAX_CPU_ISA": cap} if cap else {}))
    out = tmp_path / "outputs.npz"
    done = subprocess.run(
        [sys.executable, "-c", CONSTANT_WEIGHTS, str(out)], env=env, capture_output=True, text=True, check=True
    )
    kernels = json.loads(done.stdout.strip().splitlines()[-1])
    assert fastpath.kernel_names(kernels) == [f"jit:{(cap or BLOCKED_ISA).lower()}"]  # blocked at 8x8 outputs
    got = np.load(out)
    np.testing.assert_allclose(got["constant_0"], got["plain_0"], rtol=0, atol=1e-5 * np.abs(got["plain_0"]).max())
    np.testing.assert_array_equal(got["constant_1"], got["constant_0"])  # the first weights, kept
    np.testing.assert_allclose(got["plain_1"], 2 * got["plain_0"], rtol=1e-5, atol=1e-6)
